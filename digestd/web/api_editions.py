"""The admin API's view of the sending side: stats, edition preview, "send now" and a
test send to one address.
Registered in ``api.ENDPOINTS``, so the bearer-token guard covers every one."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from digestd.content.categories import parse_categories
from digestd.errors import DeliveryError, ValidationError
from digestd.models import EditionKind
from digestd.ops.activity import snapshot, utc_iso
from digestd.ops.preview import preview
from digestd.ops.test_send import TestSent, send_test
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
    body = _object(await params.json_body(request), "kind", "emails", "all")
    kind = body.get("kind")
    if kind not in KINDS:
        raise WebError(400, "kind: required, daily or weekly", field="kind")
    emails = trigger_emails(body)
    service = w.service
    report = await w.db(
        trigger, w.sessions, service.policy, service.renderer, EditionKind(kind), emails, w.clock()
    )
    request.state.audit = {"kind": kind, "queued": report.queued}
    return JSONResponse(report.as_json())


def _object(body: Any, *fields: str) -> dict[str, Any]:
    """A JSON object of these fields only: a misspelt or unknown one ("dry_run") is refused,
    never ignored, where ignoring it could send mail."""
    if not isinstance(body, dict):
        raise WebError(400, "The body must be a JSON object.")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        name = str(unknown[0])[:40]
        raise WebError(400, f"{name}: unknown field; send {', '.join(fields)}", field=name)
    return body


def trigger_emails(body: dict[str, Any]) -> list[str] | None:
    """The normalised addresses asked for, or None for every active reader."""
    has_emails, everyone = "emails" in body, body.get("all")
    if everyone is not None and not isinstance(everyone, bool):  # 1 == True in Python
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


async def test_edition(request: Request) -> Response:
    """Mail today's edition for some categories to one address, using up nobody's edition
    (:mod:`digestd.ops.test_send`)."""
    w = web(request)
    body = _object(await params.json_body(request), "kind", "to", "categories")
    kind = body.get("kind")
    if kind not in KINDS:
        raise WebError(400, "kind: required, daily or weekly", field="kind")
    raw_categories = body.get("categories", "all")
    if not isinstance(raw_categories, (str, list)):
        raise WebError(
            400, "categories: a list of slugs or a comma-separated string", field="categories"
        )
    raw_to = body.get("to")
    if not isinstance(raw_to, str) or not raw_to:
        raise WebError(400, "to: required, the address to send the test to", field="to")
    try:
        to = normalise_email(raw_to)
    except ValidationError as exc:
        raise WebError(400, f"to: {exc.problem}", field="to") from exc
    try:
        categories = parse_categories(raw_categories)
    except ValidationError as exc:
        raise WebError(400, f"categories: {exc.problem}", field="categories") from exc
    sent = await test_send_or_refuse(w, EditionKind(kind), to, categories)
    request.state.audit = {"kind": kind, "to": to}
    return JSONResponse(sent.as_json())


async def test_send_or_refuse(
    w: Web, kind: EditionKind, to: str, categories: list[str]
) -> TestSent:
    """The test send, its refusals as answers: 404 when the edition would be empty, 409 for
    a suppressed address, 502 when the mail server refuses (the API and the admin page both
    come here)."""
    w.count_test_send(to, w.clock())
    try:
        sent = await send_test(w.service, kind, to, categories, w.clock())
    except ValidationError as exc:
        raise WebError(409, f"{exc.field}: {exc.problem}", field=exc.field) from exc
    except DeliveryError as exc:
        raise WebError(502, f"The mail server refused the test message: {exc}") from exc
    if sent is None:
        raise WebError(
            404, "Nothing to send: no articles in those categories in the edition's window."
        )
    return sent
