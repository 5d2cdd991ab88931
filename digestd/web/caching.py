"""Conditional answers for public pages (RFC 9110 §13): an ETag and Last-Modified on each,
``304 Not Modified`` when the client's copy is current, and ``Cache-Control: public``.

The ETag is a hash of the body: the archive's pages are built from stored digests and a few
indexed reads, so building one costs little, and a hash can never call a changed page (a new
"next edition" link, a new version of the page's template) unchanged. The answer still
saves the transfer. Only pages without personal data may go through here: the app's default
for everything else is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.requests import Request
from starlette.responses import Response

# What a 304 repeats of the 200 it stands for (RFC 9110 §15.4.5).
KEPT = ("cache-control", "content-location", "etag", "expires", "last-modified", "vary")


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def cached(
    request: Request, response: Response, *, max_age: int, last_modified: datetime | None
) -> Response:
    """``response`` with its validators and ``Cache-Control: public``, or a 304 for a
    client whose copy matches."""
    etag = etag_of(bytes(response.body))
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    if last_modified is not None:
        response.headers["Last-Modified"] = http_date(last_modified)
    if not _fresh(request, etag, last_modified):
        return response
    headers = {name: value for name, value in response.headers.items() if name in KEPT}
    return Response(status_code=304, headers=headers)


def _fresh(request: Request, etag: str, last_modified: datetime | None) -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        # Weak comparison (§13.1.2): a proxy that compressed the body may have made it W/.
        given = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in given or etag in given
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since is None or last_modified is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, OverflowError):  # no HTTP date: ignored (§13.1.3)
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_modified.replace(microsecond=0) <= since
