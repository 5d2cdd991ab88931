"""The admin page's sending tools, each a form on ``/admin/editions``: a reader's next
edition (found by address, or from their page), a test send of today's edition to one
address that uses up nobody's edition (:mod:`digestd.ops.test_send`), and "send now"
with the safety rules of SPEC §4 (:mod:`digestd.planning.triggers`, as the API's
``POST /api/editions/trigger``).

A refused form comes back on the editions page with the error and what was typed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from digestd.content.categories import parse_categories
from digestd.errors import ValidationError
from digestd.models import EditionKind, Subscriber
from digestd.ops.preview import next_edition
from digestd.planning.triggers import trigger
from digestd.readers.subscribers import normalise_email
from digestd.web import params
from digestd.web.admin_auth import audit
from digestd.web.admin_editions import NOTICES, TESTED, admin_copy, editions_page
from digestd.web.admin_pages import action_form, done, operator
from digestd.web.api_editions import KINDS, test_send_or_refuse, trigger_emails
from digestd.web.body import Input
from digestd.web.context import Web, web
from digestd.web.errors import WebError
from digestd.web.view import VIEW_CSP

NOTHING_NEXT = (
    "Nothing to send: the reader's next {kind} would be empty if nothing more is published "
    "in their categories before it."
)


@operator
async def preview_by_address(request: Request) -> Response:
    """``GET /admin/editions/preview?email=…&kind=…``: the form on the editions page."""
    w = web(request)
    params.only(request, "email", "kind")
    kind = _kind(params.choice(request, "kind", KINDS))
    raw = params.text(request, "email") or ""
    try:
        email = normalise_email(raw)
    except ValidationError as exc:
        typed = {"form": "preview", "email": raw, "kind": str(kind)}
        return await editions_page(
            request, error=str(exc), field=exc.field, typed=typed, status=400
        )
    subscriber_id = await w.db(_reader_id, w, email)
    if subscriber_id is None:
        typed = {"form": "preview", "email": raw, "kind": str(kind)}
        error = f"no subscriber has the address {email}"
        return await editions_page(request, error=error, field="email", typed=typed, status=404)
    return await _preview(request, w, subscriber_id, kind)


@operator
async def preview_reader(request: Request) -> Response:
    """``GET /admin/subscribers/{id}/preview?kind=…``: the link on a reader's page."""
    params.only(request, "kind")
    kind = _kind(params.choice(request, "kind", KINDS))
    return await _preview(request, web(request), int(request.path_params["subscriber"]), kind)


def _kind(raw: str | None) -> EditionKind:
    if raw is None:
        raise WebError(400, "kind: required, daily or weekly", field="kind")
    return EditionKind(raw)


def _reader_id(w: Web, email: str) -> int | None:
    with w.sessions() as session:
        return session.scalar(select(Subscriber.id).where(Subscriber.email == email))


async def _preview(request: Request, w: Web, subscriber_id: int, kind: EditionKind) -> Response:
    edition = await w.db(next_edition, w.service, subscriber_id, kind, w.clock())
    if edition is None:
        raise WebError(404, NOTHING_NEXT.format(kind=kind))
    response = HTMLResponse(admin_copy(w, edition.template))
    response.headers["Content-Security-Policy"] = VIEW_CSP  # article text: no script at all
    return response


@operator
async def test_send(request: Request) -> Response:
    w = web(request)
    data = await action_form(request, "admin-editions", "test")
    typed = _typed(data, "test", "kind", "to", "categories")
    try:
        kind = _form_kind(data)
        to = _address(data.text("to", 320, required=True), "to")
        categories = parse_categories(data.text("categories", 2000) or "all")
    except (ValidationError, WebError) as exc:
        return await _refused(request, exc, typed)
    try:
        sent = await test_send_or_refuse(w, kind, to, categories)
    except WebError as exc:
        audit(request, "page.edition.test", "refused", kind=str(kind))
        return await _refused(request, exc, typed)
    audit(request, "page.edition.test", "sent", kind=str(kind), articles=sent.articles)
    notice = TESTED.format(to=sent.to, n=f"{sent.articles:,}")
    return await editions_page(request, notice=notice)


TYPED_LIMIT = 32_000  # characters of a form field: "send now" takes a list of addresses


@operator
async def send_now(request: Request) -> Response:
    w = web(request)
    data = await action_form(request, "admin-editions", "trigger")
    typed = _typed(data, "trigger", "kind", "emails")
    try:
        kind = _form_kind(data)
        body: dict[str, Any] = {"all": True}
        if data.text("who", 10) != "all":
            body = {"emails": data.text("emails", TYPED_LIMIT).replace(",", " ").split()}
        elif data.text("everyone", 10) != "yes":
            raise ValidationError("everyone", "tick the box to send to every reader")
        emails = trigger_emails(body)
    except (ValidationError, WebError) as exc:
        return await _refused(request, exc, typed)
    service = w.service
    report = await w.db(
        trigger, w.sessions, service.policy, service.renderer, kind, emails, w.clock()
    )
    audit(request, "page.edition.trigger", "ok", kind=str(kind), queued=report.queued)
    counts = {
        "queued": report.queued,
        "already": report.already_had_it,
        "later": report.left_for_later,
        "empty": report.nothing_to_send,
        "failed": report.failed_to_render,
        "ineligible": len(report.not_eligible),
    }
    if report.not_eligible:
        # Which addresses and why, on the answer itself: a redirect would carry them in its
        # URL, into access logs. Sending the form again is harmless (one per local date).
        notice = NOTICES["triggered"].format(**{k: f"{v:,}" for k, v in counts.items()})
        return await editions_page(request, notice=notice, not_queued=report.not_eligible)
    if not any(counts.values()):  # "every reader", and no active reader takes it
        return done("/admin/editions", "triggered-nobody")
    return done("/admin/editions", "triggered", **{k: str(v) for k, v in counts.items()})


async def _refused(
    request: Request, exc: ValidationError | WebError, typed: dict[str, str]
) -> Response:
    if isinstance(exc, WebError):
        return await editions_page(
            request, error=exc.message, field=exc.field, typed=typed, status=exc.status
        )
    return await editions_page(request, error=str(exc), field=exc.field, typed=typed, status=400)


def _address(raw: str, field: str) -> str:
    try:
        return normalise_email(raw)
    except ValidationError as exc:
        raise ValidationError(field, exc.problem) from exc


def _form_kind(data: Input) -> EditionKind:
    raw = data.text("kind", 10, required=True)
    if raw not in KINDS:
        raise ValidationError("kind", "daily or weekly")
    return EditionKind(raw)


def _typed(data: Input, form: str, *names: str) -> dict[str, str]:
    """What the operator typed into a form, to show it again when it is refused."""
    return {"form": form, **{name: data.text(name, TYPED_LIMIT) for name in names}}


ROUTES = [
    Route("/admin/editions/preview", preview_by_address, methods=["GET"]),
    Route("/admin/subscribers/{subscriber:id}/preview", preview_reader, methods=["GET"]),
    Route("/admin/editions/test", test_send, methods=["POST"]),
    Route("/admin/editions/trigger", send_now, methods=["POST"]),
]
