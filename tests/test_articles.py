"""Articles in: SPEC §3 validation with per-item errors, valid items kept, re-sent ids update."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import Engine, event, func, select, text, update

from digestd.config import Settings
from digestd.content.articles import ingest, validate
from digestd.content.categories import parse_categories
from digestd.db import make_engine, make_sessions
from digestd.errors import ValidationError
from digestd.models import Article, ArticleCategory, Delivery, DeliveryStatus
from digestd.service import Service
from tests.helpers import SAMPLE_ARTICLE, article, run_cli
from tests.seeding import Reader, add_articles, add_readers, hourly_articles


def test_the_spec_sample_article_is_valid() -> None:
    article = validate(SAMPLE_ARTICLE)
    assert article.id == "meta-avocado-memo"
    assert article.published_at.isoformat() == "2026-02-05T09:00:00+00:00"
    assert article.companies == ({"name": "Meta", "ticker": "META"}, {"name": "Scale AI"})
    assert article.score == 12.5 and article.kind == "news"


def test_defaults_for_optional_fields() -> None:
    minimal = {k: SAMPLE_ARTICLE[k] for k in ("id", "url", "title", "published_at", "categories")}
    article = validate(minimal)
    assert (article.kind, article.score, article.source, article.key_takeaways) == (
        "news",
        0.0,
        "",
        (),
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"url": None}, "url"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "/relative/path"}, "url"),
        ({"title": None}, "title"),
        ({"title": 42}, "title"),
        ({"published_at": None}, "published_at"),
        ({"published_at": "2026-02-05T09:00:00"}, "published_at"),  # naive
        ({"published_at": "yesterday"}, "published_at"),
        ({"categories": None}, "categories"),
        ({"categories": []}, "categories"),
        ({"categories": ["ai", "underwater-basket-weaving"]}, "categories"),
        ({"kind": "rumours"}, "kind"),
        ({"kind": ""}, "kind"),  # no kind is not "news"
        ({"kind": []}, "kind"),
        ({"kind": False}, "kind"),
        ({"url": "https://example.com/a\tb"}, "url"),
        ({"companies": [{"name": "N" * 201}]}, "companies[0].name"),  # refused, never cut
        ({"companies": [{"name": "Acme", "ticker": "T" * 21}]}, "companies[0].ticker"),
        ({"score": -1}, "score"),
        ({"score": "high"}, "score"),
        ({"score": True}, "score"),
        ({"key_takeaways": "one string"}, "key_takeaways"),
        ({"companies": [{"ticker": "X"}]}, "companies[0]"),
        ({"image_url": "ftp://example.com/x.png"}, "image_url"),
    ],
)
def test_each_invalid_field_is_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate({**SAMPLE_ARTICLE, **change})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("score", "shown"),
    [(float("nan"), "NaN"), (float("inf"), "a number too large"), (10**400, "a number too large"),
     (-2.5, "-2.5"), (1e13, "1e+13")],
)  # fmt: skip
def test_a_score_out_of_range_is_shown_as_what_it_is(score: float, shown: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate({**SAMPLE_ARTICLE, "score": score})
    assert caught.value.problem.endswith(f", got {shown}")


def _count(database_url: str) -> int:
    engine = make_engine(database_url)
    with make_sessions(engine)() as session:
        count = session.scalar(select(func.count()).select_from(Article))
    engine.dispose()
    return int(count or 0)


def test_a_batch_keeps_valid_items_and_reports_bad_ones_by_position(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = dict(SAMPLE_ARTICLE)
    naive = {**SAMPLE_ARTICLE, "id": "naive", "published_at": "2026-02-05T09:00:00"}
    unknown = {**SAMPLE_ARTICLE, "id": "unknown", "categories": ["gardening"]}
    missing = {k: v for k, v in SAMPLE_ARTICLE.items() if k != "title"} | {"id": "missing"}
    second = {**SAMPLE_ARTICLE, "id": "second"}
    path = tmp_path / "batch.json"
    path.write_text(json.dumps([good, naive, unknown, missing, second]))

    assert run_cli(monkeypatch, env, "articles", "add", str(path)) == 1
    out, err = capsys.readouterr()
    assert "2 added" in out and "3 rejected" in out
    assert "item 2: published_at: needs a timezone" in err
    assert "item 3: categories: unknown category 'gardening'" in err
    assert "item 4: title: is required" in err
    assert _count(env["DIGESTD_DATABASE_URL"]) == 2


def test_malformed_json_is_exit_2_and_stores_nothing(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"id": "a", "url": ')
    assert run_cli(monkeypatch, env, "articles", "add", str(path)) == 2
    err = capsys.readouterr().err
    assert "malformed JSON at line 1" in err and "Traceback" not in err
    assert _count(env["DIGESTD_DATABASE_URL"]) == 0


def test_missing_file_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, env, "articles", "add", "/nonexistent/file.json") == 2
    assert "cannot read /nonexistent/file.json" in capsys.readouterr().err


def test_jsonl_lines_are_reported_by_line_number(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "feed.jsonl"
    lines = [
        json.dumps({**SAMPLE_ARTICLE, "id": "one"}),
        "{not json",
        "",
        json.dumps({**SAMPLE_ARTICLE, "id": "two"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    assert run_cli(monkeypatch, env, "articles", "add", str(path)) == 1
    assert "item 2: line: malformed JSON" in capsys.readouterr().err
    assert _count(env["DIGESTD_DATABASE_URL"]) == 2


def test_a_resent_id_updates_the_article(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps(SAMPLE_ARTICLE))
    assert run_cli(monkeypatch, env, "articles", "add", str(path)) == 0
    path.write_text(
        json.dumps(
            {
                **SAMPLE_ARTICLE,
                "title": "Updated title",
                "score": 50,
                "categories": ["ai", "enterprise"],
            }
        )
    )
    assert run_cli(monkeypatch, env, "articles", "add", str(path)) == 0
    assert "0 added, 1 updated" in capsys.readouterr().out
    engine = make_engine(env["DIGESTD_DATABASE_URL"])
    with make_sessions(engine)() as session:
        stored = session.get(Article, "meta-avocado-memo")
        assert stored is not None
        assert (stored.title, stored.score) == ("Updated title", 50)
        assert sorted(c.category for c in stored.categories) == ["ai", "enterprise"]
    engine.dispose()


def test_a_changed_summary_is_a_new_version_of_the_article_and_the_same_one_is_not(
    database_url: str,
) -> None:
    """``updated_at`` is the article's version in a digest's key: a corrected summary is
    rendered anew for the readers planned after, as a corrected why_it_matters is."""
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    first = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)

    def stored_version(summary: str, at: datetime) -> datetime:
        item = dict(article("a1", "ai", first), summary=summary)
        with time_machine.travel(at, tick=False), sessions.begin() as session:
            assert not ingest(session, [(1, item)]).errors
        with sessions() as session:
            return session.scalars(select(Article.updated_at)).one()

    original = stored_version("First summary.", first)
    assert stored_version("First summary.", first + timedelta(hours=1)) == original
    assert stored_version("Corrected summary.", first + timedelta(hours=2)) > original
    engine.dispose()


def test_articles_from_stdin(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps([SAMPLE_ARTICLE])))
    assert run_cli(monkeypatch, env, "articles", "add", "-") == 0
    assert _count(env["DIGESTD_DATABASE_URL"]) == 1


def _blocked_on_a_lock(engine: Engine, seen: threading.Event) -> Callable[[], bool]:
    """How to tell that the second writer waits for the first one's row or write lock:
    PostgreSQL lists it in pg_stat_activity; SQLite has started its INSERT (traced)."""
    if engine.dialect.name != "postgresql":
        return seen.is_set

    def waiting() -> bool:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            return bool(connection.scalar(text(query)))

    return waiting


def test_two_ingests_of_the_same_new_items_at_once_both_succeed(database_url: str) -> None:
    """The second ingest runs while the first has inserted the same new ids and not yet
    committed: it must wait and update, not fail with IntegrityError."""
    items = [article(f"race-{i}", "ai", datetime(2026, 11, 30, tzinfo=UTC)) for i in range(40)]
    first_engine, second_engine = make_engine(database_url), make_engine(database_url)
    inserting = threading.Event()
    if second_engine.dialect.name == "sqlite":

        def trace(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.set_trace_callback(
                lambda sql: inserting.set() if sql.startswith("INSERT INTO articles") else None
            )

        event.listen(second_engine, "connect", trace)
    outcome: list[Any] = []

    def second() -> None:
        try:
            with make_sessions(second_engine).begin() as session:
                outcome.append(ingest(session, enumerate(items, start=1)))
        except BaseException as exc:
            outcome.append(exc)

    blocked = _blocked_on_a_lock(first_engine, inserting)
    with make_sessions(first_engine).begin() as session:
        first = ingest(session, enumerate(items, start=1))
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 30
        while not blocked() and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for the other thread, not on the clock under test
        assert blocked(), "the second ingest never reached the lock"
    thread.join(timeout=60)
    (second_report,) = outcome
    assert not isinstance(second_report, BaseException), second_report
    assert (first.added, first.updated) == (40, 0)
    assert (second_report.added, second_report.updated, second_report.errors) == (0, 40, [])
    assert _count(database_url) == 40
    with make_sessions(first_engine)() as session:
        pairs = session.scalar(select(func.count()).select_from(ArticleCategory))
        assert pairs == 40  # categories replaced, not doubled
    first_engine.dispose()
    second_engine.dispose()


def test_a_stored_title_with_a_control_character_fails_no_digest(settings: Settings) -> None:
    """Rows stored before such characters were refused: the digest leaves the character out
    and goes to every reader (MJML, which is XML, would refuse the whole digest)."""
    first = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
    service = Service.build(settings)
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(first - timedelta(hours=6), first))
        add_readers(
            session, [Reader("a@example.com"), Reader("b@example.com")], first - timedelta(hours=1)
        )
        title = session.scalars(select(Article).order_by(Article.score.desc())).first()
        assert title is not None
        session.execute(  # as an older digestd stored it, past today's validation
            update(Article).where(Article.id == title.id).values(title="Bell\x07 and\x01 SOH")
        )
    report = asyncio.run(service.tick(first + timedelta(minutes=1)))
    asyncio.run(service.close())
    assert (report.delivered.sent, report.delivered.failed) == (2, 0)
    with service.sessions() as session:
        statuses = session.scalars(select(Delivery.status)).all()
    assert statuses == [DeliveryStatus.SENT] * 2
    mails = [p.read_bytes() for p in settings.mail_dir.glob("*.eml")]
    assert len(mails) == 2
    assert all(b"Bell and SOH" in mail and b"\x07" not in mail for mail in mails)


def test_a_null_kind_is_news_and_an_error_never_quotes_a_huge_value() -> None:
    assert validate({**SAMPLE_ARTICLE, "kind": None}).kind == "news"
    with pytest.raises(ValidationError) as caught:
        validate({**SAMPLE_ARTICLE, "categories": [list(range(100_000))]})
    assert caught.value.field == "categories" and len(str(caught.value)) < 200
    with pytest.raises(ValidationError) as caught:  # the API's test send, preferences
        parse_categories([list(range(100_000))])  # type: ignore[list-item]
    assert caught.value.field == "categories" and len(str(caught.value)) < 200
