"""An operator's browser for the admin page tests: sign in through the form, then read the
CSRF token of a form the way a browser submits it (the one in that form, on that page)."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
from starlette.testclient import TestClient

from tests.admin_seed import TOKEN
from tests.web_helpers import csrf_of


def sign_in(client: TestClient) -> None:
    page = client.get("/admin")
    answer = client.post("/admin/login", data={"csrf": csrf_of(page.text), "token": TOKEN})
    assert answer.status_code == 303, answer.text


def form_csrf(page: str, action: str) -> str:
    """The CSRF token of the first form on ``page`` that posts to ``action``."""
    start = page.find(f'action="{html.escape(action)}"')
    assert start >= 0, f"no form posts to {action}"
    match = re.search(r'name="csrf" value="([^"]+)"', page[start:])
    assert match, f"the form posting to {action} carries no CSRF token"
    return match.group(1)


def submit(client: TestClient, page_path: str, target: str, **fields: Any) -> httpx.Response:
    """Open ``page_path`` and submit its form posting to ``target`` with ``fields``."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    answer: httpx.Response = client.post(
        target, data={"csrf": form_csrf(page.text, target), **fields}
    )
    return answer
