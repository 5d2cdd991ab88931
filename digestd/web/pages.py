"""HTML pages (Jinja2, ``templates/web/``) and the choice between an HTML and a JSON answer.

Pages carry their CSS inline and their few lines of script under a per-response CSP nonce:
no CDN, no web fonts, nothing fetched from elsewhere.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from digestd.config import Settings
from digestd.resources import templates_dir
from digestd.web.errors import WebError


class Pages:
    def __init__(self, settings: Settings, directory: Path | None = None) -> None:
        self._env = Environment(
            loader=FileSystemLoader(directory or templates_dir() / "web"),
            autoescape=select_autoescape(["html"], default=True),
            undefined=StrictUndefined,
        )
        self._env.filters.update(
            {"number": _number, "when": _when, "percent": _percent, "segment": _segment}
        )
        self._env.globals.update(
            {
                "site_name": settings.site_name,
                "site_url": settings.base_url,
                "postal_address": settings.postal_address,
                "daily_time": f"{settings.daily_time.hour}:{settings.daily_time.minute:02d}",
                "weekly_time": f"{settings.weekly_time.hour}:{settings.weekly_time.minute:02d}",
            }
        )

    def render(self, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = self._env.get_template(name).render({**context, "nonce": nonce})
        response = HTMLResponse(html, status_code=status)
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
            "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        )
        return response

    def message(
        self,
        title: str,
        message: str,
        status: int = 200,
        **extra: Any,
    ) -> HTMLResponse:
        """A one-message page: confirmations, "check your inbox", and every error."""
        context = {"title": title, "message": message, "status": status, "form": None, **extra}
        return self.render("message.html", context, status)


def _segment(value: object) -> str:
    """``value`` as one segment of a URL path: "/" too is escaped (Jinja's ``urlencode``
    keeps it), so an id like ``a/../b`` cannot lead a form somewhere else."""
    return quote(str(value), safe="")


def _number(value: int | None) -> str:
    """Exact counts with thousands separators (49,731)."""
    return "0" if value is None else f"{value:,}"


def _percent(value: float | None) -> str:
    """A rate as a percentage with one decimal (51.2 %); "–" when there is none."""
    return "–" if value is None else f"{value * 100:.1f} %"


def _when(value: datetime | None, empty: str = "—") -> str:
    """An instant as operators read it: ``2026-11-29 07:00 UTC``."""
    if value is None:
        return empty
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def wants_json(request: Request) -> bool:
    if request.url.path.startswith("/api/"):
        return True
    if "json" in request.headers.get("content-type", ""):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def error_response(request: Request, pages: Pages, error: WebError) -> Response:
    response: Response
    if wants_json(request):
        body: dict[str, Any] = {"error": error.message}
        if error.field:
            body["field"] = error.field
        response = JSONResponse(body, status_code=error.status)
    elif request.url.path == "/admin" or request.url.path.startswith("/admin/"):
        # An operator's refused form or missing page: back to the console, not to the
        # readers' signup page.
        back = {"action_url": "/admin", "action_label": "Back to the admin console"}
        response = pages.message(error.title, error.message, error.status, **back)
    else:
        response = pages.message(error.title, error.message, error.status)
    if error.retry_after:
        response.headers["Retry-After"] = str(error.retry_after)
    return response
