"""A subscriber CSV imported from ``/admin/import``: uploaded, imported in a thread by the
CLI's import, followed on a page that ends with the per-line report. The stored readers
are checked after each import; a refused file imports nothing."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import time_machine
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.models import Subscriber, SubscriberStatus
from digestd.service import Service
from digestd.web import admin_import
from digestd.web.admin_import import ImportJob
from tests.admin_client import form_csrf, sign_in
from tests.admin_seed import reader
from tests.conftest import WebRig, app_client
from tests.helpers import run_cli
from tests.web_helpers import text_of

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)
GOOD_AND_BAD = (
    "email,categories,frequency,timezone\n"
    "new1@example.com,ai,daily,Europe/Paris\n"
    "not-an-address,ai,daily,UTC\n"
    'new2@example.com,"ai,quantum",both,\n'
    "gone@example.com,ai,daily,UTC\n"
    "new3@example.com,cooking,daily,UTC\n"
)


def _upload(web: WebRig, content: bytes, name: str = "list.csv") -> httpx.Response:
    page = web.client.get("/admin/import")
    answer: httpx.Response = web.client.post(
        "/admin/import",
        data={"csrf": form_csrf(page.text, "/admin/import")},
        files={"file": (name, content, "text/csv")},
    )
    return answer


def _finished(web: WebRig, location: str) -> ImportJob:
    job_id = location.rsplit("/", 1)[1]
    job: ImportJob = web.client.app.state.admin_imports[job_id]  # type: ignore[attr-defined]
    assert job.finished.wait(30), "the import did not finish"
    return job


def test_an_import_runs_in_the_background_and_reports_each_bad_line(web: WebRig) -> None:
    with web.service.sessions.begin() as session:
        reader(session, "gone@example.com", status=SubscriberStatus.UNSUBSCRIBED, created_at=NOW)
    with time_machine.travel(NOW, tick=False):
        sign_in(web.client)
        answer = _upload(web, GOOD_AND_BAD.encode(), "spring list.csv")
        assert answer.status_code == 303
        job = _finished(web, answer.headers["location"])
        report = web.client.get(answer.headers["location"])
        listed = text_of(web.client.get("/admin/import").text)
    assert job.problem is None and job.lines == 5
    new1 = web.subscriber("new1@example.com")
    assert new1 is not None and new1.status == SubscriberStatus.ACTIVE
    assert new1.consent_source == "import:spring list.csv (admin page)" and new1.consent_at == NOW
    assert new1.timezone == "Europe/Paris" and new1.next_daily_at is not None
    new2 = web.subscriber("new2@example.com")
    assert new2 is not None and sorted(new2.category_slugs) == ["ai", "quantum"]
    assert web.subscriber("new3@example.com") is None
    assert web.status("gone@example.com") == SubscriberStatus.UNSUBSCRIBED
    words = text_of(report.text)
    assert "Done: 5 lines read" in words
    assert "Added 2 Updated 0 Rejected 3" in words
    rows = re.findall(r'<tr><td class="num">(\d+)</td><td>(\w+)</td>', report.text)
    assert rows == [("3", "email"), ("5", "email"), ("6", "categories")]
    assert "<script" not in report.text  # finished: no more reloading
    assert "spring list.csv" in listed and "done 2 0 3" in listed
    # Before choosing a file the operator reads what happens to readers already on the list.
    assert "Readers already on the list take the file's topics, frequency and timezone" in listed


def test_the_page_says_how_to_write_several_categories_and_reads_semicolons(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False):
        sign_in(web.client)
        page = text_of(web.client.get("/admin/import").text)
        listing = "email,categories,frequency,timezone\nsemi@example.com,ai;quantum,daily,UTC\n"
        answer = _upload(web, listing.encode())
        job = _finished(web, answer.headers["location"])
    assert "separate several with commas, the cell in quotes" in page
    assert "or with semicolons or |" in page
    assert "fintech (FinTech)" in page  # the slugs are listed
    assert job.report is not None and job.report.errors == []
    semi = web.subscriber("semi@example.com")
    assert semi is not None and semi.category_slugs == ["ai", "quantum"]


def test_a_row_marked_unsubscribed_unsubscribes_its_reader_and_is_counted(web: WebRig) -> None:
    with web.service.sessions.begin() as session:
        reader(session, "leaving@example.com", created_at=NOW)
    edited = "email,categories,frequency,timezone,status\n"
    edited += "leaving@example.com,ai,daily,UTC,unsubscribed\n"
    with time_machine.travel(NOW, tick=False):
        sign_in(web.client)
        answer = _upload(web, edited.encode())
        _finished(web, answer.headers["location"])
        words = text_of(web.client.get(answer.headers["location"]).text)
    assert "Added 0 Updated 0 Unsubscribed 1 Rejected 0" in words
    assert web.status("leaving@example.com") == SubscriberStatus.UNSUBSCRIBED


@pytest.mark.parametrize("line_end", ["\r\n", "\r"])
def test_the_lines_are_counted_as_the_import_reads_them(web: WebRig, line_end: str) -> None:
    """A spreadsheet's CRLF or an old Mac's lone CR: the total the progress is shown against
    is the lines read (it was "2 of 0 lines" for a lone CR)."""
    sign_in(web.client)
    answer = _upload(web, GOOD_AND_BAD.replace("\n", line_end).encode())
    job = _finished(web, answer.headers["location"])
    assert (job.lines, job.read) == (5, 5)
    assert job.report is not None and [e.line for e in job.report.errors] == [3, 6]


def test_a_file_with_the_wrong_header_imports_nothing(web: WebRig) -> None:
    sign_in(web.client)
    answer = _upload(web, b"mail,topics\nnew@example.com,ai\n")
    job = _finished(web, answer.headers["location"])
    assert job.problem is not None and "missing" in job.problem
    assert web.count(Subscriber) == 0
    page = text_of(web.client.get(answer.headers["location"]).text)
    assert "The file was refused, nothing was imported: the CSV header must be" in page


@pytest.mark.parametrize(
    ("content", "name", "field"),
    [(b"\xff\xfeemail\n", "utf16.csv", "file"), (b"", "", "file")],
)
def test_an_unreadable_upload_is_a_400_naming_the_file(
    web: WebRig, content: bytes, name: str, field: str
) -> None:
    sign_in(web.client)
    answer = _upload(web, content, name)
    assert answer.status_code == 400 and f"{field}:" in text_of(answer.text)
    assert not getattr(web.client.app.state, "admin_imports", {})  # type: ignore[attr-defined]


def test_the_upload_needs_a_session_and_the_forms_token(web: WebRig) -> None:
    files = {"file": ("list.csv", GOOD_AND_BAD.encode(), "text/csv")}
    assert web.client.post("/admin/import", files=files).status_code == 401
    sign_in(web.client)
    assert web.client.post("/admin/import", files=files).status_code == 403
    assert web.client.post("/admin/import", data={"csrf": "x"}, files=files).status_code == 403
    assert web.count(Subscriber) == 0


def test_a_large_file_fits_under_the_upload_limit(web: WebRig) -> None:
    """Beyond the 64 KB of a page's form: 3 000 lines (~120 KB)."""
    lines = ["email,categories,frequency,timezone"] + [
        f"bulk{i:05d}@example.com,ai,daily,UTC" for i in range(3_000)
    ]
    sign_in(web.client)
    answer = _upload(web, ("\n".join(lines) + "\n").encode())
    assert answer.status_code == 303
    job = _finished(web, answer.headers["location"])
    assert job.report is not None and job.report.added == 3_000 and job.read == 3_000
    assert web.count(Subscriber) == 3_000


@contextmanager
def _restarted(web_env: dict[str, str]) -> Iterator[TestClient]:
    """Another digestd on the same database, as after a restart: nothing in its memory."""
    service = Service.build(load_settings(web_env))
    with app_client(service) as client:
        yield client
        assert client.portal is not None
        client.portal.call(service.transport.close)
    service.engine.dispose()


def test_imports_from_the_page_and_the_command_line_are_listed_by_every_process(
    web: WebRig, web_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli_file = tmp_path / "from the shell.csv"
    cli_file.write_text("email,categories,frequency,timezone\ncli@example.com,ai,daily,UTC\n")
    with time_machine.travel(NOW, tick=False):
        sign_in(web.client)
        answer = _upload(web, GOOD_AND_BAD.encode(), "spring list.csv")
        _finished(web, answer.headers["location"])
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        assert run_cli(monkeypatch, web_env, "subscribers", "import", str(cli_file)) == 0
        with _restarted(web_env) as other:
            sign_in(other)
            listed = text_of(other.get("/admin/import").text)
            report = other.get(answer.headers["location"])
    assert "Recent imports The last 50, from this page and from digestd" in listed
    assert "in this process" not in listed
    assert "from the shell.csv command line 2026-11-29 09:35 UTC done 1 0 0" in listed
    assert "spring list.csv admin page 2026-11-29 09:30 UTC done 3 0 2" in listed
    assert listed.index("from the shell.csv") < listed.index("spring list.csv")  # newest first
    words = text_of(report.text)
    assert "Done: 5 lines read" in words and "From the admin page" in words
    assert "Added 3 Updated 0 Rejected 2" in words
    rows = re.findall(r'<tr><td class="num">(\d+)</td><td>(\w+)</td>', report.text)
    assert rows == [("3", "email"), ("6", "categories")]
    assert "not-an-address" not in report.text  # the file's values are left out
    assert "is not a valid address" in words and "unknown category …" in words


def test_an_import_no_process_knows_is_a_404(web: WebRig) -> None:
    sign_in(web.client)
    answer = web.client.get("/admin/import/no-such-import")
    assert answer.status_code == 404
    assert "No such import: the page keeps the last 50" in text_of(answer.text)


def test_an_import_the_database_stops_does_not_say_nothing_was_imported(
    web: WebRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are committed as they go: one the database refused partway may have imported
    its first rows, and the report says so instead of "nothing was imported"."""

    def refused(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(admin_import, "import_csv", refused)
    sign_in(web.client)
    answer = _upload(web, GOOD_AND_BAD.encode())
    _finished(web, answer.headers["location"])
    words = text_of(web.client.get(answer.headers["location"]).text)
    assert "The import stopped before the end: the database refused the import" in words
    assert "rows before it may have been imported" in words
    assert "nothing was imported" not in words


def test_an_unexpected_error_in_the_import_is_logged_not_printed(
    web: WebRig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the log (its format, its redaction), not as the thread's bare traceback on
    stderr; the page says the import stopped."""
    unhandled: list[object] = []
    monkeypatch.setattr(threading, "excepthook", unhandled.append)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("row of ann@example.com")

    monkeypatch.setattr(admin_import, "import_csv", broken)
    sign_in(web.client)
    answer = _upload(web, GOOD_AND_BAD.encode())
    _finished(web, answer.headers["location"])
    assert unhandled == []
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("admin import of")]
    assert logged.levelname == "ERROR" and logged.exc_info is not None
    words = text_of(web.client.get(answer.headers["location"]).text)
    assert "The import stopped before the end: stopped by an unexpected error" in words


def test_a_one_line_import_reads_one_line(web: WebRig) -> None:
    sign_in(web.client)
    answer = _upload(web, b"email,categories,frequency,timezone\nsolo@example.com,ai,daily,UTC\n")
    _finished(web, answer.headers["location"])
    words = text_of(web.client.get(answer.headers["location"]).text)
    assert "Done: 1 line read" in words


@pytest.mark.parametrize(
    "wanted", ["%00nul", "x" * 5000, "%F0%9F%9A%80"], ids=["nul", "long", "emoji"]
)
def test_an_import_id_no_import_has_is_a_404_whatever_it_holds(web: WebRig, wanted: str) -> None:
    sign_in(web.client)
    assert web.client.get(f"/admin/import/{wanted}").status_code == 404
    assert web.client.head(f"/admin/import/{wanted}").status_code == 404
