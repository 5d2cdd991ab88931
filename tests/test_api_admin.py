"""The admin JSON API as an operator's script uses it: listing and searching subscribers,
the CSV export (the CLI's, streamed), suppressions, stats, edition preview and trigger.
Every bad parameter is a 4xx JSON answer naming it."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.content.articles import ingest
from digestd.mail.digests import DigestRenderer
from digestd.mail.template import MessageTemplate
from digestd.models import Delivery, DeliveryStatus, Edition, SubscriberStatus
from digestd.readers.export import export_csv
from digestd.readers.subscribers import email_hash
from digestd.service import Service
from digestd.web.api import ENDPOINTS
from digestd.web.app import create_app
from tests.admin_seed import AUTH, month_of_activity, reader, suppression
from tests.conftest import WebRig
from tests.helpers import article, run_cli

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def _readers(web: WebRig, count: int = 7) -> None:
    with web.service.sessions.begin() as session:
        for i in range(count):
            reader(
                session,
                f"user{i}@example.com" if i != 3 else "Ann.Lee@Example.org".lower(),
                categories="robotics" if i % 2 else "ai,quantum",
                status=SubscriberStatus.PAUSED if i == 5 else SubscriberStatus.ACTIVE,
                created_at=NOW - timedelta(days=10 - i),
            )


def _articles(web: WebRig, now: datetime = NOW) -> None:
    items = [
        article(f"ai-{now:%m%d}-{i}", "ai", now - timedelta(hours=i + 1), score=10 - i)
        for i in range(3)
    ]
    with web.service.sessions.begin() as session:
        assert ingest(session, enumerate(items, start=1)).added == 3


# --- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in ENDPOINTS])
def test_every_route_needs_the_token(web: WebRig, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp4"}):
        answer = web.client.request(method, "/api" + path, headers=headers)
        assert answer.status_code == 401, (path, headers)
        assert "admin token" in answer.json()["error"]
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_the_api_is_off_without_an_admin_token(env: dict[str, str]) -> None:
    service = Service.build(load_settings(env))  # no DIGESTD_ADMIN_TOKEN
    with TestClient(create_app(service), base_url="https://digest.example.com") as client:
        answer = client.get("/api/stats", headers=AUTH)
        assert answer.status_code == 403
        assert "DIGESTD_ADMIN_TOKEN" in answer.json()["error"]
        assert client.get("/api/openapi.json").status_code == 200
    service.engine.dispose()


# --- subscribers -------------------------------------------------------------------------


def test_subscribers_page_through_newest_first_without_row_ids(web: WebRig) -> None:
    _readers(web)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        answer = web.client.get("/api/subscribers", params=query, headers=AUTH)
        assert answer.status_code == 200
        body = answer.json()
        pages += 1
        seen += [s["email"] for s in body["subscribers"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen[0] == "user6@example.com" and seen[-1] == "user0@example.com"
    assert len(seen) == len(set(seen)) == 7
    first = web.client.get("/api/subscribers", headers=AUTH).json()["subscribers"][0]
    assert set(first) == {
        "public_id", "email", "status", "categories", "frequency", "timezone",
        "created_at", "confirmed_at",
    }  # fmt: skip
    assert first["categories"] == ["ai", "quantum"]
    assert first["created_at"] == "2026-11-25T09:00:00Z"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"q": "ANN.LEE"}, ["ann.lee@example.org"]),
        ({"q": "example.org"}, ["ann.lee@example.org"]),
        ({"q": "%"}, []),  # a literal percent sign, not a wildcard
        ({"q": "_"}, []),
        ({"status": "paused"}, ["user5@example.com"]),
        ({"category": "robotics", "status": "active"}, ["ann.lee@example.org",
                                                        "user1@example.com"]),
        ({"category": "quantum", "q": "user"}, ["user6@example.com", "user4@example.com",
                                                "user2@example.com", "user0@example.com"]),
    ],
)  # fmt: skip
def test_subscribers_search_and_filters(
    web: WebRig, query: dict[str, str], expected: list[str]
) -> None:
    _readers(web)
    answer = web.client.get("/api/subscribers", params=query, headers=AUTH)
    assert answer.status_code == 200
    assert [s["email"] for s in answer.json()["subscribers"]] == expected


BAD: list[Any] = [
    ("/api/subscribers?limit=0", "limit"),
    ("/api/subscribers?limit=501", "limit"),
    ("/api/subscribers?limit=ten", "limit"),
    ("/api/subscribers?limit=-1", "limit"),
    # Digits to str.isdigit, not to int(): a 500 before
    ("/api/subscribers?limit=%C2%B2", "limit"),  # superscript two
    ("/api/suppressions?limit=%D9%A1%D9%A2", "limit"),  # Arabic-Indic twelve
    ("/api/subscribers?limit=5&limit=6", "limit"),
    ("/api/subscribers?status=gone", "status"),
    ("/api/subscribers?category=basketweaving", "category"),
    ("/api/subscribers?cursor=not-a-cursor", "cursor"),
    ("/api/subscribers?q=a%0Ab", "q"),
    ("/api/subscribers?q=" + "a" * 400, "q"),
    ("/api/suppressions?cursor=eyJ4Ijox.fake", "cursor"),
    ("/api/suppressions?limit=9999", "limit"),
    ("/api/suppressions?email=not-an-address", "email"),
    ("/api/editions/preview?categories=ai", "kind"),
    ("/api/editions/preview?kind=monthly&categories=ai", "kind"),
    ("/api/editions/preview?kind=daily", "categories"),
    ("/api/editions/preview?kind=daily&categories=ai,nope", "categories"),
    ("/api/editions/preview?kind=daily&categories=ai&now=yesterday", "now"),
    ("/api/editions/preview?kind=daily&categories=ai&now=2026-11-29T07:00", "now"),
    ("/api/editions/preview?kind=daily&categories=ai&format=eml", "format"),
    ("/api/subscribers?stauts=active", "stauts"),
    ("/api/suppressions?q=x", "q"),
    ("/api/stats?verbose=1", "verbose"),
    ("/api/subscribers/export?status=active", "status"),
    ("/api/editions/preview?kind=daily&categories=ai&category=ai", "category"),
]


@pytest.mark.parametrize(("url", "name"), BAD)
def test_bad_query_parameters_are_a_400_naming_them(web: WebRig, url: str, name: str) -> None:
    answer = web.client.get(url, headers=AUTH)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["field"] == name
    assert body["error"].startswith(name)


def test_a_cursor_of_one_list_is_refused_by_another(web: WebRig) -> None:
    _readers(web)
    cursor = web.client.get("/api/subscribers?limit=1", headers=AUTH).json()["next_cursor"]
    answer = web.client.get("/api/suppressions", params={"cursor": cursor}, headers=AUTH)
    assert answer.status_code == 400 and answer.json()["field"] == "cursor"


# --- export ------------------------------------------------------------------------------


def test_export_is_the_cli_export_streamed_as_an_attachment(
    web: WebRig,
    web_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _readers(web)
    with web.client.stream("GET", "/api/subscribers/export", headers=AUTH) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/csv; charset=utf-8"
        assert answer.headers["content-disposition"].startswith('attachment; filename="subscri')
        assert "content-length" not in answer.headers  # streamed, not built whole
        body = b"".join(answer.iter_bytes()).decode()
    assert run_cli(monkeypatch, web_env, "subscribers", "export") == 0
    assert body == capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == 7
    assert rows[3]["email"] == "ann.lee@example.org" and rows[3]["status"] == "active"


def test_export_reads_in_batches_and_yields_as_it_goes(web: WebRig) -> None:
    _readers(web)
    with web.service.sessions() as session:
        chunks = list(export_csv(session, batch=2))
    # header + 2 rows, 2 rows, 2 rows, 1 row
    assert [chunk.count("\n") for chunk in chunks] == [3, 2, 2, 1]


# --- suppressions ------------------------------------------------------------------------


def test_suppressions_page_newest_first_and_look_up_one_address(web: WebRig) -> None:
    with web.service.sessions.begin() as session:
        for i in range(5):
            suppression(session, f"s{i}@example.com", "hard-bounce", NOW - timedelta(hours=i))
        suppression(session, "tie@example.com", "complaint", NOW - timedelta(hours=2))
    got: list[dict[str, str]] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = web.client.get("/api/suppressions", params=params, headers=AUTH).json()
        got += body["suppressions"]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(got) == 6 and len({g["email_hash"] for g in got}) == 6
    assert [g["created_at"] for g in got] == sorted((g["created_at"] for g in got), reverse=True)
    one = web.client.get("/api/suppressions?email=Tie@Example.com", headers=AUTH).json()
    assert one["suppressions"] == [
        {
            "email_hash": email_hash("tie@example.com"),
            "reason": "complaint",
            "created_at": "2026-11-29T07:00:00Z",
        }
    ]


# --- stats -------------------------------------------------------------------------------


def test_stats_counts_subscribers_queue_and_the_last_edition_of_each_kind(web: WebRig) -> None:
    with web.service.sessions.begin() as session:
        totals = month_of_activity(session, NOW, readers=10)
    with time_machine.travel(NOW, tick=False):
        body = web.client.get("/api/stats", headers=AUTH).json()
    assert body["as_of"] == "2026-11-29T09:00:00Z"
    assert body["subscribers"] == {"active": 10, "unsubscribed": totals["unsubscribes"]}
    assert body["queue"] == {"queued": 0, "sending": 0}  # waiting and in flight only
    assert body["oldest_queued_due_at"] is None
    (last,) = body["last_editions"]
    assert last["kind"] == "daily" and last["period"] == "2026-11-29"
    # the seed mails 92 % of its 10 readers on a weekend day (the 29th is a Sunday), and
    # skips reader n when (n + days back) % 9 == 0: reader 0 today
    assert (last["sent"], last["skipped"], last["failed"], last["pending"]) == (8, 1, 0, 0)


# --- editions ----------------------------------------------------------------------------


def test_preview_renders_html_and_text_and_says_when_there_is_nothing(web: WebRig) -> None:
    _articles(web)
    url = "/api/editions/preview?kind=daily&categories=ai,robotics&now=2026-11-29T09:00:00Z"
    html = web.client.get(url, headers=AUTH)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "Story ai-1129-0" in html.text and "<html" in html.text
    assert "script-src" not in html.headers["content-security-policy"]
    text = web.client.get(url + "&format=text", headers=AUTH)
    assert text.headers["content-type"].startswith("text/plain")
    assert "Story ai-1129-0" in text.text and "<" not in text.text.split("Story ai-1129-0")[0][-50:]
    empty = web.client.get(url.replace("ai,robotics", "quantum"), headers=AUTH)
    assert empty.status_code == 404 and "Nothing to send" in empty.json()["error"]


def _deliveries(web: WebRig) -> int:
    with web.service.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Delivery)) or 0)


def _trigger(web: WebRig, kind: str, at: datetime) -> dict[str, Any]:
    with time_machine.travel(at, tick=False):
        answer = web.client.post(
            "/api/editions/trigger", json={"kind": kind, "all": True}, headers=AUTH
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_trigger_queues_once_per_local_date(web: WebRig) -> None:
    with web.service.sessions.begin() as session:
        reader(session, "paris@example.com", timezone="Europe/Paris", created_at=NOW)
        reader(session, "kiritimati@example.com", timezone="Pacific/Kiritimati", created_at=NOW)
        reader(session, "weekly@example.com", frequency="weekly", created_at=NOW)
    _articles(web)
    first = _trigger(web, "daily", NOW)  # 10:00 in Paris, 23:00 in Kiritimati (the 29th)
    again = _trigger(web, "daily", NOW)
    assert {k: v for k, v in first.items() if k != "left_for_later"} == {
        "kind": "daily", "queued": 2, "nothing_to_send": 0, "already_had_it": 0,
        "failed_to_render": 0, "not_eligible": []
    }  # fmt: skip
    assert first["left_for_later"]["count"] == 0
    assert again["queued"] == 0 and again["already_had_it"] == 2
    assert _deliveries(web) == 2
    # 16:00 UTC is still the 29th in Paris but already 06:00 on the 30th in Kiritimati
    # (UTC+14): its 07:00 has not come, so the trigger leaves that reader for later rather
    # than spend their 30th's edition an hour early.
    with web.service.sessions.begin() as session:
        ingest(session, [(1, article("fresh", "ai", NOW + timedelta(hours=6)))])
    early = _trigger(web, "daily", NOW + timedelta(hours=7))
    assert (early["queued"], early["already_had_it"]) == (0, 1)
    assert early["left_for_later"]["count"] == 1
    assert "send time has not come" in early["left_for_later"]["why"]
    assert _deliveries(web) == 2
    on_time = _trigger(web, "daily", NOW + timedelta(hours=8))  # 07:00 on the 30th there
    assert (on_time["queued"], on_time["already_had_it"]) == (1, 1)
    assert _deliveries(web) == 3
    with web.service.sessions() as session:
        statuses = set(session.scalars(select(Delivery.status)))
        periods = set(session.scalars(select(Edition.period)))
    assert statuses == {DeliveryStatus.QUEUED}  # the daemon's next tick sends them
    assert periods == {"2026-11-29", "2026-11-30"}


def test_a_weekly_trigger_is_the_weeks_edition_named_by_its_sunday(web: WebRig) -> None:
    """Three triggers in one week are one weekly, not three."""
    with web.service.sessions.begin() as session:
        reader(session, "weekly@example.com", frequency="weekly", created_at=NOW)
    _articles(web)
    sunday = NOW  # the 29th is a Sunday; 09:00 UTC is past the 08:00 send time
    bodies = [_trigger(web, "weekly", sunday + timedelta(days=d)) for d in (0, 2, 4)]
    assert [b["queued"] for b in bodies] == [1, 0, 0]
    assert [b["already_had_it"] for b in bodies] == [0, 1, 1]
    with web.service.sessions() as session:
        assert list(session.scalars(select(Edition.period))) == ["2026-11-29"]
    # The next week's trigger is the next Sunday's edition.
    _articles(web, sunday + timedelta(days=7))
    next_week = _trigger(web, "weekly", sunday + timedelta(days=7))
    assert next_week["queued"] == 1


def test_trigger_for_everyone_works_through_the_list_in_batches(
    web: WebRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("digestd.planning.triggers.BATCH", 2)
    _readers(web)  # 7 readers, one of them paused
    _articles(web)
    with web.service.sessions.begin() as session:
        ingest(session, [(1, article("r-1", "robotics", NOW - timedelta(hours=2)))])
    with time_machine.travel(NOW, tick=False):
        body = web.client.post(
            "/api/editions/trigger", json={"kind": "daily", "all": True}, headers=AUTH
        ).json()
        again = web.client.post(
            "/api/editions/trigger", json={"kind": "daily", "all": True}, headers=AUTH
        ).json()
    assert (body["queued"], body["nothing_to_send"], body["already_had_it"]) == (6, 0, 0)
    assert (again["queued"], again["already_had_it"]) == (0, 6)
    assert _deliveries(web) == 6


def test_a_trigger_whose_digest_cannot_be_rendered_says_so_instead_of_queued(
    web: WebRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    with web.service.sessions.begin() as session:
        reader(session, "paris@example.com", timezone="Europe/Paris", created_at=NOW)
    _articles(web)

    def broken(*args: Any, **kwargs: Any) -> MessageTemplate:
        raise ValueError("a template error")

    monkeypatch.setattr(DigestRenderer, "render", broken)
    body = _trigger(web, "daily", NOW)
    assert (body["queued"], body["failed_to_render"], body["already_had_it"]) == (0, 1, 0)
    with web.service.sessions() as session:
        assert session.scalars(select(Delivery.status)).all() == [DeliveryStatus.FAILED]


def test_trigger_for_some_addresses_says_why_others_were_left_out(web: WebRig) -> None:
    with web.service.sessions.begin() as session:
        reader(session, "ann@example.com", created_at=NOW)
        reader(session, "paused@example.com", status=SubscriberStatus.PAUSED, created_at=NOW)
        reader(session, "weekly@example.com", frequency="weekly", created_at=NOW)
    with time_machine.travel(NOW, tick=False):
        answer = web.client.post(
            "/api/editions/trigger",
            json={"kind": "daily", "emails": ["ANN@example.com", "paused@example.com",
                                              "weekly@example.com", "nobody@example.com"]},
            headers=AUTH,
        )  # fmt: skip
    body = answer.json()
    assert answer.status_code == 200
    assert (body["queued"], body["nothing_to_send"]) == (0, 1)  # no articles: recorded as skipped
    assert body["not_eligible"] == [
        {"email": "paused@example.com", "reason": "status is paused"},
        {"email": "weekly@example.com", "reason": "does not take the daily edition"},
        {"email": "nobody@example.com", "reason": "no such subscriber"},
    ]


@pytest.mark.parametrize(
    ("body", "status", "name"),
    [
        ("not json", 400, None),
        ('["daily"]', 400, None),
        ('{"all": true}', 400, "kind"),
        ('{"kind": "monthly", "all": true}', 400, "kind"),
        ('{"kind": "daily"}', 400, "emails"),
        ('{"kind": "daily", "all": true, "emails": ["a@example.com"]}', 400, "emails"),
        ('{"kind": "daily", "all": "yes"}', 400, "all"),
        ('{"kind": "daily", "emails": []}', 400, "emails"),
        ('{"kind": "daily", "emails": "a@example.com"}', 400, "emails"),
        ('{"kind": "daily", "emails": ["a@example.com", "nope"]}', 400, "emails"),
        ('{"kind": "daily", "emails": [42]}', 400, "emails"),
        # 1 == True in Python: not a boolean, and this one would mail every reader
        ('{"kind": "daily", "all": 1}', 400, "all"),
        ('{"kind": "daily", "all": 0, "emails": ["a@example.com"]}', 400, "all"),
        # an unknown field is refused, never ignored: "dry_run" ignored would send
        ('{"kind": "daily", "emails": ["a@example.com"], "dry_run": true}', 400, "dry_run"),
        ('{"kind": "daily", "all": true, "categories": ["ai"]}', 400, "categories"),
    ],
)
def test_trigger_refuses_bad_bodies(web: WebRig, body: str, status: int, name: str | None) -> None:
    answer = web.client.post(
        "/api/editions/trigger",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    if name:
        assert answer.json()["field"] == name
        assert answer.json()["error"].startswith(name) or name == "emails"
    assert _deliveries(web) == 0


def test_trigger_wants_json(web: WebRig) -> None:
    answer = web.client.post("/api/editions/trigger", data={"kind": "daily"}, headers=AUTH)
    assert answer.status_code == 415
    assert json.loads(answer.text)["error"].startswith("Send JSON")
