"""``POST /api/bounces``: a raw RFC 3464 DSN or RFC 5965 ARF report, as a mail system hands it
over (a pipe from the bounce mailbox, a webhook of the relay). All the work is
:func:`digestd.readers.bounces.process_report`; this is only the HTTP edge."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from digestd.readers.bounces import ReportError, ReportResult, process_report
from digestd.web.context import Web, web
from digestd.web.errors import WebError

# Reports arrive as the raw message: any of these is fine, a form or JSON is a mistake.
ACCEPTED = {
    "message/rfc822",
    "text/plain",
    "application/octet-stream",
    "message/global",
    "multipart/report",
    "",
}


async def post_bounce(request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED:
        raise WebError(415, "Send the raw report as the body (Content-Type: message/rfc822).")
    raw = await request.body()
    if not raw.strip():
        raise WebError(400, "The body is empty: send the raw DSN or ARF message.")
    w = web(request)
    try:
        result = await w.db(_process, w, raw)
    except ReportError as exc:
        raise WebError(400, str(exc)) from exc
    request.state.audit = {"report": result.outcome, "suppressed": result.suppressed}
    return JSONResponse(
        {
            "outcome": str(result.outcome),
            "report_type": result.report_type,
            "matched": result.subscriber_id is not None,  # a reader, by their delivery or not
            "matched_by": result.matched_by,
            "status": result.status,
            "diagnostic": result.diagnostic,
            "suppressed": result.suppressed,
            "repeated": result.repeated,
        }
    )


def _process(w: Web, raw: bytes) -> ReportResult:
    with w.sessions.begin() as session:
        return process_report(session, raw, w.tokens, w.clock())
