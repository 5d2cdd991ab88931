"""What the web layer answers when a request is refused: one exception, rendered as an HTML
page for browsers and as JSON for API and JSON clients (never a traceback)."""

from __future__ import annotations


class WebError(Exception):
    """A 4xx answer. ``message`` is a complete sentence for the person who sent the request."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        title: str | None = None,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title or _TITLES.get(status, "Something is not right")
        self.field = field
        self.retry_after = retry_after  # seconds, for a 429's Retry-After (RFC 6585)


_TITLES = {
    400: "That did not work",
    401: "Sign-in needed",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    410: "No longer available",
    413: "Too much data",
    415: "Unsupported format",
    429: "Slow down",
}
