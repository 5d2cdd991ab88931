"""The development mail catcher: where mail goes when no ``DIGESTD_SMTP_URL`` is set."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path


class MailCatcher:
    """Development stand-in for an SMTP relay: each message becomes ``var/mail/*.eml``.

    A ``Return-Path`` and ``Delivered-To`` line are prepended, as a real MTA would, so the
    envelope can be seen in the file.
    """

    concurrency = 1  # writes files; more would not be faster
    name = "mail catcher"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._counter = itertools.count()

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{os.getpid()}-{next(self._counter):06d}.eml"
        envelope = f"Return-Path: <{envelope_from}>\r\nDelivered-To: {recipient}\r\n".encode()
        tmp = self.directory / (name + ".tmp")
        tmp.write_bytes(envelope + message)
        tmp.rename(self.directory / name)  # readers never see half a message
        return f"250 stored as {name}"

    async def close(self) -> None:
        return None
