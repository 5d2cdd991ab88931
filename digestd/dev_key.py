"""The development signing key: without DIGESTD_SECRET_KEYS, ``digestd migrate`` or ``run``
generates one and keeps it in ``DATA_DIR/secret.key`` so emailed links survive restarts.

Only those two commands write it. The commands that sign links (``tick``, ``preview``) read
it and refuse to start without it: a key made up for one run would send links no later
process can verify. The rest sign nothing and never look for it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from digestd.errors import ConfigError

PREFIX = "DIGESTD_"


def dev_secret(data_dir: Path, *, create: bool = True) -> str:
    """A per-installation key kept under ``var/`` so links survive restarts in development.

    Written to a private temporary file (0600 from its first byte) and then hard-linked into
    place, which fails if the name exists: of two first starts racing, one key wins, both
    use it, and no reader ever sees a half-written file. Without ``create``, a missing key
    is a :class:`ConfigError` telling the operator how to get one.
    """
    path = data_dir / "secret.key"
    if not create and not path.exists():
        raise ConfigError(
            PREFIX + "SECRET_KEYS",
            f"not set, and there is no development key in {path}: run digestd migrate "
            f"first (it makes one), or set {PREFIX}SECRET_KEYS",
        )
    try:
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            _publish_key(path, secrets.token_urlsafe(32))
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            PREFIX + "DATA_DIR", f"cannot keep the development key {path}: {problem}"
        ) from exc
    if len(key) < 16:
        raise ConfigError(
            PREFIX + "SECRET_KEYS",
            f"not set, and {path} holds no usable key: delete it, or set {PREFIX}SECRET_KEYS",
        )
    return key


def _publish_key(path: Path, key: str) -> None:
    """Create ``path`` holding ``key`` unless it exists; never overwrite (see dev_secret)."""
    fd, temporary = tempfile.mkstemp(prefix=".secret.key.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another first start won: its key is the key
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
