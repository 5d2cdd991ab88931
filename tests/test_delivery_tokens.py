"""The sending hot path's cheap tokens are real itsdangerous tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import time_machine
from hypothesis import given
from hypothesis import strategies as st

from digestd.tokens import BadToken, ExpiredToken, Mac, Purpose, Tokens


@given(
    key=st.binary(max_size=200),  # longer than a block (64 bytes) is hashed first
    prefix=st.binary(max_size=40),
    data=st.binary(max_size=300),
    digest=st.sampled_from(["sha1", "sha256"]),
)
def test_the_mac_is_the_hmac_modules(key: bytes, prefix: bytes, data: bytes, digest: str) -> None:
    """Every tag and signature already in readers' mailboxes must still verify."""
    mac = Mac(key, digest, prefix)
    assert mac.of(data) == hmac.new(key, prefix + data, digest).digest()
    assert mac.of(data) == mac.of(data)  # the begun hashes are copied, not used up


def test_message_ids_and_bounce_tags_are_what_they_were() -> None:
    """Computed as stop 31's code computed them (hmac objects): a report quoting a
    Message-ID sent before an upgrade still proves which delivery it is about."""
    key = "k" * 32
    tokens = Tokens([key])
    expected = hmac.new(key.encode(), b"digestd.message-id", hashlib.sha256)
    expected.update(b"4242")
    assert tokens.is_message_tag(4242, tokens.message_tag(4242))
    assert tokens.message_tag(4242) == base64.urlsafe_b64encode(expected.digest()[:12]).decode()
    assert tokens.read_bounce_tag(tokens.bounce_tag(4242)) == 4242


@pytest.mark.parametrize(
    "purpose", [Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.VIEW, Purpose.MUTE]
)
def test_fast_tokens_are_read_by_the_itsdangerous_serializer(purpose: Purpose) -> None:
    tokens = Tokens(["new-key-0123456789abcdef", "old-key-0123456789abcdef"])
    make = tokens.fast_maker(purpose, clock=lambda: 1_790_000_000.5)
    for payload in ["Zx3_kq-9aB1cD2eF3gH4iJ", "pub/12345", "é-unicode"]:
        token = make(payload)
        with time_machine.travel(1_790_000_000.5, tick=False):
            assert tokens.read(purpose, token) == payload
            # what itsdangerous itself makes at the same second, byte for byte
            assert token == tokens.make(purpose, payload)
    # signed with the newest key: a reader that only knows the old key refuses it
    with pytest.raises(Exception, match="not valid"):
        Tokens(["old-key-0123456789abcdef"]).read(purpose, make("x"))


def test_fast_tokens_carry_their_timestamp_so_they_expire() -> None:
    tokens = Tokens(["key-0123456789abcdef"])
    old = tokens.fast_maker(Purpose.UNSUBSCRIBE, clock=lambda: 1_000_000_000)("someone")
    with pytest.raises(ExpiredToken):
        tokens.read(Purpose.UNSUBSCRIBE, old)


def test_a_fast_token_for_one_purpose_is_refused_for_another() -> None:
    tokens = Tokens(["key-0123456789abcdef"])
    token = tokens.fast_maker(Purpose.UNSUBSCRIBE)("someone")
    with pytest.raises(Exception, match="not valid"):
        tokens.read(Purpose.PREFERENCES, token)


def test_bounce_tags_round_trip_and_refuse_tampering() -> None:
    tokens = Tokens(["key-0123456789abcdef"])
    tag = tokens.bounce_tag(4242)
    assert tokens.read_bounce_tag(tag) == 4242
    assert tag == tokens._bounce.sign("4242").decode()
    with pytest.raises(Exception, match="not a bounce address"):
        tokens.read_bounce_tag(tag.replace("4242", "4243"))


def test_a_readers_bounce_tag_names_the_reader_and_never_a_delivery() -> None:
    tokens = Tokens(["key-0123456789abcdef"])
    tag = tokens.reader_bounce_tag("Zx9_-Qa")
    assert tag.startswith("rZx9_-Qa.")
    assert tokens.read_bounce_target(tag) == (None, "Zx9_-Qa")
    assert tokens.read_bounce_target(tokens.bounce_tag(77)) == (77, None)
    with pytest.raises(BadToken):
        tokens.read_bounce_tag(tag)  # a digest's delivery is never read from it
    with pytest.raises(BadToken):  # the signature covers the "r": no moving between kinds
        tokens.read_bounce_target("r" + tokens.bounce_tag(77))
    with pytest.raises(BadToken):
        Tokens(["another-key-0123456789"]).read_bounce_target(tag)
