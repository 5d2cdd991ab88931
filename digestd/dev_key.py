"""The development signing key: generated on the first start without DIGESTD_SECRET_KEYS and
kept in ``DATA_DIR/secret.key`` so emailed links survive restarts."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from digestd.errors import ConfigError

PREFIX = "DIGESTD_"


def dev_secret(data_dir: Path) -> str:
    """A per-installation key kept under ``var/`` so links survive restarts in development.

    Written to a private temporary file (0600 from its first byte) and then hard-linked into
    place, which fails if the name exists: of two first starts racing, one key wins, both
    use it, and no reader ever sees a half-written file.
    """
    path = data_dir / "secret.key"
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
