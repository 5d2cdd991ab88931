"""Request bodies: a size cap for every request, and one reader for forms and JSON.

The cap is an ASGI middleware that buffers the body up to the limit *before* the app sees
it, so no endpoint or form parser can be made to hold more; a larger body is answered 413
at once, whatever ``Content-Length`` claimed. The limit is the request's (``limit_for``):
the larger one needs the operator's credentials, checked before any of the body is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digestd import strict_json
from digestd.web.errors import WebError
from digestd.web.params import given_twice

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# A list of some 150 000 readers or more passes the upload's limit: the page says where such
# a file goes instead of leaving the operator at a bare 413.
_IMPORT_ADVICE = (
    "<p>A larger CSV: import it on the server with <code>digestd subscribers import "
    "FILE.csv</code> (no size limit, the same report in the import history), or split it "
    'into smaller files.</p><p><a href="/admin/import">Back to the import page</a></p>'
)


class BodyLimit:
    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit, headers)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, limit, headers)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, limit: int, headers: dict[bytes, bytes]
    ) -> None:
        message = f"The request body is larger than {limit // 1024} KB."
        response: Response
        if b"json" in headers.get(b"content-type", b"") or scope["path"].startswith("/api/"):
            response = JSONResponse({"error": message}, status_code=413)
        else:
            more = _IMPORT_ADVICE if scope["path"] == "/admin/import" else ""
            response = HTMLResponse(
                f"<!doctype html><title>Too much data</title><p>{message}</p>{more}",
                status_code=413,
            )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


@dataclass(frozen=True)
class Input:
    """A submitted form or JSON object, read the same way by every endpoint."""

    is_json: bool
    data: dict[str, Any]

    def text(self, name: str, limit: int, *, required: bool = False) -> str:
        """One text field: a string of at most ``limit`` characters without control characters."""
        value = self.data.get(name)
        if isinstance(value, list) and not self.is_json:
            value = value[-1] if value else None
        if value is None or value == "":
            if required:
                raise WebError(400, f"{name} is required.", field=name)
            return ""
        if not isinstance(value, str):
            raise WebError(400, f"{name} must be a string.", field=name)
        if len(value) > limit:
            raise WebError(400, f"{name} is longer than {limit} characters.", field=name)
        _printable(name, value)
        return value.strip()

    def items(self, name: str, limit: int, max_items: int = 60) -> list[str]:
        """A multi-valued field: repeated form fields, a JSON list, or a comma-separated string."""
        value = self.data.get(name)
        if value is None:
            return []
        values = value if isinstance(value, list) else [value]
        if len(values) > max_items:
            raise WebError(400, f"{name} has too many values.", field=name)
        out: list[str] = []
        for item in values:
            if not isinstance(item, str):
                raise WebError(400, f"{name} must be a list of strings.", field=name)
            if len(item) > limit:
                raise WebError(
                    400, f"{name} has a value longer than {limit} characters.", field=name
                )
            _printable(name, item)
            out.extend(part for part in item.split(",") if part.strip())
        return out


def _printable(name: str, value: str) -> None:
    # CR/LF could smuggle headers into an email or lines into a log; no field needs them.
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise WebError(
            400, f"{name} must not contain line breaks or control characters.", field=name
        )
    # Half of a UTF-16 pair ("\ud800" in JSON) is not text: it cannot be stored or sent.
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise WebError(400, f"{name} is not valid text.", field=name)


async def read_input(request: Request, *, allow_json: bool = True) -> Input:
    """Parse a urlencoded/multipart form or (if allowed) a JSON object; 415 for anything else."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:
        try:
            form = await request.form(max_files=0, max_fields=100, max_part_size=32 * 1024)
        except HTTPException as exc:  # Starlette's wrapper of python-multipart's errors
            raise WebError(400, f"The form data could not be read: {exc.detail}") from exc
        return Input(False, _form_dict(form))
    if allow_json and content_type == "application/json":
        try:
            data = strict_json.loads(await request.body())
        except strict_json.DuplicateKey as exc:
            raise given_twice(exc) from exc
        except (ValueError, RecursionError) as exc:  # bad syntax or UTF-8, too deep, too long
            raise WebError(400, "The body is not valid JSON.") from exc
        if not isinstance(data, dict):
            raise WebError(400, "The body must be a JSON object.")
        return Input(True, data)
    accepted = "a form" + (" or JSON" if allow_json else "")
    raise WebError(415, f"Send {accepted}; got content type {content_type[:60]!r}.")


def _form_dict(form: FormData) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        if any(not isinstance(v, str) for v in values):
            raise WebError(400, "File uploads are not accepted here.", field=key)
        data[key] = [str(v) for v in values]
    return data
