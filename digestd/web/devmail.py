"""The development mail catcher in the browser: ``/dev/mail`` lists ``var/mail/*.eml`` and
shows each message, so a newcomer can click a confirmation link without any mail server.

Mounted only when no SMTP server is configured (then nothing real is ever mailed), and only
where strangers cannot reach it: every confirmation and preferences link is on these pages.
That means a loopback ``DIGESTD_LISTEN``, unless ``DIGESTD_DEV_MAILBOX=true`` says otherwise
(a development container), which is logged loudly at start-up.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from digestd.config import Settings
from digestd.web.clients import is_local, is_loopback_name
from digestd.web.context import Web, web
from digestd.web.errors import WebError
from digestd.web.view import VIEW_CSP

log = logging.getLogger("digestd.web")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.eml$")  # what MailCatcher writes; no path tricks
LISTED = 200


@dataclass(frozen=True)
class Caught:
    name: str
    to: str
    subject: str
    date: str


def _parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _list(w: Web) -> list[Caught]:
    directory = w.settings.mail_dir
    if not directory.is_dir():
        return []
    paths = sorted(directory.glob("*.eml"), reverse=True)[:LISTED]
    out = []
    for path in paths:
        message = _parse(path)
        out.append(
            Caught(
                path.name,
                str(message["To"] or ""),
                str(message["Subject"] or ""),
                str(message["Date"] or ""),
            )
        )
    return out


def _mailbox_of(request: Request) -> Web:
    """Served on loopback to this machine only (see :func:`digestd.web.clients.is_local`):
    not to a proxy on it relaying the world, nor to a page rebound to 127.0.0.1. An
    explicit ``DIGESTD_DEV_MAILBOX=true`` serves whoever reaches it (a container's host)."""
    w = web(request)
    if not w.settings.dev_mailbox and not is_local(request):
        where = f"{w.settings.listen_url}/dev/mail"
        raise WebError(403, f"The mail catcher answers only this machine, at {where}.")
    return w


async def mailbox(request: Request) -> Response:
    w = _mailbox_of(request)
    messages = await w.db(_list, w)
    return w.pages.render("devmail.html", {"messages": messages, "mail_dir": w.settings.mail_dir})


def _path(w: Web, name: str) -> Path:
    path = w.settings.mail_dir / name
    if not _NAME.match(name) or not path.is_file():
        raise WebError(404, "There is no such message in the mail catcher.")
    return path


async def message(request: Request) -> Response:
    """The HTML part as it would show in a mail program (links clickable), else the text."""
    w = _mailbox_of(request)
    parsed = _parse(_path(w, request.path_params["name"]))
    html = parsed.get_body(("html",))
    if html is not None:
        response: Response = HTMLResponse(html.get_content())
        response.headers["Content-Security-Policy"] = VIEW_CSP
        return response
    text = parsed.get_body(("plain",))
    return PlainTextResponse(text.get_content() if text is not None else "")


async def raw(request: Request) -> Response:
    w = _mailbox_of(request)
    return PlainTextResponse(_path(w, request.path_params["name"]).read_text(errors="replace"))


ROUTES = [
    Route("/dev/mail", mailbox, methods=["GET"]),
    Route("/dev/mail/{name}", message, methods=["GET"]),
    Route("/dev/mail/{name}/raw", raw, methods=["GET"]),
]


def routes(settings: Settings) -> list[Route]:
    """The mailbox's routes where it may be served (see the module docstring), else none."""
    if settings.smtp is not None:
        return []
    where = f"{settings.listen_host}:{settings.listen_port}"
    if is_loopback_name(settings.listen_host):
        return ROUTES
    if not settings.dev_mailbox:
        log.info(
            "/dev/mail is off: listening on %s, beyond loopback (caught mail stays in %s; "
            "DIGESTD_DEV_MAILBOX=true serves it anyway)",
            where,
            settings.mail_dir,
        )
        return []
    log.warning(
        "DIGESTD_DEV_MAILBOX=true: /dev/mail shows every caught email, confirmation and "
        "preferences links included, to anyone who reaches %s. Development only: never "
        "on a public address",
        where,
    )
    return ROUTES
