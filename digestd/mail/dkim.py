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


MIN_BITS = 1024  # RFC 8301: verifiers ignore signatures made with shorter RSA keys


def key_bits(private_pem: bytes) -> int:
    """The size of an RSA private key in PEM (PKCS#1 or PKCS#8); a ConfigError naming
    DIGESTD_DKIM_KEY_FILE for anything dkimpy cannot sign with (damaged, not RSA)."""
    from dkim.crypto import UnparsableKeyError, parse_pem_private_key

    try:
        return int(parse_pem_private_key(private_pem)["modulus"]).bit_length()
    except (UnparsableKeyError, ValueError, IndexError, KeyError, TypeError) as exc:
        problem = " ".join(str(exc).split())[:160]  # the library's reason, on one line
        raise ConfigError("DIGESTD_DKIM_KEY_FILE", f"not an RSA private key ({problem})") from exc


def too_short(bits: int) -> str:
    return (
        f"a {bits}-bit key: receivers ignore DKIM signatures made with fewer than "
        f"{MIN_BITS} bits (RFC 8301); use a 2048-bit key"
    )


class DkimSigner:
    def __init__(self, settings: DkimSettings) -> None:
        self.selector = settings.selector.encode("ascii")
        self.domain = settings.domain.encode("ascii")
        self.key = settings.private_key
        bits = key_bits(self.key)  # fail at start-up, not on the first message of an edition
        if bits < MIN_BITS:
            raise ConfigError("DIGESTD_DKIM_KEY_FILE", too_short(bits))
        try:
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
