"""Optional DKIM signing (dkimpy), configured by DIGESTD_DKIM_SELECTOR/_DOMAIN/_KEY_FILE.

``h=`` lists List-Unsubscribe and List-Unsubscribe-Post: RFC 8058 §4 requires one-click
unsubscribe headers to be covered by a valid signature, or Gmail and Yahoo ignore them.
Headers that may legitimately be added in transit (Received, Return-Path) are left out.
"""

from __future__ import annotations

import dkim as dkimpy

from digestd.config import DkimSettings
from digestd.errors import ConfigError

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)


class DkimSigner:
    def __init__(self, settings: DkimSettings) -> None:
        self.selector = settings.selector.encode("ascii")
        self.domain = settings.domain.encode("ascii")
        self.key = settings.private_key
        try:  # fail at start-up, not on the first message of an edition
            self.header(b"From: a@example.com\r\nTo: b@example.com\r\n\r\nprobe\r\n")
        except dkimpy.DKIMException as exc:
            raise ConfigError("DIGESTD_DKIM_KEY_FILE", f"cannot sign with this key: {exc}") from exc

    def header(self, message: bytes) -> bytes:
        """The ``DKIM-Signature:`` header (CRLF-terminated) to put in front of ``message``."""
        signature: bytes = dkimpy.sign(
            message,
            self.selector,
            self.domain,
            self.key,
            include_headers=list(SIGNED_HEADERS),
            canonicalize=(b"relaxed", b"simple"),
        )
        return signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def sign(self, message: bytes) -> bytes:
        return self.header(message) + message
