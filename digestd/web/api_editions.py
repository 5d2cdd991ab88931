"""The admin API's view of the sending side: stats, edition preview and "send now".
Registered in ``api.ENDPOINTS``, so the bearer-token guard covers every one."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from digestd.content.categories import parse_categories
from digestd.errors import ValidationError
from digestd.models import EditionKind
from digestd.ops.activity import snapshot, utc_iso
from digestd.ops.preview import preview
from digestd.planning.triggers import trigger
from digestd.readers.subscribers import normalise_email
from digestd.web import params
from digestd.web.context import Web, web
from digestd.web.errors import WebError

KINDS = [str(k) for k in EditionKind]
MAX_TRIGGER_EMAILS = 1000
# The preview is article text from elsewhere shown on our origin: no script, no forms.
PREVIEW_CSP = "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'"


async def stats(request: Request) -> Response:
    w = web(request)
    params.only(request)
    now = w.clock()
    current = await w.db(_snapshot, w)
    return JSONResponse({"as_of": utc_iso(now), **current})


def _snapshot(w: Web) -> dict[str, Any]:
    with w.sessions() as session:
        return snapshot(session).as_json()


async def preview_edition(request: Request) -> Response:
    w = web(request)
    params.only(request, "kind", "categories", "now", "format")
    kind = params.choice(request, "kind", KINDS)
    if kind is None:
        raise WebError(400, "kind: required, daily or weekly", field="kind")
    raw = params.text(request, "categories", 2000)
    try:
        categories = parse_categories(raw or "")
    except ValidationError as exc:
        raise WebError(400, f"categories: {exc.problem}", field="categories") from exc
    now = params.instant(request, "now") or w.clock()
    fmt = params.choice(request, "format", ["html", "text"], default="html") or "html"
    data = await w.db(preview, w.service, EditionKind(kind), categories, now, fmt)
    if data is None:
        raise WebError(
            404, "Nothing to send: no articles in those categories in the edition's window."
        )
    if fmt == "text":
        return Response(data, media_type="text/plain; charset=utf-8")
    return Response(
        data,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": PREVIEW_CSP},
    )


async def trigger_edition(request: Request) -> Response:
    """Queue an edition now for some or all active readers of that kind; the daemon's next
    tick sends it. Still one per reader per local date (week): a second trigger queues
    nothing for readers who already have it."""
    w = web(request)
    body = await params.json_body(request)
    if not isinstance(body, dict):
        raise WebError(400, "The body must be a JSON object.")
    kind = body.get("kind")
    if kind not in KINDS:
        raise WebError(400, "kind: required, daily or weekly", field="kind")
    emails = _trigger_emails(body)
    service = w.service
    report = await w.db(
        trigger, w.sessions, service.policy, service.renderer, EditionKind(kind), emails, w.clock()
    )
    request.state.audit = {"kind": kind, "queued": report.queued}
    return JSONResponse(report.as_json())


def _trigger_emails(body: dict[str, Any]) -> list[str] | None:
    """The normalised addresses asked for, or None for every active reader."""
    has_emails, everyone = "emails" in body, body.get("all")
    if everyone not in (None, True, False):
        raise WebError(400, "all: must be true or false", field="all")
    if has_emails == bool(everyone):
        raise WebError(400, 'Send either "emails": [...] or "all": true.', field="emails")
    if everyone:
        return None
    raw = body["emails"]
    if not isinstance(raw, list) or not raw:
        raise WebError(400, "emails: must be a non-empty list of addresses", field="emails")
    if len(raw) > MAX_TRIGGER_EMAILS:
        raise WebError(
            400, f'emails: at most {MAX_TRIGGER_EMAILS}; use "all": true', field="emails"
        )
    emails: list[str] = []
    for position, item in enumerate(raw):
        try:
            emails.append(normalise_email(item))
        except ValidationError as exc:
            raise WebError(400, f"emails[{position}]: {exc.problem}", field="emails") from exc
    return list(dict.fromkeys(emails))
