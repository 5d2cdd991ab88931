"""Muting a category from an email: each category in a digest carries the reader's signed
"mute" link; GET shows what it would do, POST (CSRF-protected) takes the category away, and
a reader's last category is never taken."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from digestd.models import SubscriberStatus
from digestd.readers.muting import Muting, mute, reader_to_change
from digestd.readers.subscribers import by_public_id, erase
from digestd.tokens import Purpose
from tests.conftest import ADMIN_TOKEN, WebRig
from tests.helpers import article, parse, parts
from tests.web_helpers import csrf_of, links_in, signup_form, text_of

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _daily(web: WebRig, email: str = "ann@example.com") -> bytes:
    """Ann follows AI and Robotics (Europe/Paris) and is sent the daily of 30 November."""
    sent_at = datetime(2026, 11, 29, 21, tzinfo=UTC)
    items = [
        article("ai-1", "ai", sent_at, score=5),
        article("robots-1", "robotics", sent_at, score=3),
    ]
    assert web.client.post("/api/articles", json=items, headers=ADMIN).status_code == 200
    with time_machine.travel(NOW, tick=False):
        signup_form(web, email)
        web.client.get(links_in(web.smtp.messages[-1].data)["confirm"])
    web.portal.call(web.service.tick, datetime(2026, 11, 30, 6, 0, tzinfo=UTC))
    return web.smtp.messages[-1].data


def _mute_links(digest: bytes) -> dict[str, str]:
    """Category name → path of its mute link, from the text part; the HTML has the same."""
    text, html = parts(parse(digest))
    found = dict(re.findall(r"Mute ([\w ]+):\r?\n(https://digest\.example\.com/mute/\S+)", text))
    for url in found.values():
        assert f'href="{url}"' in html
    return {name: url.removeprefix("https://digest.example.com") for name, url in found.items()}


def _categories(web: WebRig, email: str = "ann@example.com") -> list[str]:
    reader = web.subscriber(email)
    assert reader is not None
    return reader.category_slugs


def test_a_digest_carries_a_mute_link_per_category_and_get_changes_nothing(
    web: WebRig,
) -> None:
    mutes = _mute_links(_daily(web))
    assert set(mutes) == {"AI", "Robotics"}
    # one token for the reader, the category in each link
    assert mutes["AI"].replace("=ai", "=robotics") == mutes["Robotics"]
    for _ in range(2):  # a mail scanner, then the reader
        page = web.client.get(mutes["AI"])
        assert page.status_code == 200
        assert "Mute AI?" in text_of(page.text) and "keep getting Robotics" in text_of(page.text)
    assert web.client.head(mutes["AI"]).status_code == 200
    assert _categories(web) == ["ai", "robotics"]


def test_posting_the_form_mutes_that_category_once(web: WebRig) -> None:
    mutes = _mute_links(_daily(web))
    page = web.client.get(mutes["AI"])
    done = web.client.post(mutes["AI"], data={"csrf": csrf_of(page.text)})
    assert done.status_code == 200
    assert "AI is muted" in text_of(done.text)
    assert "now cover Robotics" in text_of(done.text)
    assert _categories(web) == ["robotics"]
    # A way on: the reader's preferences, where AI can be added back (it was a dead end).
    onward = re.search(r'href="(/preferences/[^"]+)"[^>]*>Manage preferences', done.text)
    assert onward is not None
    assert 'value="ai" class="cat">' in web.client.get(onward.group(1)).text
    # a second click changes nothing and says so
    again = web.client.post(mutes["AI"], data={"csrf": csrf_of(page.text)})
    assert again.status_code == 200 and "already" in text_of(again.text)
    assert "already" in text_of(web.client.get(mutes["AI"]).text)
    assert _categories(web) == ["robotics"]


def test_the_last_category_is_never_muted_and_unsubscribing_is_offered(web: WebRig) -> None:
    mutes = _mute_links(_daily(web))
    web.client.post(mutes["AI"], data={"csrf": csrf_of(web.client.get(mutes["AI"]).text)})
    page = web.client.get(mutes["Robotics"])
    assert page.status_code == 200
    words = text_of(page.text)
    assert "Robotics is your only topic" in words and 'name="csrf"' not in page.text
    unsubscribe = re.search(r'href="(/unsubscribe/[^"]+)"', page.text)
    assert unsubscribe is not None
    # the offered link is the reader's unsubscribe page (a button, not one click)
    assert "Unsubscribe?" in text_of(web.client.get(unsubscribe.group(1)).text)
    assert _categories(web) == ["robotics"]
    assert web.status("ann@example.com") == SubscriberStatus.ACTIVE


def test_posting_for_the_last_category_is_refused(web: WebRig) -> None:
    """Two mute pages opened side by side, both submitted: the second is refused."""
    mutes = _mute_links(_daily(web))
    ai_form = csrf_of(web.client.get(mutes["AI"]).text)
    robotics_form = csrf_of(web.client.get(mutes["Robotics"]).text)
    assert web.client.post(mutes["AI"], data={"csrf": ai_form}).status_code == 200
    refused = web.client.post(mutes["Robotics"], data={"csrf": robotics_form})
    assert refused.status_code == 409
    assert "only topic" in text_of(refused.text)
    assert _categories(web) == ["robotics"]


def test_the_count_is_checked_again_as_the_category_goes(web: WebRig) -> None:
    """Two mute links clicked at once, one per category of a reader who follows two: the
    one that read the reader before the other's change landed still leaves one."""
    _daily(web)
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    with web.service.sessions.begin() as session:
        # read as a request does that has not taken its lock yet (SQLite takes none)
        first = by_public_id(session, reader.public_id)
        assert first is not None and first.category_slugs == ["ai", "robotics"]
        # the other request, done meanwhile
        with web.service.sessions.begin() as other:
            second = reader_to_change(other, reader.public_id)
            assert second is not None
            assert mute(other, second, "ai") is Muting.MUTED
        assert first.category_slugs == ["ai", "robotics"]  # what this one read
        assert mute(session, first, "robotics") is Muting.LAST_ONE
    assert _categories(web) == ["robotics"]


def test_posting_needs_the_pages_csrf_token(web: WebRig) -> None:
    mutes = _mute_links(_daily(web))
    assert web.client.post(mutes["AI"], data={"csrf": ""}).status_code == 403
    assert web.client.post(mutes["AI"], data={"csrf": "forged"}).status_code == 403
    # the token of the AI page does not work for another category
    ai_form = csrf_of(web.client.get(mutes["AI"]).text)
    web.client.get(mutes["Robotics"])
    assert web.client.post(mutes["Robotics"], data={"csrf": ai_form}).status_code == 403
    assert _categories(web) == ["ai", "robotics"]


@pytest.mark.parametrize("kind", ["tampered", "unknown category", "no category", "other purpose"])
def test_bad_mute_links_are_refused_and_change_nothing(web: WebRig, kind: str) -> None:
    mutes = _mute_links(_daily(web))
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    token, _, query = mutes["AI"].removeprefix("/mute/").partition("?")
    assert query == "category=ai"
    path = {
        "tampered": f"/mute/{token[:-3]}xyz?{query}",
        "unknown category": f"/mute/{token}?category=gardening",
        "no category": f"/mute/{token}",
        "other purpose": f"/mute/{web.service.tokens.make(Purpose.UNSUBSCRIBE, reader.public_id)}"
        f"?{query}",
    }[kind]
    for answer in (web.client.get(path), web.client.post(path, data={"csrf": "x"})):
        assert answer.status_code == 400, answer.text
        assert ("which topic" if "category" in kind else "not valid") in text_of(answer.text)
    assert _categories(web) == ["ai", "robotics"]


def test_an_old_link_still_mutes_and_a_deleted_reader_is_gone(web: WebRig) -> None:
    mutes = _mute_links(_daily(web))
    with time_machine.travel(datetime.now(UTC) + timedelta(days=500), tick=False):
        page = web.client.get(mutes["AI"])
        assert page.status_code == 200 and "Mute AI?" in text_of(page.text)
    with web.service.sessions.begin() as session:
        erase(session, "ann@example.com", NOW)
    assert web.client.get(mutes["AI"]).status_code == 410


def test_a_reader_who_left_has_nothing_to_mute(web: WebRig) -> None:
    digest = _daily(web)
    mutes = _mute_links(digest)
    unsubscribe = links_in(digest)["unsubscribe"]
    web.client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    page = web.client.get(mutes["AI"])
    assert page.status_code == 200 and "Nothing to mute" in text_of(page.text)
    assert 'name="csrf"' not in page.text
    assert _categories(web) == ["ai", "robotics"]
