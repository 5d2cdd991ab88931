"""Signed link tokens: purpose-bound, tamper-evident, expiring, and surviving key rotation."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from itsdangerous import BadSignature

from digestd.tokens import BadToken, ExpiredToken, Purpose, Tokens

OLD = "old-key-0123456789abcdef"
NEW = "new-key-0123456789abcdef"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_a_token_carries_the_opaque_id_only() -> None:
    tokens = Tokens([NEW])
    token = tokens.make(Purpose.UNSUBSCRIBE, "s3cr3t-public-id")
    assert tokens.read(Purpose.UNSUBSCRIBE, token) == "s3cr3t-public-id"
    assert "@" not in token


@pytest.mark.parametrize(
    "mangle",
    [
        # a signature character changed (not the last: its low bits are base64 padding)
        lambda t: t[:-5] + ("A" if t[-5] != "A" else "B") + t[-4:],
        lambda t: t.replace(".", ".x", 1),  # payload tampered
        lambda t: t[: len(t) // 2],  # truncated
        lambda t: "x" + t,  # garbage in front
        lambda t: "",
    ],
)
def test_tampered_or_truncated_tokens_are_refused(mangle: Callable[[str], str]) -> None:
    tokens = Tokens([NEW])
    token = tokens.make(Purpose.UNSUBSCRIBE, "id")
    with pytest.raises(BadToken):
        tokens.read(Purpose.UNSUBSCRIBE, mangle(token))


def _other_spelling_of_the_last_character(token: str) -> str:
    """The same signature bytes, its last character's two unused bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return token[:-1] + alphabet[alphabet.index(token[-1]) | 1]


@pytest.mark.parametrize(
    "alter",
    [
        lambda t: t + "!!!!",  # characters base64 does not have: itsdangerous skips them
        lambda t: t + "\u00e9\u00e9",  # non-ASCII: dropped by its decoder
        lambda t: t + "=",
        lambda t: t + "==",
        lambda t: t + '">',
        _other_spelling_of_the_last_character,
    ],
)
def test_a_token_altered_where_its_signature_would_not_see_it_is_refused(
    alter: Callable[[str], str],
) -> None:
    """Each is the same signature to itsdangerous, which decodes leniently: a link is one
    spelling of its token, and anything else is an altered link (400, nothing done)."""
    tokens = Tokens([NEW])
    for purpose, payload in ((Purpose.UNSUBSCRIBE, "id"), (Purpose.CONFIRM, ["id", "ai"] * 40)):
        token = tokens.make(purpose, payload)
        assert tokens.read(purpose, token) == "id"
        altered = alter(token)
        assert altered != token
        tokens.serializer(f"digestd.{purpose}").loads(altered)  # what it lets through
        with pytest.raises(BadToken):
            tokens.read(purpose, altered)


def test_a_token_for_one_purpose_is_refused_for_another() -> None:
    tokens = Tokens([NEW])
    confirm = tokens.make(Purpose.CONFIRM, "id")
    with pytest.raises(BadToken):
        tokens.read(Purpose.UNSUBSCRIBE, confirm)


def test_confirm_links_expire_after_seven_days_unsubscribe_after_thirty_still_work() -> None:
    tokens = Tokens([NEW])
    with time_machine.travel(T0, tick=False):
        confirm = tokens.make(Purpose.CONFIRM, "id")
        unsubscribe = tokens.make(Purpose.UNSUBSCRIBE, "id")
    with time_machine.travel(T0 + timedelta(days=6, hours=23), tick=False):
        assert tokens.read(Purpose.CONFIRM, confirm) == "id"
    with time_machine.travel(T0 + timedelta(days=7, seconds=1), tick=False):
        with pytest.raises(ExpiredToken) as caught:
            tokens.read(Purpose.CONFIRM, confirm)
        assert caught.value.payload == "id"  # lets a page offer a fresh link
    with time_machine.travel(T0 + timedelta(days=90), tick=False):
        assert tokens.read(Purpose.UNSUBSCRIBE, unsubscribe) == "id"


def test_after_rotation_old_links_work_and_new_ones_use_the_new_key() -> None:
    before = Tokens([OLD])
    old_link = before.make(Purpose.PREFERENCES, "id")
    after = Tokens([NEW, OLD])  # newest first, as in DIGESTD_SECRET_KEYS
    assert after.read(Purpose.PREFERENCES, old_link) == "id"
    new_link = after.make(Purpose.PREFERENCES, "id")
    assert Tokens([NEW]).read(Purpose.PREFERENCES, new_link) == "id"
    with pytest.raises(BadToken):
        Tokens([OLD]).read(Purpose.PREFERENCES, new_link)
    # dropping the old key finally retires its links
    with pytest.raises(BadToken):
        Tokens([NEW]).read(Purpose.PREFERENCES, old_link)


def test_bounce_tags_round_trip_and_refuse_forgeries() -> None:
    tokens = Tokens([NEW])
    tag = tokens.bounce_tag(12345)
    assert tokens.read_bounce_tag(tag) == 12345
    assert len(f"bounces+{tag}") <= 64  # fits an SMTP local part
    with pytest.raises(BadToken):
        tokens.read_bounce_tag("12346." + tag.split(".", 1)[1])


def test_a_confirmation_token_carries_its_fields_and_when_it_was_made() -> None:
    tokens = Tokens([NEW])
    fields = ["public-id", "s", "ai,robotics", "daily", "Europe/Paris", "signup-v1", "link"]
    with time_machine.travel(T0, tick=False):
        token = tokens.make(Purpose.CONFIRM, fields)
        signed = tokens.read_signed(Purpose.CONFIRM, token)
        assert tokens.read(Purpose.CONFIRM, token) == "public-id"
    assert signed.fields == tuple(fields) and signed.public_id == "public-id"
    assert signed.issued_at == T0
    with (
        time_machine.travel(T0 + timedelta(days=8), tick=False),
        pytest.raises(ExpiredToken) as caught,
    ):
        tokens.read_signed(Purpose.CONFIRM, token)
    assert caught.value.payload == "public-id" and caught.value.fields == tuple(fields)


def test_preferences_links_last_sixty_days_unsubscribe_links_far_longer() -> None:
    tokens = Tokens([NEW])
    with time_machine.travel(T0, tick=False):
        preferences = tokens.make(Purpose.PREFERENCES, "id")
        unsubscribe = tokens.make(Purpose.UNSUBSCRIBE, "id")
    with time_machine.travel(T0 + timedelta(days=59, hours=23), tick=False):
        assert tokens.read(Purpose.PREFERENCES, preferences) == "id"
    with time_machine.travel(T0 + timedelta(days=60, seconds=1), tick=False):
        with pytest.raises(ExpiredToken):
            tokens.read(Purpose.PREFERENCES, preferences)
        assert tokens.read(Purpose.UNSUBSCRIBE, unsubscribe) == "id"


def test_every_serializer_signs_with_the_newest_key_and_keeps_its_salt_apart() -> None:
    rotated = Tokens([NEW, OLD])
    signed = rotated.serializer("digestd.csrf").dumps(["nonce", "form", "-"])
    assert Tokens([NEW]).serializer("digestd.csrf").loads(signed) == ["nonce", "form", "-"]
    with pytest.raises(BadSignature):
        Tokens([OLD]).serializer("digestd.csrf").loads(signed)
    with pytest.raises(BadSignature):
        rotated.serializer("digestd.admin-session").loads(signed)
    old = Tokens([OLD]).serializer("digestd.admin-session").dumps({"t": "x"})
    assert rotated.serializer("digestd.admin-session").loads(old) == {"t": "x"}


def test_message_id_tags_are_stable_per_delivery_unguessable_and_survive_rotation() -> None:
    tokens = Tokens([OLD])
    tag = tokens.message_tag(41)
    assert tag == Tokens([OLD]).message_tag(41)  # a repeat after a crash: the same Message-ID
    assert len(tag) == 16 and tag != tokens.message_tag(42)
    assert Tokens([NEW]).message_tag(41) != tag  # only the key holder can make them
    assert Tokens([NEW, OLD]).is_message_tag(41, tag)
    assert not Tokens([NEW]).is_message_tag(41, tag)
    assert not tokens.is_message_tag(42, tag)


def test_unsubscribe_address_tags_fit_a_local_part_round_trip_and_survive_rotation() -> None:
    old = Tokens(["old-key-0123456789abcdef"])
    public_id = secrets.token_urlsafe(16)
    tag = old.mailto_tag(public_id)
    assert len(f"unsubscribe+{tag}") <= 64  # RFC 5321 §4.5.3.1.1
    assert len(f"unsubscribe+{old.mailto_tag('x' * 32)}") <= 64  # the longest public id
    assert re.fullmatch(r"[\w-]+\.[\w-]{16}", tag)
    assert old.read_mailto_tag(tag) == public_id
    rotated = Tokens(["new-key-0123456789abcdef", "old-key-0123456789abcdef"])
    assert rotated.read_mailto_tag(tag) == public_id
    assert rotated.mailto_tag(public_id) != tag  # the newest key signs
    for forged in (
        f"{public_id}.AAAAAAAAAAAAAAAA",
        f"other{tag}",
        tag[:-1],
        public_id,
        f".{tag.rpartition('.')[2]}",
        old.bounce_tag(1),  # another purpose's token
    ):
        with pytest.raises(BadToken):
            old.read_mailto_tag(forged)
    with pytest.raises(BadToken):
        Tokens(["another-key-0123456789abcdef"]).read_mailto_tag(tag)
