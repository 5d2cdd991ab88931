"""Signed tokens for links in emails (itsdangerous): one salt per purpose, rotatable keys.

A token carries only an opaque subscriber id (``Subscriber.public_id``), never the address.
``DIGESTD_SECRET_KEYS`` lists keys newest first: the newest signs, all of them verify, so
rotating a key does not break links already in inboxes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import timedelta

from itsdangerous import BadSignature, SignatureExpired, Signer, URLSafeTimedSerializer

from digestd.errors import DigestdError


class Purpose(enum.StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    VIEW = "view"


# How long a link keeps working after the email that carried it. Unsubscribe must work
# for at least 30 days (SPEC §6; CAN-SPAM); we keep it, and preferences, far longer.
MAX_AGE: dict[Purpose, timedelta] = {
    Purpose.CONFIRM: timedelta(days=7),
    Purpose.UNSUBSCRIBE: timedelta(days=400),
    Purpose.PREFERENCES: timedelta(days=400),
    Purpose.VIEW: timedelta(days=400),
}


class BadToken(DigestdError):
    """Forged, truncated, or made for another purpose."""


class ExpiredToken(BadToken):
    def __init__(self, message: str, payload: str | None) -> None:
        super().__init__(message)
        self.payload = payload  # signature was valid: lets a page offer a fresh link


class Tokens:
    def __init__(self, secret_keys: Sequence[str], max_age: dict[Purpose, timedelta] | None = None):
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        # itsdangerous signs with the *last* key of the list and verifies with all.
        self._keys = list(reversed(secret_keys))
        self._max_age = {**MAX_AGE, **(max_age or {})}
        self._serializers = {
            purpose: URLSafeTimedSerializer(self._keys, salt=f"digestd.{purpose}")
            for purpose in Purpose
        }
        self._bounce = Signer(self._keys, salt="digestd.bounce")

    def make(self, purpose: Purpose, payload: str) -> str:
        return str(self._serializers[purpose].dumps(payload))

    def read(self, purpose: Purpose, token: str) -> str:
        serializer = self._serializers[purpose]
        max_age = int(self._max_age[purpose].total_seconds())
        try:
            payload = serializer.loads(token, max_age=max_age)
        except SignatureExpired as exc:
            raw = serializer.load_payload(exc.payload) if exc.payload is not None else None
            raise ExpiredToken(
                "this link has expired", raw if isinstance(raw, str) else None
            ) from exc
        except BadSignature as exc:
            raise BadToken("this link is not valid (it may be incomplete)") from exc
        if not isinstance(payload, str):
            raise BadToken("this link is not valid")
        return payload

    def bounce_tag(self, delivery_id: int) -> str:
        """``<id>.<signature>``: the VERP part of the envelope sender (fits a local part)."""
        return self._bounce.sign(str(delivery_id)).decode()

    def read_bounce_tag(self, tag: str) -> int:
        try:
            return int(self._bounce.unsign(tag))
        except (BadSignature, ValueError) as exc:
            raise BadToken("not a bounce address digestd made") from exc
