"""Subscribers: CSV import with per-row errors, export, erasure; addresses normalised once."""

from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime, time
from pathlib import Path

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from digestd.content.categories import CATEGORIES
from digestd.db import make_engine, make_sessions
from digestd.errors import ValidationError
from digestd.models import Category, Subscriber, SubscriberStatus, Suppression
from digestd.readers.subscribers import (
    Addresses,
    email_hash,
    new_subscriber,
    normalise_email,
    parse_preferences,
)
from tests.helpers import run_cli, run_digestd

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
HEADER = "email,categories,frequency,timezone\n"


def _subscribers(database_url: str) -> dict[str, Subscriber]:
    engine = make_engine(database_url)
    with make_sessions(engine)() as session:
        found = {s.email: s for s in session.scalars(select(Subscriber))}
        for s in found.values():
            _ = s.categories  # load before the session closes
    engine.dispose()
    return found


def _import(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path, body: str) -> int:
    path = tmp_path / "subscribers.csv"
    path.write_text(HEADER + body)
    with time_machine.travel(NOW, tick=False):
        return run_cli(monkeypatch, env, "subscribers", "import", str(path))


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("  bob@example.org ", "bob@example.org"),
        ("chris@bücher.example", "chris@bücher.example"),
    ],
)
def test_addresses_are_normalised(raw: str, normalised: str) -> None:
    assert normalise_email(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "no-at-sign",
        "a@b",
        "x@example.com\r\nBcc: y@example.com",
        "ü@example.com",
        "a" * 300 + "@example.com",
    ],
)
def test_bad_addresses_are_refused(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalise_email(raw)
    assert caught.value.field == "email"


def test_import_activates_rows_and_records_the_source(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    body = (
        'ann@example.com,"ai,robotics",daily,America/Los_Angeles\n'
        "bob@example.com,all,both,\n"
        'cat@example.com,"fintech",weekly,Asia/Kolkata\n'
    )
    assert _import(monkeypatch, env, tmp_path, body) == 0
    found = _subscribers(env["DIGESTD_DATABASE_URL"])
    ann, bob, cat = found["ann@example.com"], found["bob@example.com"], found["cat@example.com"]
    assert ann.status == SubscriberStatus.ACTIVE and ann.consent_source == "import:subscribers.csv"
    assert sorted(ann.category_slugs) == ["ai", "robotics"]
    assert (ann.wants_daily, ann.wants_weekly) == (True, False)
    # the next daily is the first local 07:00 after the import: 15:00Z in Los Angeles
    assert ann.next_daily_at == datetime(2026, 11, 29, 15, 0, tzinfo=UTC)
    assert ann.next_weekly_at is None
    assert len(bob.category_slugs) == 26 and bob.timezone == "UTC"  # empty = default zone
    assert (bob.wants_daily, bob.wants_weekly) == (True, True)
    # Sunday 08:00 in Kolkata is 02:30Z; the import happened after it, so next Sunday
    assert cat.next_weekly_at == datetime(2026, 12, 6, 2, 30, tzinfo=UTC)


def test_bad_rows_are_reported_by_line_and_good_rows_kept(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = (
        "good@example.com,ai,daily,UTC\n"
        "not-an-email,ai,daily,UTC\n"
        "unknown@example.com,gardening,daily,UTC\n"
        "freq@example.com,ai,hourly,UTC\n"
        "zone@example.com,ai,daily,Mars/Base\n"
        'multi@example.com,"ai,\nrobotics",daily,UTC\n'  # a quoted field across lines
        "GOOD@example.com,ai,daily,UTC\n"
    )  # same address again
    assert _import(monkeypatch, env, tmp_path, body) == 1
    err = capsys.readouterr().err
    assert "line 3: email:" in err
    assert "line 4: categories: unknown category 'gardening'" in err
    assert "line 5: frequency: must be daily, weekly or both" in err
    assert "line 6: timezone: unknown IANA timezone 'Mars/Base'" in err
    assert "line 9: email: appears twice in this file" in err
    assert sorted(_subscribers(env["DIGESTD_DATABASE_URL"])) == [
        "good@example.com",
        "multi@example.com",
    ]


def test_categories_separated_by_semicolons_or_bars_are_read_and_a_bad_one_says_how(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A cell written as a list is by hand (a comma would need the cell quoted)."""
    body = (
        "semi@example.com,ai;robotics,daily,UTC\n"
        "bar@example.com, quantum | ai ,daily,UTC\n"
        "bad@example.com,ai;gardening,daily,UTC\n"
    )
    assert _import(monkeypatch, env, tmp_path, body) == 1
    err = capsys.readouterr().err
    assert (
        "line 4: categories: unknown category 'gardening'; separate several with commas "
        '(quoted in CSV: "ai,robotics"), semicolons or |; known: ai, autonomy,' in err
    )
    found = _subscribers(env["DIGESTD_DATABASE_URL"])
    assert sorted(found) == ["bar@example.com", "semi@example.com"]
    assert found["semi@example.com"].category_slugs == ["ai", "robotics"]
    assert found["bar@example.com"].category_slugs == ["ai", "quantum"]


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("mail,topics\nann@example.com,ai", "missing email, categories, frequency, timezone"),
        (
            "email;categories;frequency;timezone\nann@example.com;ai;daily;UTC",
            "(the file is separated by semicolons? use commas)",
        ),
        (
            "email,email,categories,frequency,timezone\na1@example.com,a2@example.com,ai,daily,UTC",
            "the CSV header names email twice",
        ),
        ("", "the file is empty: its first line must be the header email,categories,"),
        ("\n\n", "the file is empty: its first line must be the header email,categories,"),
    ],
    ids=["wrong", "semicolons", "twice", "empty", "blank-lines"],
)
def test_a_file_whose_header_is_not_the_import_columns_is_exit_2_and_imports_nothing(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    header: str,
    says: str,
) -> None:
    path = tmp_path / "list.csv"
    path.write_text(header + "\n")
    assert run_cli(monkeypatch, env, "subscribers", "import", str(path)) == 2
    assert says in capsys.readouterr().err
    assert _subscribers(env["DIGESTD_DATABASE_URL"]) == {}


def test_a_quote_left_open_is_reported_where_it_opened(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The rows after it are read into its value: the report names the line the quote
    opened on and how far it ran, so the operator can mend the file and import again."""
    body = (
        "q1@example.com,ai,daily,UTC\n"
        + '"q2@example.com,ai,daily,UTC\n'
        + "".join(f"q{n}@example.com,ai,daily,UTC\n" for n in range(3, 11))
    )
    assert _import(monkeypatch, env, tmp_path, body) == 1
    err = capsys.readouterr().err
    assert "line 3: email:" in err
    assert "(this row runs on to line 11: a quote not closed?)" in err
    assert sorted(_subscribers(env["DIGESTD_DATABASE_URL"])) == ["q1@example.com"]


def test_a_field_past_the_csv_limit_is_that_rows_error_and_the_rest_imported(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = (
        "before@example.com,ai,daily,UTC\n"
        + "huge@example.com,ai,daily,"
        + "Z" * 200_000
        + "\n"
        + "after@example.com,ai,daily,UTC\n"
    )
    assert _import(monkeypatch, env, tmp_path, body) == 1
    err = capsys.readouterr().err
    assert "line 3: row: not valid CSV (field larger than field limit" in err
    assert sorted(_subscribers(env["DIGESTD_DATABASE_URL"])) == [
        "after@example.com",
        "before@example.com",
    ]


def test_import_never_resubscribes_someone_who_left(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(monkeypatch, env, "subscribers", "delete", "gone@example.com") == 0
    assert _import(monkeypatch, env, tmp_path, "gone@example.com,ai,daily,UTC\n") == 1
    assert "line 2: email: is on the suppression list (erased)" in capsys.readouterr().err
    assert _subscribers(env["DIGESTD_DATABASE_URL"]) == {}


def _seed(env: dict[str, str], email: str, status: SubscriberStatus, **fields: object) -> None:
    engine = make_engine(env["DIGESTD_DATABASE_URL"])
    with make_sessions(engine).begin() as session:
        prefs = parse_preferences("ai", "daily", "UTC", "UTC")
        subscriber = new_subscriber(email, prefs, status)
        for name, value in fields.items():
            setattr(subscriber, name, value)
        session.add(subscriber)
    engine.dispose()


def test_import_activates_a_pending_reader_only_if_they_have_not_left_before(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    left = datetime(2026, 10, 1, tzinfo=UTC)
    # A signup never confirmed: the operator's list vouches for them, as for a new row.
    _seed(env, "pending@example.com", SubscriberStatus.PENDING)
    # Pending after an unsubscribe (an older digestd's signup did that): no consent since.
    _seed(env, "was-gone@example.com", SubscriberStatus.PENDING, unsubscribed_at=left)
    _seed(env, "gone@example.com", SubscriberStatus.UNSUBSCRIBED, unsubscribed_at=left)
    body = (
        "pending@example.com,robotics,weekly,UTC\n"
        "was-gone@example.com,robotics,weekly,UTC\n"
        "gone@example.com,robotics,weekly,UTC\n"
    )
    assert _import(monkeypatch, env, tmp_path, body) == 1
    err = capsys.readouterr().err
    assert "line 3: email: unsubscribed on 2026-10-01 and has not confirmed since" in err
    assert "line 4: email: is unsubscribed; not re-subscribed by import" in err
    rows = _subscribers(env["DIGESTD_DATABASE_URL"])
    vouched = rows["pending@example.com"]
    assert vouched.status == SubscriberStatus.ACTIVE
    assert (vouched.consent_source, vouched.consent_at) == ("import:subscribers.csv", NOW)
    for email in ("was-gone@example.com", "gone@example.com"):
        assert rows[email].category_slugs == ["ai"], email
        assert rows[email].unsubscribed_at == left
        assert rows[email].next_weekly_at is None and rows[email].consent_at is None
    assert rows["was-gone@example.com"].status == SubscriberStatus.PENDING
    assert rows["gone@example.com"].status == SubscriberStatus.UNSUBSCRIBED


def test_export_round_trips_the_import_columns_plus_status(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = 'ann@example.com,"robotics,ai",both,Europe/Paris\n'
    assert _import(monkeypatch, env, tmp_path, body) == 0
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "subscribers", "export") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows == [
        {
            "email": "ann@example.com",
            "categories": "ai,robotics",
            "frequency": "both",
            "timezone": "Europe/Paris",
            "status": "active",
            "created_at": rows[0]["created_at"],
            "confirmed_at": NOW.isoformat(),
        }
    ]
    # the export is itself importable
    exported = tmp_path / "exported.csv"
    run_cli(monkeypatch, env, "subscribers", "export")
    exported.write_text(capsys.readouterr().out)
    assert run_cli(monkeypatch, env, "subscribers", "import", str(exported)) == 0


def test_a_reader_of_every_category_exports_as_all_and_gets_a_new_category_back(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An export of "All Technology" imported back after the site gained a category: the
    reader takes that one too (the 26 slugs written out would have left it out)."""
    body = 'every@example.com,all,daily,UTC\nsome@example.com,"ai,robotics",daily,UTC\n'
    assert _import(monkeypatch, env, tmp_path, body) == 0
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "subscribers", "export") == 0
    exported = capsys.readouterr().out
    rows = {row["email"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert rows["every@example.com"]["categories"] == "all"
    assert rows["some@example.com"]["categories"] == "ai,robotics"
    # The site adds a category (code and table both know it), then the export comes back.
    monkeypatch.setitem(CATEGORIES, "agritech", "AgriTech")
    engine = make_engine(env["DIGESTD_DATABASE_URL"])
    with make_sessions(engine).begin() as session:
        session.add(Category(slug="agritech", name="AgriTech", position=len(CATEGORIES)))
    engine.dispose()
    path = tmp_path / "exported.csv"
    path.write_text(exported)
    assert run_cli(monkeypatch, env, "subscribers", "import", str(path)) == 0
    found = _subscribers(env["DIGESTD_DATABASE_URL"])
    assert len(found["every@example.com"].category_slugs) == 27
    assert "agritech" in found["every@example.com"].category_slugs
    assert sorted(found["some@example.com"].category_slugs) == ["ai", "robotics"]


def test_an_export_edited_to_unsubscribe_a_reader_does_so_when_imported_back(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = "stays@example.com,ai,daily,UTC\nleaves@example.com,ai,daily,UTC\n"
    assert _import(monkeypatch, env, tmp_path, body) == 0
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "subscribers", "export") == 0
    edited = capsys.readouterr().out.replace(
        "leaves@example.com,ai,daily,UTC,active", "leaves@example.com,ai,daily,UTC,Unsubscribed"
    )
    edited += "stranger@example.com,ai,daily,UTC,unsubscribed,,\n"
    edited += "typo@example.com,ai,daily,UTC,unsubscirbed,,\n"  # never read as "active"
    path = tmp_path / "edited.csv"
    path.write_text(edited)
    said = []
    for _ in range(2):  # the second time nothing is left to do
        assert run_cli(monkeypatch, env, "subscribers", "import", str(path)) == 1
        out, err = capsys.readouterr()
        said.append(out)
        assert "line 4: status: unsubscribed, but the address is not on the list" in err
        assert "line 5: status: unknown status 'unsubscirbed' (know pending, active" in err
        rows = _subscribers(env["DIGESTD_DATABASE_URL"])
        assert rows["leaves@example.com"].status == SubscriberStatus.UNSUBSCRIBED
        assert rows["leaves@example.com"].next_daily_at is None
        assert rows["stays@example.com"].status == SubscriberStatus.ACTIVE
        assert "stranger@example.com" not in rows
    assert said == [
        "subscribers: 0 added, 1 updated, 1 unsubscribed, 2 rejected\n",
        "subscribers: 0 added, 1 updated, 2 rejected\n",
    ]


def test_an_export_moved_to_a_new_list_does_not_mail_who_left_or_paused(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An export from another digestd, imported into an empty one: the rows that bounced or
    complained there are not added (they were added, active, and mailed the next morning);
    a paused reader comes in paused."""
    exported = (
        "email,categories,frequency,timezone,status,created_at,confirmed_at\n"
        "bounced@example.org,ai,daily,UTC,bounced,2026-01-01T00:00:00+00:00,\n"
        "complained@example.org,ai,daily,UTC,complained,2026-01-01T00:00:00+00:00,\n"
        "paused@example.org,ai,both,UTC,paused,2026-01-01T00:00:00+00:00,\n"
        "active@example.org,ai,daily,UTC,active,2026-01-01T00:00:00+00:00,\n"
    )
    path = tmp_path / "export.csv"
    path.write_text(exported)
    with time_machine.travel(NOW, tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(path)) == 1
    out, err = capsys.readouterr()
    assert "line 2: status: bounced: an address that left so is not added by import" in err
    assert "line 3: status: complained: an address that left so is not added" in err
    assert out == "subscribers: 2 added, 0 updated, 2 rejected\n"
    rows = _subscribers(env["DIGESTD_DATABASE_URL"])
    assert sorted(rows) == ["active@example.org", "paused@example.org"]
    paused = rows["paused@example.org"]
    assert paused.status == SubscriberStatus.PAUSED and paused.paused_until is None
    assert paused.next_daily_at is None and paused.next_weekly_at is None
    assert paused.wants_daily and paused.wants_weekly  # for when they resume
    assert rows["active@example.org"].status == SubscriberStatus.ACTIVE


def test_a_paused_reader_in_an_export_imports_back_and_stays_paused(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    until = datetime(2026, 12, 13, tzinfo=UTC)
    _seed(env, "away@example.com", SubscriberStatus.PAUSED, paused_until=until)
    assert run_cli(monkeypatch, env, "subscribers", "export") == 0
    edited = capsys.readouterr().out.replace(",ai,daily,", ",robotics,weekly,")
    path = tmp_path / "edited.csv"
    path.write_text(edited)
    with time_machine.travel(NOW, tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(path)) == 0
    assert capsys.readouterr().out == "subscribers: 0 added, 1 updated, 0 rejected\n"
    away = _subscribers(env["DIGESTD_DATABASE_URL"])["away@example.com"]
    assert (away.status, away.paused_until) == (SubscriberStatus.PAUSED, until)
    assert away.category_slugs == ["robotics"] and away.wants_weekly and not away.wants_daily
    assert away.next_daily_at is None and away.next_weekly_at is None


def test_a_long_import_commits_chunk_by_chunk_so_readers_are_not_held_up(
    database_url: str,
) -> None:
    """2 500 rows are three chunks. After the first, another connection (a reader's
    one-click unsubscribe, as the web would make it) sees those rows and writes at once:
    the import held SQLite's one write lock, and PostgreSQL's rows, for its whole length
    (an unsubscribe failed after 30 s during a 140 000-row import)."""
    from digestd.readers.importing import ImportContext, import_csv
    from digestd.readers.lifecycle import unsubscribe

    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    rows = "".join(f"r{n}@example.com,ai,daily,UTC\n" for n in range(2500))
    seen: list[int] = []

    def meanwhile() -> None:
        with sessions.begin() as other:
            seen.append(other.scalar(select(func.count()).select_from(Subscriber)) or 0)
            if len(seen) == 1:
                reader = other.scalars(
                    select(Subscriber).where(Subscriber.email == "r7@example.com")
                ).one()
                assert unsubscribe(reader, NOW, via="link")

    ctx = ImportContext(NOW, "import:long.csv", "UTC", time(7), time(8))
    with sessions() as session:

        def commit() -> None:
            session.commit()
            meanwhile()

        report = import_csv(session, io.StringIO(HEADER + rows), ctx, commit=commit)
        session.commit()
    assert report.added == 2500 and seen == [1000, 2000]
    found = _subscribers(database_url)
    assert found["r7@example.com"].status == SubscriberStatus.UNSUBSCRIBED
    engine.dispose()


def test_a_line_that_is_not_utf8_is_that_rows_error(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Latin-1 editor touched one line of a big file: that line is named, the rest go in
    (the whole file was refused, naming no line)."""
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        HEADER.encode() + b"ok@example.com,ai,daily,UTC\n"
        b"ren\xe9@example.com,ai,daily,UTC\n"
        b"also@example.com,ai,daily,Europe/Z\xfcrich\n"
        b"fine@example.com,ai,daily,UTC\n"
    )
    with time_machine.travel(NOW, tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(path)) == 1
    out, err = capsys.readouterr()
    assert "rejected line 3: row: not UTF-8 text (save the file as UTF-8)" in err
    assert "rejected line 4: row: not UTF-8 text" in err
    assert out == "subscribers: 2 added, 0 updated, 2 rejected\n"
    assert sorted(_subscribers(env["DIGESTD_DATABASE_URL"])) == [
        "fine@example.com",
        "ok@example.com",
    ]


@pytest.mark.parametrize("how", ["dash", "dev-stdin"])
def test_a_list_piped_in_is_imported(env: dict[str, str], how: str, tmp_path: Path) -> None:
    """``zcat list.csv.gz | digestd subscribers import -``: the pipe was read to the end
    to size the progress bar, and the import then saw no header ("missing email, ...")."""
    body = (HEADER + "piped@example.com,ai,daily,UTC\n").encode()
    name = "-" if how == "dash" else "/dev/stdin"
    result = run_digestd(env, "subscribers", "import", name, stdin=body)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"subscribers: 1 added, 0 updated, 0 rejected\n"
    reader = _subscribers(env["DIGESTD_DATABASE_URL"])["piped@example.com"]
    assert reader.consent_source == ("import:standard input" if how == "dash" else "import:stdin")


def test_a_file_name_in_another_encoding_is_recorded_not_a_crash(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = os.fsencode(tmp_path) + b"/abonn\xe9s.csv"  # Latin-1, as a Windows share keeps it
    with open(path, "wb") as f:
        f.write((HEADER + "latin@example.com,ai,daily,UTC\n").encode())
    result = run_digestd(env, "subscribers", "import", os.fsdecode(path))
    assert result.returncode == 0, result.stderr
    reader = _subscribers(env["DIGESTD_DATABASE_URL"])["latin@example.com"]
    assert reader.consent_source == "import:abonn\ufffds.csv"


def test_delete_erases_personal_data_and_keeps_only_a_hash(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    assert _import(monkeypatch, env, tmp_path, "erase@example.com,ai,daily,UTC\n") == 0
    assert run_cli(monkeypatch, env, "subscribers", "delete", "Erase@Example.com") == 0
    assert _subscribers(env["DIGESTD_DATABASE_URL"]) == {}
    engine = make_engine(env["DIGESTD_DATABASE_URL"])
    with make_sessions(engine)() as session:
        hashes = list(session.scalars(select(Suppression.email_hash)))
        assert hashes == [email_hash("erase@example.com")]
        assert "erase" not in hashes[0]
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
    engine.dispose()


def test_delete_says_whether_there_was_anyone_to_erase(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _import(monkeypatch, env, tmp_path, "here@example.com,ai,daily,UTC\n") == 0
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "subscribers", "delete", "here@example.com") == 0
    assert capsys.readouterr().out.startswith("erased: personal data removed;")
    assert run_cli(monkeypatch, env, "subscribers", "delete", "never@example.com") == 0
    assert capsys.readouterr().out == (
        "no subscriber never@example.com; the address is suppressed (kept only as a hash)\n"
    )


def test_delete_with_a_malformed_address_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, env, "subscribers", "delete", "nobody") == 2
    assert "email:" in capsys.readouterr().err


# Pieces addresses are made of, ordinary and not: what email-validator refuses (quoted and
# over-long local parts, special-use and numeric top-level domains, bad hyphens, punycode
# that does not decode) as much as what it accepts (IDNA, upper case, +tags).
_LOCALS = st.sampled_from(
    ["ann", "Ann.Lee", "a+tag", "o'neil", "x" * 64, "x" * 65, "a..b", ".a", "a.", '"q"', "é",
     "a b", "!#$%&'*+/=?^_`{|}~-", ""]
)  # fmt: skip
_DOMAINS = st.sampled_from(
    ["example.com", "Example.COM", "mail.example.org", "xn--bcher-kva.example", "bücher.example",
     "localhost", "host.test", "a.invalid", "example", "1.2.3.4", "[127.0.0.1]", "-a.com",
     "a-.com", "a--b.com", "xn--zz.com", "a.123", "ex_ample.com", f"{'l' * 64}.com",
     f"{'l' * 63}." * 4 + "com", "example.com.", ""]
)  # fmt: skip


@settings(max_examples=600, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(local=_LOCALS, domain=_DOMAINS, space=st.sampled_from(["", " ", "\t"]))
def test_bulk_address_checks_agree_with_normalise_email(
    local: str, domain: str, space: str
) -> None:
    """The importer's per-domain cache gives normalise_email's answer, valid or not."""
    raw = f"{space}{local}@{domain}{space}"
    try:
        expected: str | None = normalise_email(raw)
    except ValidationError:
        expected = None
    addresses = Addresses()
    for _ in range(2):  # the second time from the cache
        try:
            got: str | None = addresses.normalise(raw)
        except ValidationError:
            got = None
        assert got == expected, raw


def test_an_address_signed_up_during_the_import_is_left_to_that_signup(
    database_url: str,
) -> None:
    """Between the import's lookup and its insert someone signs up with a row's address:
    the insert skips it (no IntegrityError aborting the import) and reports that line."""
    from digestd.readers.importing import ImportContext, ImportReport, _Writer

    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    prefs = parse_preferences("ai", "daily", "UTC", "UTC")
    with sessions.begin() as session:  # the signup, committed after the import looked
        session.add(new_subscriber("raced@example.com", prefs, SubscriberStatus.PENDING))
    ctx = ImportContext(NOW, "import:race.csv", "UTC", time(7), time(8))
    report = ImportReport()
    with sessions.begin() as session:
        _Writer(session, ctx, report)._insert(
            [(2, "raced@example.com", prefs, ""), (3, "calm@example.com", prefs, "")]
        )
    assert report.added == 1
    assert [str(e) for e in report.errors] == [
        "line 2: email: was added by someone else during the import; import it again"
    ]
    found = _subscribers(database_url)
    assert found["raced@example.com"].status == SubscriberStatus.PENDING  # untouched
    assert found["calm@example.com"].category_slugs == ["ai"]
    engine.dispose()


def test_two_imports_of_one_list_in_opposite_orders_do_not_deadlock(
    database_url: str,
) -> None:
    """The page and the command line importing the same readers at once, the rows in
    opposite orders: each locked them in its file's order, and PostgreSQL ended one import
    with "deadlock detected"; or both read a reader's categories before either wrote, and
    the second adding the same one ended with a duplicate key. Now the rows are locked, in
    the order of their ids, before they are read. The race is made certain: a third
    session holds y's row until both imports wait."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks: SQLite has one writer at a time")
    import threading
    import time as clock

    from sqlalchemy import text

    from digestd.readers.importing import ImportContext, ImportReport, import_csv

    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    prefs = parse_preferences("ai", "daily", "UTC", "UTC")
    with sessions.begin() as session:
        for email in ("x@example.com", "y@example.com"):  # x has the lower id
            session.add(new_subscriber(email, prefs, SubscriberStatus.ACTIVE))
    ctx = ImportContext(NOW, "import:race.csv", "UTC", time(7), time(8))
    header = "email,categories,frequency,timezone\n"
    reports: dict[str, ImportReport] = {}
    failures: list[BaseException] = []

    def run(name: str, order: list[str]) -> None:
        rows = "".join(f"{email},robotics,weekly,UTC\n" for email in order)
        try:
            with sessions() as session:
                reports[name] = import_csv(session, io.StringIO(header + rows), ctx)
                session.commit()
        except BaseException as exc:  # a deadlock or a duplicate key, before
            failures.append(exc)

    def waiting(count: int) -> None:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        for _ in range(500):
            with engine.connect() as connection:
                if connection.execute(text(query)).scalar() == count:
                    return
            clock.sleep(0.01)
        raise AssertionError(f"{count} sessions never waited for a lock")

    holder = engine.connect()
    holding = holder.begin()
    holder.execute(text("SELECT id FROM subscribers WHERE email = 'y@example.com' FOR UPDATE"))
    first = threading.Thread(target=run, args=("first", ["y@example.com", "x@example.com"]))
    first.start()
    waiting(1)
    second = threading.Thread(target=run, args=("second", ["x@example.com", "y@example.com"]))
    second.start()
    waiting(2)
    holding.commit()
    holder.close()
    first.join(30)
    second.join(30)
    assert failures == []
    assert {name: r.updated for name, r in reports.items()} == {"first": 2, "second": 2}
    assert {s.category_slugs[0] for s in _subscribers(database_url).values()} == {"robotics"}
    engine.dispose()
