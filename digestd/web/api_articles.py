"""The admin API's editors' calls on one article: pin it (``POST .../pin`` with
``{"until": ISO 8601}``; ``DELETE .../pin`` unpins) and hold it (``POST .../hold``;
``DELETE .../hold`` releases it). Each answers the article's standing. Registered in
``api.ENDPOINTS``, so the bearer-token guard covers every one."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from digestd.content.editorial import Standing, hold, pin
from digestd.errors import ValidationError
from digestd.instants import parse_instant
from digestd.web import params
from digestd.web.context import Web, web
from digestd.web.errors import WebError


def _article_id(request: Request) -> str:
    return str(request.path_params["article"])


async def post_pin(request: Request) -> Response:
    w = web(request)
    body = await params.json_body(request)
    if not isinstance(body, dict):
        raise WebError(400, "The body must be a JSON object.")
    unknown = sorted(set(body) - {"until"})
    if unknown:
        raise WebError(400, f"{unknown[0][:40]}: unknown field; send until", field=unknown[0])
    raw = body.get("until")
    if not isinstance(raw, str) or not raw:
        raise WebError(400, "until: required, an ISO 8601 time with a zone", field="until")
    try:
        until = parse_instant("until", raw)
    except ValidationError as exc:
        raise WebError(400, str(exc), field="until") from exc
    return await _act(request, w, "pin", until)


async def delete_pin(request: Request) -> Response:
    params.only(request)
    return await _act(request, web(request), "unpin", None)


async def post_hold(request: Request) -> Response:
    params.only(request)
    return await _act(request, web(request), "hold", None)


async def delete_hold(request: Request) -> Response:
    params.only(request)
    return await _act(request, web(request), "release", None)


async def _act(request: Request, w: Web, action: str, until: datetime | None) -> Response:
    article_id = _article_id(request)
    try:
        standing = await w.db(apply, w, article_id, action, until)
    except ValidationError as exc:
        status = 404 if exc.field == "id" else 400
        raise WebError(status, str(exc), field=exc.field) from exc
    request.state.audit = {"article": article_id[:80]}
    return JSONResponse(standing.as_json())


def apply(w: Web, article_id: str, action: str, until: datetime | None) -> Standing:
    """One editors' action (pin, unpin, hold, release) in a transaction of its own: the
    API and the admin page both come here."""
    with w.sessions.begin() as session:
        if action == "pin":
            assert until is not None
            return pin(session, article_id, until, w.clock())
        if action == "unpin":
            return pin(session, article_id, None, w.clock())
        return hold(session, article_id, action == "hold")
