"""The HTTP app (Starlette): public reader pages, the admin API, health, and the
development mailbox when no SMTP server is configured. Built from a :class:`Service`."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digestd.ops.metrics import CONTENT_TYPE
from digestd.service import Service
from digestd.web import (
    admin,
    api,
    archive,
    clicks,
    confirm,
    devmail,
    engage,
    manage,
    mute,
    signup,
    unsubscribe,
    view,
)
from digestd.web.admin_auth import AdminSessions, bearer_matches
from digestd.web.body import BodyLimit
from digestd.web.clients import is_local
from digestd.web.context import Web, WebPolicy, web
from digestd.web.errors import WebError
from digestd.web.origins import SiteCors
from digestd.web.pages import error_response

log = logging.getLogger("digestd.web")

_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Pages hold signed links: never leak them to article sites through Referer, nor to caches.
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in _HEADERS if name not in present
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def healthz(request: Request) -> Response:
    """Ready when the database answers and the work moves; ``?live`` asks only whether the
    work moves (a liveness probe: a database outage must not get the daemon restarted).
    The last SMTP success is reported, not judged (a quiet night sends nothing)."""
    w = web(request)
    health = w.service.health
    problem = health.scheduler_problem()
    body: dict[str, object] = {
        "status": "error" if problem else "ok",
        "scheduler": "off" if health.scheduler_started_at is None else problem or "ok",
    }
    if "live" not in request.query_params:
        body["database"] = "ok"
        try:
            await w.db(_ping, w)
        except (SQLAlchemyError, OSError) as exc:  # the database is not there: not ready
            body.update(status="error", database=type(exc).__name__)
    last_smtp = w.service.metrics.last_smtp_success_at
    body["last_smtp_success"] = (
        datetime.fromtimestamp(last_smtp, UTC).isoformat() if last_smtp else None
    )
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text. The counts tell whether a signup hit a new, active or unsubscribed
    address, so only a scraper holding ``DIGESTD_METRICS_TOKEN`` may read them, or, with
    no token configured, a client on this machine (not one relayed by a proxy on it)."""
    w = web(request)
    token = w.settings.http.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return PlainTextResponse(
                "Send Authorization: Bearer $DIGESTD_METRICS_TOKEN.\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="digestd metrics"'},
            )
    elif not is_local(request):
        return PlainTextResponse(
            "/metrics answers only this machine; set DIGESTD_METRICS_TOKEN to scrape it "
            "from elsewhere.\n",
            status_code=403,
        )
    exposition = await w.db(w.service.metrics.exposition)
    return Response(exposition, media_type=CONTENT_TYPE)


def _ping(w: Web) -> None:
    with w.sessions() as session:
        session.execute(text("SELECT 1"))


async def home(request: Request) -> Response:
    return RedirectResponse("/subscribe", status_code=303)


async def _web_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebError)
    return error_response(request, web(request).pages, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = "There is nothing at this address. Check the link, or start from the signup page."
    elif exc.status_code == 405:
        message = f"This address does not accept {request.method} requests."
    else:
        message = str(exc.detail)
    response = error_response(request, web(request).pages, WebError(exc.status_code, message))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:  # RFC 9110 §15.5.6: name every method the address takes
        # From the app's own root: a Mount the request went through has moved root_path on.
        root = request.scope.get("app_root_path", request.scope.get("root_path", ""))
        scope = {**request.scope, "root_path": root}
        response.headers["Allow"] = ", ".join(sorted(_methods_at(request.app.routes, scope)))
    return response


def _methods_at(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """Every method some route at the scope's path takes. Starlette's 405 names only the
    first route's, and most addresses here have a GET route and a POST route."""
    methods: set[str] = set()
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            methods |= _methods_at(route.routes, {**scope, **child})
        elif isinstance(route, Route) and route.methods:
            methods |= route.methods
    return methods


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = WebError(
        500,
        "Something went wrong on our side. Please try again in a minute.",
        title="Sorry, something broke",
    )
    return error_response(request, web(request).pages, error)


def create_app(
    service: Service,
    policy: WebPolicy | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Starlette:
    context = Web(service, policy or WebPolicy())
    if clock is not None:
        context.clock = clock
    routes: list[BaseRoute] = [
        Route("/", home, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *signup.ROUTES,
        *confirm.ROUTES,
        *manage.ROUTES,
        *unsubscribe.ROUTES,
        *mute.ROUTES,
        *view.ROUTES,
        *clicks.ROUTES,
        *engage.ROUTES,
        *archive.ROUTES,
        *api.routes(),
        *admin.ROUTES,
    ]
    routes += devmail.routes(service.settings)
    limits = context.policy

    sessions = AdminSessions(service.settings, context.tokens)

    def limit_for(scope: Scope) -> int:
        # The API's bodies, and a subscriber CSV uploaded on /admin/import, may be large:
        # the operator's only. Decided before the body is read, so a stranger cannot make
        # the daemon hold megabytes on each connection of the thousands it takes.
        path, request = scope["path"], Request(scope)
        if path.startswith("/api/"):
            large = bearer_matches(request, service.settings.admin_token)
        else:
            large = path == "/admin/import" and sessions.valid(request)
        return limits.max_api_body if large else limits.max_body

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(SiteCors, settings=service.settings),
            Middleware(BodyLimit, limit_for=limit_for),
        ],
        exception_handlers={
            WebError: _web_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    # Starlette's own redirect of "/path/" to "/path" builds its Location from the request's
    # Host header: whoever can set that (through a proxy passing it on) picks the site.
    app.router.redirect_slashes = False
    app.router.default = _SlashRedirect(app.router, service.settings.base_url)
    app.state.web = context
    return app


class _SlashRedirect:
    """What no route matches: "/path/" that is "/path" without its slash is redirected
    there, on the site's own base URL; anything else is the router's 404."""

    def __init__(self, router: Router, base_url: str) -> None:
        self.router = router
        self.base_url = base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["type"] == "http" and path.endswith("/") and path.strip("/"):
            trimmed = {**scope, "path": path.rstrip("/")}
            if any(route.matches(trimmed)[0] is not Match.NONE for route in self.router.routes):
                query = scope.get("query_string", b"").decode("latin-1")
                location = self.base_url + quote(trimmed["path"]) + (f"?{query}" if query else "")
                await RedirectResponse(location, status_code=307)(scope, receive, send)
                return
        await self.router.not_found(scope, receive, send)
