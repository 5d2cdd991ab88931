"""Helpers for the HTTP tests: reading forms and emails the way a browser and a reader would."""

from __future__ import annotations

import html
import re
from typing import Any

from tests.conftest import WebRig
from tests.helpers import parse, parts

SIGNUP = {"categories": ["ai", "robotics"], "frequency": "daily", "timezone": "Europe/Paris"}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page carries a CSRF token"
    return match.group(1)


def signup_form(web: WebRig, email: str, **fields: Any) -> Any:
    """GET the signup page (CSRF cookie + token), then POST the form like a browser."""
    page = web.client.get("/subscribe")
    data = {**SIGNUP, "csrf": csrf_of(page.text), "email": email, **fields}
    return web.client.post("/subscribe", data=data)


def links_in(raw: bytes) -> dict[str, str]:
    """The confirm, preferences, unsubscribe, view and (first) mute paths in an email's
    text part."""
    text, _ = parts(parse(raw))
    found: dict[str, str] = {}
    for kind in ("confirm", "preferences", "unsubscribe", "view", "mute"):
        match = re.search(rf"https://digest\.example\.com(/{kind}/\S+)", text)
        if match:
            found[kind] = match.group(1)
    return found


def text_of(page: str) -> str:
    """The visible words of a page, for asserting on what a reader sees."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())
