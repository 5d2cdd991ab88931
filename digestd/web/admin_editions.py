"""``/admin/editions``: every edition (kind, local date) with its queue rows and what it sold
(clicks, unique clickers, click-through: :mod:`digestd.ops.engagement`), the week's top
stories; one edition's report with its stories and its digests, each digest as it was
stored (like "view in browser", without anyone's links). The pages reload themselves while
an edition still has rows to send. The tools (a reader's next edition, a test send, "send
now") are :mod:`digestd.web.admin_sending`'s; the list page carries their forms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from digestd.content.categories import CATEGORIES
from digestd.mail.digests import shown_template
from digestd.mail.template import MessageTemplate
from digestd.models import EditionKind
from digestd.ops import engagement
from digestd.ops.edition_report import EditionReport, EditionRow, editions, report
from digestd.ops.engagement import TOP_STORIES, EditionStats, StoryStats
from digestd.web import params
from digestd.web.admin_pages import REFRESH_SECONDS, operator, page, refusal
from digestd.web.context import Web, web
from digestd.web.errors import WebError
from digestd.web.view import VIEW_CSP, as_web_page, subject_of

PAGE = 30
# What the sending tools' forms hold before anything is typed.
TYPED = {"form": "", "kind": "daily", "email": "", "to": "", "categories": "", "emails": ""}
# Said on the answer to the test form itself, naming where it went: a redirect would carry
# the address in its URL, into access logs.
TESTED = (
    "Test message sent to {to} and accepted by the mail server (articles in it: {n}). No "
    "reader's edition was used: every reader still gets theirs at their send time."
)
NOTICES = {
    "triggered": "Queued: {queued} (sent at the daemon's next tick). Already had this "
    "edition: {already}. Left for their own send time today: {later}. Nothing new to send: "
    "{empty}. Could not be rendered (recorded as failed): {failed}. Addresses that are not "
    "active readers of this edition: {ineligible}.",
    # Every count 0 said as zeros left the operator guessing: nobody takes this edition.
    "triggered-nobody": "Nothing queued: no active reader takes this edition.",
}
# The tools' fields by the id of their input ("form-field"), as the forms label them.
FIELDS = {
    "preview-email": "Reader's address",
    "preview-kind": "Edition",
    "test-to": "Send to",
    "test-kind": "Edition",
    "test-categories": "Categories",
    "trigger-kind": "Edition",
    "trigger-emails": "Addresses",
    "trigger-everyone": "Every active reader",
}
COUNTS = ("n", "queued", "already", "later", "empty", "failed", "ineligible")
ADMIN_COPY = (
    "An operator's copy of this digest: the links each reader's email carried "
    "(unsubscribe, preferences, view in browser) are left out."
)


@operator
async def list_page(request: Request) -> Response:
    params.only(request, "cursor", "done", *COUNTS)
    return await editions_page(request)


async def editions_page(
    request: Request,
    *,
    error: str | None = None,
    field: str | None = None,
    typed: Mapping[str, str] | None = None,
    status: int = 200,
    notice: str | None = None,
    not_queued: Sequence[Mapping[str, str]] = (),
) -> Response:
    """The list with the sending tools' forms; ``error``, ``field`` and ``typed``: a refused
    form, shown again with what the operator typed, the error on the field it is about (the
    form's own name of it, "email": the form is ``typed["form"]``); ``notice`` and
    ``not_queued``: what "send now" did, and each address it left out with why."""
    w = web(request)
    cursors = params.Cursors(w.tokens)
    after = cursors.load_id(request, "admin-editions") if request.method == "GET" else None
    rows, sold, top = await w.db(_editions, w, after, w.clock())
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    context: dict[str, Any] = {
        "title": "Editions",
        "rows": rows,
        "sold": sold,  # edition id -> its clicks (ops.engagement)
        "top": top if after is None else [],
        "tracking": w.settings.track_clicks,
        "next_cursor": cursors.dump("admin-editions", [rows[-1].id]) if more else None,
        "first_page": after is None,
        "categories": CATEGORIES,
        "kinds": [str(k) for k in EditionKind],
        "typed": {**TYPED, **(typed or {})},
        "refresh": REFRESH_SECONDS if any(r.waiting for r in rows) and not error else 0,
        "not_queued": not_queued,
    }
    if error is not None:
        key = f"{context['typed']['form']}-{field}" if field else None
        context["error"], context["error_field"] = refusal(FIELDS, key, _problem(error, field))
    if notice is not None:
        context["notice"] = notice
    return page(request, "admin_editions.html", "editions", context, notices=NOTICES, status=status)


def _problem(error: str, field: str | None) -> str:
    """The API's message without its field name: "emails[1]: …" says "address 2: …"."""
    if field is None:
        return error
    found = re.match(rf"{re.escape(field)}(?:\[(\d+)\])?: ", error)
    if found is None:
        return error
    at = f"address {int(found[1]) + 1}: " if found[1] is not None else ""
    return at + error[found.end() :]


def _editions(
    w: Web, before: int | None, now: datetime
) -> tuple[list[EditionRow], dict[int, EditionStats], list[StoryStats]]:
    """A page of editions, what each sold, and the week's top stories."""
    with w.sessions() as session:
        rows = editions(session, PAGE + 1, before)
        sold = {s.id: s for s in engagement.editions(session, [r.id for r in rows[:PAGE]])}
        return rows, sold, engagement.top_stories(session, now, 7, TOP_STORIES)


@operator
async def edition_page(request: Request) -> Response:
    w = web(request)
    params.only(request)
    found, sold = await w.db(_report, w, int(request.path_params["edition"]))
    if found is None or sold is None:
        raise WebError(404, "There is no such edition.")
    e = found.edition
    context: dict[str, Any] = {
        "title": f"{e.kind.capitalize()} of {e.period}",
        "report": found,
        "sold": sold,
        "tracking": w.settings.track_clicks,
        "e": e,
        "refresh": REFRESH_SECONDS if e.waiting else 0,
    }
    return page(request, "admin_edition.html", "editions", context)


def _report(w: Web, edition_id: int) -> tuple[EditionReport | None, EditionStats | None]:
    with w.sessions() as session:
        return report(session, edition_id), engagement.edition(session, edition_id)


@operator
async def digest_page(request: Request) -> Response:
    w = web(request)
    params.only(request)
    html = await w.db(_digest_html, w, int(request.path_params["digest"]))
    if html is None:
        raise WebError(404, "There is no such digest, or it could not be rendered.")
    response = HTMLResponse(html)
    # The stored email: no script at all, images from the articles' hosts.
    response.headers["Content-Security-Policy"] = VIEW_CSP
    return response


def _digest_html(w: Web, digest_id: int) -> str | None:
    with w.sessions() as session:
        template = shown_template(session, w.service.renderer, digest_id)
    if template is None:
        return None
    return admin_copy(w, template)


def admin_copy(w: Web, template: MessageTemplate) -> str:
    """A digest's HTML for an operator: nobody's links (the reader's own are left out),
    titled as a preview of this site's, not as the reader's email."""
    page = template.html(_NO_LINKS, personal=ADMIN_COPY)
    subject = subject_of(page)
    title = f"Preview · {subject} · {w.settings.site_name}"
    return as_web_page(page, title, f"Preview: {subject}")


class _NoLinks(dict[str, str]):
    """Links of nobody: any link a digest still carries outside its personal stretch."""

    def __missing__(self, name: str) -> str:
        return "#"


_NO_LINKS = _NoLinks()


ROUTES = [
    Route("/admin/editions", list_page, methods=["GET"]),
    Route("/admin/editions/{edition:id}", edition_page, methods=["GET"]),
    Route("/admin/digests/{digest:id}", digest_page, methods=["GET"]),
]
