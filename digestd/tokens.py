"""Signed tokens for links in emails (itsdangerous): one salt per purpose, rotatable keys.

A token carries an opaque subscriber id (``Subscriber.public_id``), never the address; a
confirmation link also carries what the signup asked for (its fields after the id), so
that nothing is stored before the link is followed. ``DIGESTD_SECRET_KEYS`` lists keys
newest first: the newest signs, all of them verify, so rotating a key does not break links
already in inboxes. :meth:`Tokens.serializer` is the one place a signing serializer is
made (links, CSRF tokens, the admin session).
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from itsdangerous import BadSignature, SignatureExpired, Signer, URLSafeTimedSerializer

from digestd.errors import DigestdError

_URLSAFE = bytes.maketrans(b"+/", b"-_")
# A link token as the serializer writes it: payload (a leading "." when compressed), stamp,
# and 20 bytes of HMAC-SHA1 in 27 characters, the last carrying 2 unused bits (zero).
# itsdangerous decodes leniently (it skips characters that are not base64 and ignores those
# bits), so without this one token could be spelt many ways.
_LINK_TOKEN = re.compile(r"\.?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{26}[AEIMQUYcgkosw048]")
# Characters whose JSON string is the characters themselves between quotes.
_PLAIN = re.compile(r"[A-Za-z0-9_./-]*")


# The public ids the links of a test send and of a preview carry (digestd.ops): no reader
# has one (a reader's is 22 random characters), so such a link can only explain itself.
SAMPLE_READERS = frozenset({"test", "preview"})


class Purpose(enum.StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    VIEW = "view"
    # A digest's "mute {Category}" links: the reader's public id; the category rides in
    # each link's query, so an email offering five categories costs one token, not five.
    MUTE = "mute"
    # The sunset's emails (readers.sunset): keep, weekly only, resume; the choice rides in
    # the link's query.
    ENGAGE = "engage"


# How long a link keeps working after the email that carried it. Unsubscribe must work
# for at least 30 days (SPEC §6; CAN-SPAM), and an authentic one is honoured even later.
# Preferences links can delete data and change settings, and get forwarded: 60 days, then
# the page offers to email a fresh one.
MAX_AGE: dict[Purpose, timedelta] = {
    Purpose.CONFIRM: timedelta(days=7),
    Purpose.UNSUBSCRIBE: timedelta(days=400),
    Purpose.PREFERENCES: timedelta(days=60),
    Purpose.VIEW: timedelta(days=400),
    # Muting a category only ever means less mail, like unsubscribing: as long-lived.
    Purpose.MUTE: timedelta(days=400),
    # Resuming means more mail again: as long as a preferences link.
    Purpose.ENGAGE: timedelta(days=60),
}
# Bytes of HMAC in a Message-ID's random part: 96 bits, not guessable from the delivery id.
_MESSAGE_TAG_BYTES = 12
# A digest's tracked links (``/c/{delivery}.{n}.{tag}``): 48 bits of MAC per link, cut from
# one keyed BLAKE2b (a MAC by design, RFC 7693 §2.9) per ten links of a message, so a
# 15-story weekly costs two calls to sign, not fifteen HMACs; guessing one tag takes
# ~2**47 requests.
CLICK_TAG_BYTES = 6
_CLICK_TAGS_PER_MAC = 10  # 60 bytes: 80 base64 characters, no padding
_CLICK_TOKEN = re.compile(r"([1-9][0-9]{0,17})\.([1-9][0-9]{0,3})\.([A-Za-z0-9_-]{8})")
# The same for the personal unsubscribe address: ``unsubscribe+<public id>.<16 chars>@``
# stays within the 64 octets RFC 5321 allows a local part.
_MAILTO_TAG_BYTES = 12


class BadToken(DigestdError):
    """Forged, truncated, or made for another purpose."""


class ExpiredToken(BadToken):
    def __init__(
        self, message: str, payload: str | None, fields: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(message)
        self.payload = payload  # signature was valid: lets a page offer a fresh link
        self.fields = fields or ((payload,) if payload is not None else None)


@dataclass(frozen=True)
class Signed:
    """A token read back: its fields (the subscriber's public id first) and when it was made."""

    fields: tuple[str, ...]
    issued_at: datetime

    @property
    def public_id(self) -> str:
        return self.fields[0]


def _fields(payload: object) -> tuple[str, ...] | None:
    if isinstance(payload, str):
        return (payload,)
    if isinstance(payload, list) and payload and all(isinstance(f, str) for f in payload):
        return tuple(payload)
    return None


class BounceTarget(NamedTuple):
    """What a VERP address names: a digest's delivery, or (other mail) the reader."""

    delivery_id: int | None
    public_id: str | None


def _b64(data: bytes) -> bytes:
    """``base64.urlsafe_b64encode``, without its two Python calls (the hot path's tags)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE)


class Mac:
    """HMAC (RFC 2104) under one key: ``of(data)`` is ``hmac.new(key, prefix + data,
    digest).digest()``. The padded key's two hashes are begun once, so a MAC is two
    copies, two updates and two digests in C, without the Python calls an :mod:`hmac`
    object wraps around them (the sending hot path makes seven MACs a message)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, digest: str, prefix: bytes = b"") -> None:
        block = hashlib.new(digest).block_size
        if len(key) > block:
            key = hashlib.new(digest, key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.new(digest, key.translate(hmac.trans_36) + prefix)
        self._outer = hashlib.new(digest, key.translate(hmac.trans_5C))

    def of(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class Tokens:
    def __init__(self, secret_keys: Sequence[str], max_age: dict[Purpose, timedelta] | None = None):
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        # itsdangerous signs with the *last* key of the list and verifies with all.
        self._keys = list(reversed(secret_keys))
        self._max_age = {**MAX_AGE, **(max_age or {})}
        self._serializers = {purpose: self.serializer(f"digestd.{purpose}") for purpose in Purpose}
        self._bounce = Signer(self._keys, salt="digestd.bounce")
        # The same as self._bounce.sign, with the key derived once (a tag per message).
        bounce_key = hashlib.sha1(b"digestd.bounce" + b"signer" + self._keys[-1].encode()).digest()
        self._bounce_mac = Mac(bounce_key, "sha1")
        # Every key, newest first, for the Message-ID tag (the newest makes, all verify).
        self._message_macs = [
            Mac(key.encode(), "sha256", b"digestd.message-id") for key in secret_keys
        ]
        # One BLAKE2b key per secret, newest first (the newest makes, all verify).
        self._click_keys = [
            hmac.new(key.encode(), b"digestd.click", hashlib.sha512).digest() for key in secret_keys
        ]
        self._mailto_macs = [
            Mac(key.encode(), "sha256", b"digestd.unsubscribe.mailto") for key in secret_keys
        ]

    def serializer(self, salt: str) -> URLSafeTimedSerializer:
        """A timed serializer for ``salt`` that signs with the newest key and verifies with
        all of them (itsdangerous signs with the *last* key of the list it is given)."""
        return URLSafeTimedSerializer(self._keys, salt=salt)

    def make(self, purpose: Purpose, payload: str | Sequence[str]) -> str:
        """``payload``: the public id, or fields with the public id first."""
        data = payload if isinstance(payload, str) else list(payload)
        return str(self._serializers[purpose].dumps(data))

    def fast_maker(
        self, purpose: Purpose, clock: Callable[[], float] = time.time
    ) -> Callable[[str], str]:
        """``make`` for the sending hot path: the same tokens, about ten times cheaper
        (:meth:`fast_byte_maker`, as text)."""
        make = self.fast_byte_maker(purpose, clock)

        def as_text(payload: str) -> str:
            return make(payload).decode("ascii")

        return as_text

    def fast_byte_maker(
        self, purpose: Purpose, clock: Callable[[], float] = time.time
    ) -> Callable[[str], bytes]:
        """``make`` for the sending hot path, the token as ASCII bytes.

        itsdangerous derives the key and builds a new HMAC for every ``dumps``; sending
        100 000 digests makes four links each. This builds exactly what
        ``URLSafeTimedSerializer.dumps`` builds (django-concat key derivation, HMAC-SHA1,
        compact JSON, unpadded URL-safe base64, big-endian timestamp), with the key derived
        once; ``tests/test_delivery_tokens.py`` checks the serializer reads them back.
        """
        salt = f"digestd.{purpose}".encode()
        key = hashlib.sha1(salt + b"signer" + self._keys[-1].encode()).digest()
        mac = Mac(key, "sha1")
        stamp_cache: list[object] = [None, b""]

        def make(payload: str) -> bytes:
            now = int(clock())
            if stamp_cache[0] != now:
                stamp_cache[0] = now
                stamp_cache[1] = _b64(now.to_bytes(8, "big").lstrip(b"\x00")).rstrip(b"=")
            # Never compressed: itsdangerous only compresses when it saves bytes, which short
            # random ids never do, and reads an uncompressed payload either way.
            if _PLAIN.fullmatch(payload):  # a public id: its JSON is itself in quotes
                raw = b'"' + payload.encode("ascii") + b'"'
            else:
                raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
            value = _b64(raw).rstrip(b"=") + b"." + stamp_cache[1]  # type: ignore[operator]
            return value + b"." + _b64(mac.of(value)).rstrip(b"=")

        return make

    def read(self, purpose: Purpose, token: str) -> str:
        """The public id a token carries (its first field)."""
        return self.read_signed(purpose, token).public_id

    def read_signed(self, purpose: Purpose, token: str) -> Signed:
        if not _LINK_TOKEN.fullmatch(token):  # cut, or altered where the MAC would not see it
            raise BadToken("this link is not valid (it may be incomplete)")
        serializer = self._serializers[purpose]
        max_age = int(self._max_age[purpose].total_seconds())
        try:
            payload, issued = serializer.loads(token, max_age=max_age, return_timestamp=True)
        except SignatureExpired as exc:
            raw = serializer.load_payload(exc.payload) if exc.payload is not None else None
            fields = _fields(raw)
            raise ExpiredToken(
                "this link has expired", fields[0] if fields else None, fields
            ) from exc
        except BadSignature as exc:
            raise BadToken("this link is not valid (it may be incomplete)") from exc
        fields = _fields(payload)
        if fields is None:
            raise BadToken("this link is not valid")
        return Signed(fields, issued.astimezone(UTC))

    def bounce_tag(self, delivery_id: int) -> str:
        """``<id>.<signature>``: the VERP part of the envelope sender (fits a local part)."""
        return self._signed_tag(str(delivery_id))

    def reader_bounce_tag(self, public_id: str) -> str:
        """``r<public id>.<signature>``: the VERP part for mail to a reader that is no digest
        (a confirmation, welcome or sunset email): its bounce names the reader. Their public
        id, never handed out again, not the row id, which SQLite gives the next signup after
        an erasure: a late bounce would suppress that other reader."""
        return self._signed_tag(f"r{public_id}")

    def _signed_tag(self, value: str) -> str:
        signature = _b64(self._bounce_mac.of(value.encode())).rstrip(b"=")
        return f"{value}.{signature.decode('ascii')}"

    def read_bounce_tag(self, tag: str) -> int:
        """The delivery id of a tag :meth:`bounce_tag` made."""
        target = self.read_bounce_target(tag)
        if target.delivery_id is None:
            raise BadToken("not a digest's bounce address")
        return target.delivery_id

    def read_bounce_target(self, tag: str) -> BounceTarget:
        """Whom a tag of :meth:`bounce_tag` or :meth:`reader_bounce_tag` names."""
        try:
            value = self._bounce.unsign(tag).decode("ascii")
            if value.startswith("r") and len(value) > 1:
                return BounceTarget(None, value[1:])
            if not (value.isascii() and value.isdigit()):
                raise ValueError(value)
            return BounceTarget(int(value), None)
        except (BadSignature, ValueError) as exc:
            raise BadToken("not a bounce address digestd made") from exc

    def mailto_tag(self, public_id: str) -> str:
        """``<public id>.<signature>``: the local part's tail of a reader's own unsubscribe
        address (``unsubscribe+TAG@domain``), an unsubscribe-scope token short enough for a
        local part. It does not expire: an authentic unsubscribe is always honoured."""
        return f"{public_id}.{self._mailto_signature(self._mailto_macs[0], public_id)}"

    def read_mailto_tag(self, tag: str) -> str:
        """The public id of a tag :meth:`mailto_tag` made (under any configured key)."""
        public_id, _, signature = tag.rpartition(".")
        if public_id and any(
            hmac.compare_digest(self._mailto_signature(mac, public_id), signature)
            for mac in self._mailto_macs
        ):
            return public_id
        raise BadToken("not an unsubscribe address digestd made")

    @staticmethod
    def _mailto_signature(mac: Mac, public_id: str) -> str:
        digest = mac.of(public_id.encode())[:_MAILTO_TAG_BYTES]
        return _b64(digest).decode("ascii")

    def message_tag(self, delivery_id: int) -> str:
        """The random-looking part of a delivery's Message-ID: an HMAC of its id, so the same
        delivery always gets the same Message-ID, yet nobody can guess another's."""
        return self._message_tag(self._message_macs[0], delivery_id)

    def is_message_tag(self, delivery_id: int, tag: str) -> bool:
        return any(
            hmac.compare_digest(self._message_tag(mac, delivery_id), tag)
            for mac in self._message_macs
        )

    @staticmethod
    def _message_tag(mac: Mac, delivery_id: int) -> str:
        digest = mac.of(b"%d" % delivery_id)[:_MESSAGE_TAG_BYTES]
        return _b64(digest).decode("ascii")

    def click_tags(self, delivery_id: int, count: int) -> list[str]:
        """The tags of links 1 to ``count`` of a delivery's email (:meth:`read_click`)."""
        tags = self.click_tag_bytes(delivery_id, count).decode("ascii")
        return [tags[i : i + 8] for i in range(0, 8 * count, 8)]

    def click_tag_bytes(self, delivery_id: int, count: int) -> bytes:
        """:meth:`click_tags` run together, 8 characters a link: what composing uses."""
        key = self._click_keys[0]
        if count <= _CLICK_TAGS_PER_MAC:  # a daily: one hash
            return self._click_block(key, delivery_id, 0)[: 8 * count]
        blocks = (count + _CLICK_TAGS_PER_MAC - 1) // _CLICK_TAGS_PER_MAC
        tags = b"".join([self._click_block(key, delivery_id, b) for b in range(blocks)])
        return tags[: 8 * count]

    def read_click(self, token: str) -> tuple[int, int]:
        """(delivery id, link number) of a tracked link's token; :class:`BadToken` for one
        that is forged, truncated, altered or made for another purpose."""
        match = _CLICK_TOKEN.fullmatch(token)
        if match is None:
            raise BadToken("this link is not valid (it may be incomplete)")
        delivery_id, number, tag = int(match[1]), int(match[2]), match[3]
        block, index = divmod(number - 1, _CLICK_TAGS_PER_MAC)
        for key in self._click_keys:
            text = self._click_block(key, delivery_id, block)
            if hmac.compare_digest(text[index * 8 : index * 8 + 8], tag.encode("ascii")):
                return delivery_id, number
        raise BadToken("this link is not valid")

    @staticmethod
    def _click_block(key: bytes, delivery_id: int, block: int) -> bytes:
        raw = hashlib.blake2b(
            b"%d:%d" % (delivery_id, block),
            key=key,
            digest_size=CLICK_TAG_BYTES * _CLICK_TAGS_PER_MAC,
        ).digest()
        return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE)
