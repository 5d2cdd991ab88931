"""Signed link tokens: purpose-bound, tamper-evident, expiring, and surviving key rotation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

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
