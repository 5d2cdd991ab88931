"""Unsubscribing (RFC 8058 one-click and the page) and the signed links' rules: tampering,
truncation, purpose, expiry and key rotation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.mail.composer import Links
from digestd.models import SubscriberStatus
from digestd.service import Service
from digestd.tokens import Purpose, Tokens
from digestd.web.app import create_app
from tests.conftest import TEST_KEY, WebRig
from tests.helpers import parse
from tests.web_helpers import csrf_of, links_in, signup_form, text_of

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def _active(web: WebRig, email: str = "ann@example.com") -> dict[str, str]:
    """Sign up and confirm; the links of the confirmation email."""
    signup_form(web, email)
    links = links_in(web.smtp.messages[-1].data)
    assert web.client.get(links["confirm"]).status_code == 200
    return links


def _status(web: WebRig, email: str = "ann@example.com") -> str:
    reader = web.subscriber(email)
    assert reader is not None
    return str(reader.status)


def test_one_click_urlencoded_without_cookies_unsubscribes(web: WebRig) -> None:
    links = _active(web)
    web.client.cookies.clear()
    answer = web.client.post(
        links["unsubscribe"],
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    assert "set-cookie" not in answer.headers
    assert "location" not in answer.headers
    assert _status(web) == SubscriberStatus.UNSUBSCRIBED
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.next_daily_at is None and reader.unsubscribed_at
    # idempotent
    again = web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert _status(web) == SubscriberStatus.UNSUBSCRIBED


def test_one_click_multipart_without_cookies_unsubscribes(web: WebRig) -> None:
    links = _active(web)
    web.client.cookies.clear()
    answer = web.client.post(links["unsubscribe"], files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.status_code == 200
    assert answer.request.headers["content-type"].startswith("multipart/form-data")
    assert "cookie" not in answer.request.headers
    assert _status(web) == SubscriberStatus.UNSUBSCRIBED


def test_get_on_the_unsubscribe_link_changes_nothing(web: WebRig) -> None:
    links = _active(web)
    for _ in range(3):  # a mail scanner, a preview, the reader
        page = web.client.get(links["unsubscribe"])
        assert page.status_code == 200
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert _status(web) == SubscriberStatus.ACTIVE
    head = web.client.head(links["unsubscribe"])
    assert head.status_code == 200
    assert _status(web) == SubscriberStatus.ACTIVE


def test_one_click_needs_the_rfc_8058_body(web: WebRig) -> None:
    links = _active(web)
    answer = web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "Yes"})
    assert answer.status_code == 400
    assert "List-Unsubscribe=One-Click" in text_of(answer.text)
    empty = web.client.post(links["unsubscribe"])
    assert empty.status_code == 415
    assert "Send a form" in text_of(empty.text)
    assert _status(web) == SubscriberStatus.ACTIVE


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-2] + ("xy" if not t.endswith("xy") else "zz"), id="tampered"),
        pytest.param(lambda t: t[: len(t) - 12], id="truncated"),
        pytest.param(lambda t: t.replace(".", "", 1), id="missing-dot"),
        pytest.param(lambda t: "A" + t, id="prefixed"),
    ],
)
def test_tampered_and_truncated_links_are_refused(
    web: WebRig, mangle: Callable[[str], str]
) -> None:
    links = _active(web)
    token = links["unsubscribe"].rsplit("/", 1)[1]
    bad = mangle(token)
    for method in ("get", "post"):
        answer = getattr(web.client, method)(
            f"/unsubscribe/{bad}",
            **({"data": {"List-Unsubscribe": "One-Click"}} if method == "post" else {}),
        )
        assert answer.status_code == 400
        assert "not valid" in text_of(answer.text)
    for path in ("preferences", "view"):
        assert web.client.get(f"/{path}/{bad}").status_code == 400
    assert _status(web) == SubscriberStatus.ACTIVE


def test_a_confirm_token_cannot_unsubscribe_or_open_preferences(web: WebRig) -> None:
    links = _active(web)
    confirm_token = links["confirm"].rsplit("/", 1)[1]
    answer = web.client.post(
        f"/unsubscribe/{confirm_token}", data={"List-Unsubscribe": "One-Click"}
    )
    assert answer.status_code == 400
    assert web.client.get(f"/preferences/{confirm_token}").status_code == 400
    assert _status(web) == SubscriberStatus.ACTIVE


def test_unsubscribe_and_preferences_links_work_after_30_days(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _active(web)
        clock.shift(timedelta(days=45))
        assert web.client.get(links["preferences"]).status_code == 200
        answer = web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert _status(web) == SubscriberStatus.UNSUBSCRIBED


def test_expired_links_preferences_refused_unsubscribe_still_honoured(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _active(web)
        clock.shift(timedelta(days=800))
        prefs = web.client.get(links["preferences"])
        assert prefs.status_code == 400
        assert "expired" in text_of(prefs.text)
        # A way out never stops working: the signature is still ours.
        answer = web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert _status(web) == SubscriberStatus.UNSUBSCRIBED


@pytest.fixture
def rotated(web: WebRig, web_env: dict[str, str]) -> Iterator[TestClient]:
    """The same installation restarted with a new key put first in DIGESTD_SECRET_KEYS."""
    env = {**web_env, "DIGESTD_SECRET_KEYS": f"a-brand-new-key-0123456789,{TEST_KEY}"}
    service = Service.build(load_settings(env))
    with TestClient(create_app(service), base_url="https://digest.example.com") as client:
        yield client
        assert client.portal is not None  # open inside the ``with``
        client.portal.call(service.transport.close)
    service.engine.dispose()


def test_links_signed_with_the_old_key_work_after_rotation(
    web: WebRig, rotated: TestClient, web_env: dict[str, str]
) -> None:
    links = _active(web)
    assert rotated.get(links["preferences"]).status_code == 200
    assert rotated.get(links["unsubscribe"]).status_code == 200
    answer = rotated.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert _status(web) == SubscriberStatus.UNSUBSCRIBED
    # New links are signed with the new key: the old key alone no longer reads them.
    new_settings = load_settings(
        {**web_env, "DIGESTD_SECRET_KEYS": f"a-brand-new-key-0123456789,{TEST_KEY}"}
    )
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    new_link = Links(new_settings, Tokens(new_settings.secret_keys)).url(
        Purpose.PREFERENCES, reader.public_id
    )
    new_token = new_link.rsplit("/", 1)[1]
    assert web.client.get(f"/preferences/{new_token}").status_code == 400
    assert rotated.get(f"/preferences/{new_token}").status_code == 200


def test_unsubscribing_an_erased_reader_is_a_quiet_success(web: WebRig) -> None:
    links = _active(web)
    from digestd.readers.subscribers import erase

    with web.service.sessions.begin() as session:
        erase(session, "ann@example.com", NOW)
    answer = web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert web.client.get(links["unsubscribe"]).status_code == 410


def test_an_unsubscribe_link_never_leads_to_the_preferences_page(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _active(web)
        clock.shift(timedelta(days=500))  # the most exposed link, long expired but authentic
        pages = [
            web.client.get(links["unsubscribe"]),
            web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"}),
            web.client.get(links["unsubscribe"]),
        ]
    assert [p.status_code for p in pages] == [200, 200, 200]
    assert _status(web) == SubscriberStatus.UNSUBSCRIBED
    for page in pages:
        assert "/preferences/" not in page.text
    assert "Changed your mind?" in text_of(pages[1].text)
    assert "Email me a link to subscribe again" in text_of(pages[2].text)


def test_changed_your_mind_sends_a_fresh_confirmation_and_changes_nothing_before_it(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _active(web)
        web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
        clock.shift(timedelta(minutes=11))
        page = web.client.get(links["unsubscribe"])
        form = {"csrf": csrf_of(page.text)}
        answer = web.client.post(f"{links['unsubscribe']}/resubscribe", data=form)
        assert answer.status_code == 200 and "Check your inbox" in text_of(answer.text)
        assert _status(web) == SubscriberStatus.UNSUBSCRIBED
        assert "/preferences/" not in answer.text
        mail = web.smtp.messages[-1]
        assert parse(mail.data)["Subject"] == "Confirm to resume your Tech Pulse digests"
        # without the page's CSRF token, or with a forged link: refused, nothing sent
        no_csrf = web.client.post(f"{links['unsubscribe']}/resubscribe", data={"csrf": ""})
        assert no_csrf.status_code == 403
        forged = links["unsubscribe"][:-4] + "AAAA"
        assert web.client.post(f"{forged}/resubscribe", data=form).status_code == 400
        assert len(web.smtp.messages) == 3  # confirmation, welcome, "confirm to resume"
        clock.shift(timedelta(minutes=1))
        assert web.client.get(links_in(mail.data)["confirm"]).status_code == 200
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.status == SubscriberStatus.ACTIVE
    assert reader.consent_source == "unsubscribe page: changed my mind"
    assert reader.category_slugs == ["ai", "robotics"]


def test_changed_your_mind_sends_nothing_once_the_reader_is_back(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _active(web)
        web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
        clock.shift(timedelta(minutes=11))
        form = {"csrf": csrf_of(web.client.get(links["unsubscribe"]).text)}
        web.client.post(f"{links['unsubscribe']}/resubscribe", data=form)
        clock.shift(timedelta(minutes=1))
        web.client.get(links_in(web.smtp.messages[-1].data)["confirm"])
        assert _status(web) == SubscriberStatus.ACTIVE
        clock.shift(timedelta(minutes=30))
        again = web.client.post(f"{links['unsubscribe']}/resubscribe", data=form)
    assert again.status_code == 200 and "Check your inbox" in text_of(again.text)
    subjects = [parse(m.data)["Subject"].split(":")[0] for m in web.smtp.messages]
    assert subjects == [
        "Confirm your Tech Pulse digest subscription",
        "Welcome to Tech Pulse",
        "Confirm to resume your Tech Pulse digests",
        "Welcome to Tech Pulse",  # back: when the digests start again
    ]
