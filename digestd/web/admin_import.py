"""``/admin/import``: a subscriber CSV uploaded from the page and imported in a thread of
its own (the CLI's import, :func:`~digestd.readers.importing.import_csv`), with a page
that follows its progress and then shows its per-line report.

An import is committed a chunk at a time (the readers' own changes and the sending are
not held up behind it); a file refused whole (a wrong header, not UTF-8) imports nothing.
Its progress lives in the process that runs it (the page reloads itself while it runs),
one import at a time; once finished it is in the import history
(:mod:`digestd.readers.import_history`), which the page lists with the command line's
imports, the same in every process.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from digestd.content.categories import CATEGORIES
from digestd.errors import InputError
from digestd.models import SubscriberImport
from digestd.readers import import_history as history
from digestd.readers.importing import ImportContext, ImportReport, import_csv
from digestd.web import params
from digestd.web.admin_auth import audit
from digestd.web.admin_pages import REFRESH_SECONDS, operator, page
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError

log = logging.getLogger("digestd.admin")
KEPT = 10  # imports this process ran, kept in memory (the history has the finished ones)
CHANNELS = {history.Channel.ADMIN: "admin page", history.Channel.CLI: "command line"}


@dataclass
class ImportJob:
    id: str
    name: str  # the uploaded file's name
    lines: int  # data lines in the file (without the header)
    started_at: datetime
    read: int = 0  # data lines read so far
    finished_at: datetime | None = None
    report: ImportReport | None = None
    problem: str | None = None  # why the file was refused as a whole
    record: SubscriberImport | None = None  # as the history has it, once finished
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def percent(self) -> int:
        return 100 if self.finished_at else min(99, self.read * 100 // max(1, self.lines))


def jobs(request: Request) -> dict[str, ImportJob]:
    """This process's imports, oldest first."""
    state = request.app.state
    if not hasattr(state, "admin_imports"):
        state.admin_imports = {}
    found: dict[str, ImportJob] = state.admin_imports
    return found


@operator
async def import_page(request: Request) -> Response:
    params.only(request)
    w = web(request)
    running = [job for job in reversed(jobs(request).values()) if job.finished_at is None]
    context = {
        "title": "Import subscribers",
        "categories": CATEGORIES,
        "running": running,
        "imports": await w.db(_recent, w),
        "channels": CHANNELS,
        "kept": history.KEPT,
        "refresh": REFRESH_SECONDS if running else 0,
    }
    return page(request, "admin_import.html", "subscribers", context)


def _recent(w: Web) -> list[SubscriberImport]:
    with w.sessions() as session:
        return history.recent(session)


@operator
async def start_import(request: Request) -> Response:
    w = web(request)
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=4096)
    except HTTPException as exc:  # Starlette's wrapper of python-multipart's errors
        raise WebError(400, f"The form data could not be read: {exc.detail}") from exc
    try:
        token = form.get(CSRF_FIELD)
        w.csrf.check(request, token if isinstance(token, str) else None, "admin-import", "-")
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise WebError(400, "file: choose a CSV file to import", field="file")
        try:
            text = (await upload.read()).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise WebError(
                400, "file: not UTF-8 text (save the CSV as UTF-8)", field="file"
            ) from exc
        name = upload.filename[:120]
    finally:
        await form.close()
    registry = jobs(request)
    if any(job.finished_at is None for job in registry.values()):
        raise WebError(409, "An import is running: wait for it to finish, then import again.")
    # Lines as the import reads them: \r\n, \n and a lone \r each end one.
    lines = sum(1 for _ in io.StringIO(text, newline="")) - 1
    job = ImportJob(history.new_id(), name, max(0, lines), w.clock())
    registry[job.id] = job
    for old in list(registry)[:-KEPT]:
        del registry[old]
    audit(request, "page.subscribers.import", "started", lines=job.lines)
    threading.Thread(target=_run, args=(w, job, text), name="admin-import", daemon=True).start()
    return RedirectResponse(f"/admin/import/{job.id}", status_code=303)


def _run(w: Web, job: ImportJob, text: str) -> None:
    settings = w.settings
    ctx = ImportContext(
        now=job.started_at,
        source=f"import:{job.name} (admin page)",
        default_timezone=settings.default_timezone,
        daily_at=settings.daily_time,
        weekly_at=settings.weekly_time,
    )

    def advance(lines: int) -> None:
        job.read += lines

    try:
        with w.sessions() as session:
            stream = io.StringIO(text, newline="")
            job.report = import_csv(session, stream, ctx, advance, commit=session.commit)
            session.commit()
    except InputError as exc:
        job.problem = str(exc)
    except csv.Error as exc:
        job.problem = f"not valid CSV: {exc}"
    except SQLAlchemyError as exc:
        log.error("admin import of %s failed", job.name, exc_info=exc)
        job.problem = f"the database refused the import ({type(exc).__name__}); {history.PARTLY}"
    except Exception as exc:  # the thread's last word
        # Left to the thread, it went to stderr as a bare traceback: past the log format
        # (json, logfmt) and past the redaction of addresses and tokens.
        log.error("admin import of %s failed", job.name, exc_info=exc)
        job.problem = f"stopped by an unexpected error (see the log); {history.PARTLY}"
    finally:
        at = w.clock()
        _remember(w, job, at)
        job.finished_at = at  # after the record: a finished job's page shows that
        report = job.report
        extra = (
            {
                "added": report.added,
                "updated": report.updated,
                "unsubscribed": report.unsubscribed,
                "rejected": len(report.errors),
            }
            if report
            else {}
        )
        log.info(
            "admin",
            extra={
                "action": "page.subscribers.import",
                "outcome": "refused" if job.problem else "ok",
                **extra,
            },
        )
        job.finished.set()


def _remember(w: Web, job: ImportJob, at: datetime) -> None:
    """Put the finished import in the history; this process's page shows it from memory
    should the database refuse it (the import itself stands)."""
    channel = history.Channel.ADMIN
    done = history.Finished(
        job.id, job.name, channel, job.started_at, at, job.read, job.report, job.problem
    )
    job.record = history.entry(done)
    try:
        with w.sessions.begin() as session:
            history.record(session, job.record)
    except SQLAlchemyError as exc:
        log.error("the admin import of %s is not in the import history", job.name, exc_info=exc)


@operator
async def import_status(request: Request) -> Response:
    """A running import's progress; a finished one's report, from the history."""
    params.only(request)
    w = web(request)
    wanted = str(request.path_params["job"])
    job = jobs(request).get(wanted)
    if job is not None and job.finished_at is None:
        running = {"title": f"Import of {job.name}", "job": job, "record": None, "refresh": 2}
        return page(request, "admin_import_job.html", "subscribers", running)
    record = job.record if job is not None else await w.db(_find, w, wanted)
    if record is None:
        raise WebError(404, f"No such import: the page keeps the last {history.KEPT}.")
    context: dict[str, Any] = {
        "title": f"Import of {record.file_name}",
        "job": None,
        "record": record,
        "channels": CHANNELS,
        "partly": history.PARTLY,
        "refresh": 0,
    }
    return page(request, "admin_import_job.html", "subscribers", context)


def _find(w: Web, import_id: str) -> SubscriberImport | None:
    with w.sessions() as session:
        return history.find(session, import_id)


ROUTES = [
    Route("/admin/import", import_page, methods=["GET"]),
    Route("/admin/import", start_import, methods=["POST"]),
    Route("/admin/import/{job}", import_status, methods=["GET"]),
]
