"""View in browser, the development mailbox, health, the admin API and unknown addresses."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import time_machine
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.content.categories import CATEGORIES
from digestd.models import Article
from digestd.service import Service
from digestd.tokens import Purpose
from digestd.web.app import create_app
from digestd.web.view import HEADING_STYLE, signup_path
from tests.conftest import ADMIN_TOKEN, WebRig
from tests.helpers import SAMPLE_ARTICLE, article, parse, parts
from tests.web_helpers import SIGNUP, csrf_of, links_in, signup_form, text_of

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _edition_with_a_view_link(web: WebRig) -> tuple[bytes, dict[str, str]]:
    """Ann confirms and is sent a daily; the message and its links."""
    items = [
        dict(SAMPLE_ARTICLE, published_at="2026-11-29T20:00:00Z"),
        article("robots-1", "robotics", datetime(2026, 11, 29, 21, tzinfo=UTC), score=3),
    ]
    assert web.client.post("/api/articles", json=items, headers=ADMIN).status_code == 200
    with time_machine.travel(NOW, tick=False):
        signup_form(web, "ann@example.com")
        web.client.get(links_in(web.smtp.messages[-1].data)["confirm"])
    web.portal.call(web.service.tick, datetime(2026, 11, 30, 6, 0, tzinfo=UTC))
    digest = web.smtp.messages[-1].data
    return digest, links_in(digest)


def test_view_in_browser_shows_the_edition_without_the_readers_links(web: WebRig) -> None:
    _, links = _edition_with_a_view_link(web)
    page = web.client.get(links["view"])
    assert page.status_code == 200
    words = text_of(page.text)
    assert "Meta's Internal Memo Signals AI Comeback" in words
    assert "Story robots-1" in words
    assert "web copy" in words  # where the email had the reader's links
    # Whoever was shared it signs up for what it is, as from an archive page.
    signup = re.search(r'href="([^"]*)"[^>]*>Get these digests</a>', page.text)
    assert signup is not None
    wanted = "https://digest.example.com/subscribe?categories=ai,robotics&amp;frequency=daily"
    assert signup[1] == wanted
    # A shared page hands nobody the reader's address or controls.
    for personal in ("/unsubscribe/", "/preferences/", "/view/", "ann@example.com", "ann%40"):
        assert personal not in page.text, personal
    assert "__digestd" not in page.text  # no placeholder left
    assert "script-src" not in page.headers["content-security-policy"]
    # another reader's token cannot open it
    with time_machine.travel(NOW, tick=False):
        signup_form(web, "bob@example.com", categories=["robotics"])
    bob = web.subscriber("bob@example.com")
    assert bob is not None
    tokens = web.service.tokens
    _, delivery_id = tokens.read(Purpose.VIEW, links["view"].rsplit("/", 1)[1]).split("/")
    bobs = tokens.make(Purpose.VIEW, f"{bob.public_id}/{delivery_id}")
    assert web.client.get(f"/view/{bobs}").status_code == 410


@pytest.mark.parametrize(
    ("categories", "kind", "path"),
    [
        (["quantum"], "weekly", "/subscribe?categories=quantum&frequency=weekly"),
        (list(CATEGORIES), "daily", "/subscribe?categories=all&frequency=daily"),
        ([], "daily", "/subscribe"),
    ],
)
def test_a_web_copys_signup_link_is_for_its_categories_and_kind(
    categories: list[str], kind: str, path: str
) -> None:
    assert signup_path(categories, kind) == path


def test_view_in_browser_is_the_email_that_was_sent_after_the_articles_changed(
    web: WebRig,
) -> None:
    digest, links = _edition_with_a_view_link(web)
    edited = dict(SAMPLE_ARTICLE, published_at="2026-11-29T20:00:00Z", title="Edited later")
    assert web.client.post("/api/articles", json=[edited], headers=ADMIN).status_code == 200
    shown = web.client.get(links["view"]).text
    assert "Edited later" not in shown
    assert "Meta's Internal Memo Signals AI Comeback" in text_of(shown)
    # A web page: the email in a main landmark led by its subject as an h1.
    subject = re.escape(html.escape(str(parse(digest)["Subject"])))
    heading = re.search(rf'<body[^>]*><main><h1 class="page-heading" [^>]*>{subject}</h1>', shown)
    assert heading is not None and shown.count("</main>") == 1
    page = shown.replace(heading[0], heading[0].split("<main>")[0]).replace("</main>", "")
    page = page.replace(HEADING_STYLE + "\n", "")
    # Byte for byte the HTML part that was sent, but for the stretches that are the
    # reader's own: why they get it and their mute links taken out, the footer's links
    # replaced by a note, and the tracked article links back to the articles' own.
    tracked = re.findall(r'href="(https://digest\.example\.com/c/[^"]+)"', parts(parse(digest))[1])
    plain = re.findall(r'href="(https://(?:the-decoder|news\.example)\.com/[^"]+)"', page)
    assert len(tracked) == len(plain) == 2  # each title (the lead has no image)
    sent = parts(parse(digest))[1]
    for link, url in zip(tracked, plain, strict=True):
        sent = sent.replace(f'href="{link}"', f'href="{url}"', 1)
    # Why the reader gets it, then their mute links: both theirs, both taken out.
    before, _, rest = sent.partition("You receive the")
    between, _, rest = rest.split("Robotics</span></a>", 1)[1].partition('<a class="tap"')
    after = rest.split("View in browser</a>", 1)[1]
    assert page.startswith(before) and page.rstrip("\r\n").endswith(after)
    assert before and between in page and after
    assert "Mute a topic" not in page and "/mute/" not in page
    assert "You receive the" not in page


@pytest.fixture
def catcher(env: dict[str, str]) -> Iterator[TestClient]:
    """An installation without SMTP: mail goes to var/mail and is shown at /dev/mail."""
    service = Service.build(load_settings(env))
    app = create_app(service)
    # Signs up on the site, reads /dev/mail as the developer on this machine does.
    with TestClient(app, base_url="https://digest.example.com", client=LOOPBACK) as client:
        yield client
    service.engine.dispose()


LOOPBACK = ("127.0.0.1", 50000)
MAILBOX = "http://localhost:8080/dev/mail"


def test_dev_mailbox_lists_caught_mail_and_shows_the_confirmation_link(
    catcher: TestClient,
) -> None:
    empty = catcher.get(MAILBOX)
    assert empty.status_code == 200 and "No messages yet" in empty.text
    page = catcher.get("/subscribe")
    catcher.post(
        "/subscribe", data={"csrf": csrf_of(page.text), "email": "new@example.com", **SIGNUP}
    )
    listing = catcher.get(MAILBOX)
    assert "new@example.com" in listing.text
    assert "Confirm your Tech Pulse digest subscription" in listing.text
    name = listing.text.split('href="/dev/mail/')[1].split('"')[0]
    message = catcher.get(f"{MAILBOX}/{name}")
    assert message.status_code == 200 and "https://digest.example.com/confirm/" in message.text
    raw = catcher.get(f"{MAILBOX}/{name}/raw")
    assert raw.text.startswith("Return-Path:")
    for bad in ("..%2Fsecret.key", "nope.eml", "x.txt"):
        assert catcher.get(f"{MAILBOX}/{bad}").status_code == 404


def test_dev_mailbox_is_absent_when_smtp_is_configured(web: WebRig) -> None:
    assert web.client.get("/dev/mail").status_code == 404


def test_health_and_unknown_pages(web: WebRig) -> None:
    health = web.client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    missing = web.client.get("/no/such/page")
    assert missing.status_code == 404 and "nothing at this address" in text_of(missing.text)
    wrong = web.client.delete("/subscribe")
    assert wrong.status_code == 405 and "does not accept DELETE" in text_of(wrong.text)
    assert wrong.headers["allow"] == "GET, HEAD, POST"  # RFC 9110 §15.5.6
    assert web.client.put("/healthz").headers["allow"] == "GET, HEAD"
    assert web.client.get("/api/editions/trigger").headers["allow"] == "POST"


def test_api_needs_the_admin_token(web: WebRig) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        answer = web.client.post("/api/articles", json=SAMPLE_ARTICLE, headers=headers)
        assert answer.status_code == 401
        assert "admin token" in answer.json()["error"]
    assert web.count(Article) == 0


def test_api_is_disabled_without_a_configured_token(catcher: TestClient) -> None:
    answer = catcher.post("/api/articles", json=SAMPLE_ARTICLE, headers=ADMIN)
    assert answer.status_code == 403
    assert "DIGESTD_ADMIN_TOKEN" in answer.json()["error"]


def test_api_articles_keeps_valid_items_and_reports_bad_ones(web: WebRig) -> None:
    one = web.client.post("/api/articles", json=SAMPLE_ARTICLE, headers=ADMIN)
    assert one.status_code == 200 and one.json()["added"] == 1
    batch = [
        dict(SAMPLE_ARTICLE, title="Updated title"),
        dict(SAMPLE_ARTICLE, id="no-date", published_at="2026-02-05T09:00:00"),
        dict(SAMPLE_ARTICLE, id="new-one", categories=["robotics"]),
        "not an object",
    ]
    answer = web.client.post("/api/articles", json=batch, headers=ADMIN)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["added"], body["updated"], body["rejected"]) == (1, 1, 2)
    assert body["errors"][0] == {
        "position": 2,
        "field": "published_at",
        "problem": body["errors"][0]["problem"],
    }
    assert "timezone" in body["errors"][0]["problem"]
    assert body["errors"][1]["position"] == 4
    assert web.count(Article) == 2
    bad = web.client.post("/api/articles", json=[{"id": "x"}], headers=ADMIN)
    assert bad.status_code == 422
    assert (
        web.client.post(
            "/api/articles", content=b"{", headers={**ADMIN, "Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert (
        web.client.post(
            "/api/articles", content=b"id=1", headers={**ADMIN, "Content-Type": "text/plain"}
        ).status_code
        == 415
    )
    assert web.client.get("/api/nothing", headers=ADMIN).json()["error"]


def test_an_unexpected_failure_is_a_plain_500_page_without_a_traceback(web: WebRig) -> None:
    from sqlalchemy import text

    with web.service.engine.begin() as connection:
        connection.execute(text("DROP TABLE archive_editions"))
    client = TestClient(web.client.app, raise_server_exceptions=False)
    answer = client.get("/archive", headers={"Accept": "application/json"})
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "Something went wrong on our side. Please try again in a minute."
    }
    page = client.get("/archive")
    assert page.status_code == 500
    assert "Sorry, something broke" in page.text and "Traceback" not in page.text


def test_a_signup_the_database_fails_looks_the_same_and_is_logged(
    web: WebRig, caplog: pytest.LogCaptureFixture
) -> None:
    """The signup's work runs after the answer (which must not tell how long it took):
    a failure there is the operator's to see, in the log, and nothing is mailed."""
    from sqlalchemy import text

    with web.service.engine.begin() as connection:
        connection.execute(text("DROP TABLE subscriber_categories"))
    answer = web.client.post("/subscribe", json={"email": "ann@example.com", **SIGNUP})
    assert answer.status_code == 202 and answer.json()["status"] == "check-your-inbox"
    (line,) = [r for r in caplog.records if r.getMessage().startswith("signup not stored")]
    assert line.levelname == "ERROR" and "subscriber_categories" in line.getMessage()
    assert web.smtp.messages == [] and web.subscriber("ann@example.com") is None
