"""Helpers for tests: running the CLI in-process with a given environment, article data."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from digestd.cli import main

SAMPLE_ARTICLE: dict[str, Any] = {
    "id": "meta-avocado-memo",
    "url": "https://the-decoder.com/meta-avocado-memo",
    "title": "Meta's Internal Memo Signals AI Comeback After Rocky Year",
    "source": "THE DECODER",
    "published_at": "2026-02-05T09:00:00Z",
    "categories": ["ai"],
    "kind": "news",
    "why_it_matters": "Avocado validates Meta's multibillion-dollar AI bet ...",
    "key_takeaways": ["Avocado completes pretraining ...", "Ten-times efficiency gain ..."],
    "companies": [{"name": "Meta", "ticker": "META"}, {"name": "Scale AI"}],
    "analysis": "Meta's AI roadmap suffered ...",
    "image_url": None,
    "score": 12.5,
}


def run_cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> int:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return main(list(args))


ROOT = Path(__file__).resolve().parent.parent


def run_digestd(
    env: dict[str, str], *args: str, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``digestd ARGS`` as its own process, as an operator runs it (stderr kept apart)."""
    return subprocess.run(
        [sys.executable, "-m", "digestd", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[bytes], code: int = 2) -> str:
    """The single stderr line of a command that refused its input (no traceback)."""
    err = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert result.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def article(
    article_id: str,
    category: str,
    published: datetime,
    *,
    score: float = 1.0,
    source: str = "Example Wire",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": article_id,
        "url": f"https://news.example.com/{article_id}",
        "title": f"Story {article_id}",
        "source": source,
        "published_at": published.isoformat(),
        "categories": [category] if isinstance(category, str) else category,
        "why_it_matters": f"Why {article_id} matters.",
        "key_takeaways": [f"First point about {article_id}", "Second point"],
        "companies": [{"name": "Acme", "ticker": "ACME"}],
        "score": score,
        **extra,
    }


def hours_before(moment: datetime, hours: float) -> datetime:
    return moment - timedelta(hours=hours)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) of a multipart/alternative digest."""
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None and html_part is not None
    return text_part.get_content(), html_part.get_content()


def free_port() -> int:
    """A loopback port nobody listens on right now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    """A ``digestd run`` of a test; ``log`` is what it wrote, once it has stopped."""

    process: subprocess.Popen[bytes]
    log: str = ""


@contextmanager
def daemon_taking_mail(env: dict[str, str], cwd: Path, timeout: float) -> Iterator[Daemon]:
    """``digestd run`` with ``env`` (``DIGESTD_INBOUND_LISTEN`` set), from the moment its
    LMTP listener is up; stopped by SIGTERM (within ``timeout``) at the end, killed if the
    block failed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "digestd", "run"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DIGESTD_")},
            **env,
            "DIGESTD_LISTEN": f"127.0.0.1:{free_port()}",
        },
        cwd=cwd,
        stderr=subprocess.PIPE,
    )
    daemon = Daemon(process)
    try:
        assert process.stderr is not None
        seen = [process.stderr.readline()]
        while b"by LMTP on 127.0.0.1" not in seen[-1]:
            assert seen[-1], b"".join(seen).decode()  # exited before listening
            seen.append(process.stderr.readline())
        yield daemon
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=timeout)
        daemon.log = (b"".join(seen) + rest).decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
