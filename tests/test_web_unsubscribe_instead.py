"""The unsubscribe page's offers beside its button: the weekly recap instead, a pause, fewer
topics. Each means less mail only, acts on a POST with the page's CSRF token, and leaves
the RFC 8058 one-click POST as it was."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import time_machine

from digestd.models import SubscriberStatus
from tests.conftest import WebRig
from tests.web_helpers import csrf_of, links_in, signup_form, text_of

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)  # Sunday; 10:00 in Paris


def _reader(web: WebRig, email: str = "ann@example.com", **fields: Any) -> str:
    signup_form(web, email, **fields)
    links = links_in(web.smtp.messages[-1].data)
    assert web.client.get(links["confirm"]).status_code == 200
    return links["unsubscribe"]


def _stored(web: WebRig, email: str = "ann@example.com") -> tuple[object, ...]:
    reader = web.subscriber(email)
    assert reader is not None
    return (
        reader.status,
        reader.category_slugs,
        reader.wants_daily,
        reader.wants_weekly,
        reader.paused_until,
        reader.next_daily_at,
        reader.next_weekly_at,
    )


def _offer(web: WebRig, url: str, offer: str, **fields: Any) -> Any:
    token = csrf_of(web.client.get(url).text)
    return web.client.post(f"{url}/instead", data={"csrf": token, "offer": offer, **fields})


def test_the_page_offers_less_mail_beside_its_one_button_and_changes_nothing(
    web: WebRig,
) -> None:
    url = _reader(web)
    before = _stored(web)
    page = web.client.get(url)
    words = text_of(page.text)
    for offer in ("Weekly recap instead", "Pause for a while", "Fewer topics"):
        assert offer in words
    assert words.index("Unsubscribe") < words.index("Or get less email")
    assert 'name="keep" value="ai" checked' in page.text
    assert 'name="keep" value="robotics" checked' in page.text
    assert _stored(web) == before


def test_a_weekly_reader_of_one_topic_is_offered_a_pause_only(web: WebRig) -> None:
    url = _reader(web, categories=["ai"], frequency="weekly")
    words = text_of(web.client.get(url).text)
    assert "Pause for a while" in words
    assert "Weekly recap instead" not in words and "Fewer topics" not in words


def test_weekly_instead_drops_the_daily(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        url = _reader(web)
        answer = _offer(web, url, "weekly")
    assert answer.status_code == 200
    assert "You'll get the weekly recap, covering AI and Robotics." in text_of(answer.text)
    assert "the weekly recap, Sunday 6 December, 08:00 Europe/Paris" in text_of(answer.text)
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.status == SubscriberStatus.ACTIVE
    assert (reader.wants_daily, reader.wants_weekly) == (False, True)
    assert reader.next_daily_at is None
    assert reader.next_weekly_at == datetime(2026, 12, 6, 7, 0, tzinfo=UTC)


def test_a_pause_for_a_while(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        url = _reader(web)
        answer = _offer(web, url, "pause", pause_for="2w")
    assert "No digests until Sunday 13 December" in text_of(answer.text)
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.status == SubscriberStatus.PAUSED
    assert reader.paused_until == datetime(2026, 12, 12, 23, 0, tzinfo=UTC)


def test_a_pause_from_this_link_never_ends_one_sooner(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        url = _reader(web)
        _offer(web, url, "pause", pause_for="4w")
        _offer(web, url, "pause", pause_for="1w")  # would bring digests back sooner
        reader = web.subscriber("ann@example.com")
        assert reader is not None
        assert reader.paused_until == datetime(2026, 12, 26, 23, 0, tzinfo=UTC)
        _offer(web, url, "pause", pause_for="2w")
        assert _stored(web)[4] == datetime(2026, 12, 26, 23, 0, tzinfo=UTC)


def test_a_paused_reader_is_told_until_when_and_offered_only_a_longer_pause(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False):
        url = _reader(web)
        _offer(web, url, "pause", pause_for="1w")
        page = web.client.get(url).text
    words = text_of(page)
    assert (
        "Your digests are already paused until Sunday 6 December: they start again by "
        "themselves that day." in words
    )
    assert "Pause for longer" in words and "Pause for a while" not in words
    assert 'name="pause_for" value="1w"' not in page  # it would end no later
    assert re.findall(r'name="pause_for" value="(\w+)"( checked)?', page) == [
        ("2w", " checked"),
        ("4w", ""),
    ]


def test_fewer_topics(web: WebRig) -> None:
    url = _reader(web)
    answer = _offer(web, url, "topics", keep=["robotics"])
    assert answer.status_code == 200 and "covering Robotics" in text_of(answer.text)
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.category_slugs == ["robotics"]
    assert reader.status == SubscriberStatus.ACTIVE


def test_fewer_topics_with_every_topic_kept_says_nothing_changed(web: WebRig) -> None:
    url = _reader(web)
    before = _stored(web)
    answer = _offer(web, url, "topics", keep=["ai", "robotics"])
    words = text_of(answer.text)
    assert answer.status_code == 200 and "Nothing changed" in words
    assert "Fewer topics" not in words
    assert "You kept every topic ticked, so your topics stay as they are." in words
    assert "covering AI and Robotics" in words
    assert _stored(web) == before


@pytest.mark.parametrize(
    ("offer", "fields", "field"),
    [
        ("topics", {}, "keep"),  # none kept: that is unsubscribing, the button beside
        ("topics", {"keep": ["ai", "quantum"]}, "keep"),  # never a topic they lack
        ("topics", {"keep": ["x" * 100]}, "keep"),
        ("pause", {"pause_for": "date"}, "pause_for"),  # weeks only here
        ("pause", {"pause_for": "52w"}, "pause_for"),
        ("daily", {}, "offer"),  # never more mail
    ],
)
def test_offers_that_are_not_less_mail_are_refused_by_their_field(
    web: WebRig, offer: str, fields: dict[str, Any], field: str
) -> None:
    url = _reader(web)
    before = _stored(web)
    answer = _offer(web, url, offer, **fields)
    assert answer.status_code == 400
    assert 'role="alert"' in answer.text
    if field != "offer":
        assert f'<p class="field-error" id="{field}-error">' in answer.text
    assert _stored(web) == before


def test_forged_links_and_missing_tokens_change_nothing(web: WebRig) -> None:
    url = _reader(web)
    bob = _reader(web, "bob@example.com")
    before = _stored(web)
    token = csrf_of(web.client.get(url).text)
    bobs_token = csrf_of(web.client.get(bob).text)
    form = {"csrf": token, "offer": "weekly"}
    assert web.client.post(f"{url[:-4]}AAAA/instead", data=form).status_code == 400
    assert web.client.post(f"{url}/instead", data={"offer": "weekly"}).status_code == 403
    other = {"csrf": bobs_token, "offer": "weekly"}
    assert web.client.post(f"{url}/instead", data=other).status_code == 403
    assert _stored(web) == before


def test_one_click_still_needs_no_cookie_after_the_page_set_one(web: WebRig) -> None:
    url = _reader(web)
    web.client.cookies.clear()
    page = web.client.get(url)
    assert "digestd_csrf" in page.headers.get("set-cookie", "")
    with httpx.Client(
        transport=web.client._transport, base_url="https://digest.example.com"
    ) as bare:
        answer = bare.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 200
    assert "cookie" not in answer.request.headers and "set-cookie" not in answer.headers
    assert _stored(web)[0] == SubscriberStatus.UNSUBSCRIBED
