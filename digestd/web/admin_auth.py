"""Who may act as the operator, and the record of what they did.

Operators sign in on ``/admin`` by typing the admin token into a form once; the answer is a
signed session cookie (its own itsdangerous salt, 12 hours, ``HttpOnly``,
``SameSite=Strict``, ``Secure`` over HTTPS, scoped to ``/admin``). The cookie carries a
keyed fingerprint of the token, so changing ``DIGESTD_ADMIN_TOKEN`` signs everybody out,
and an id of its own session: "Sign out" lists that id (``admin_signouts``), so the cookie,
even copied before, opens nothing more.

The admin token is compared in constant time. Wrong tokens count per client in one limiter
shared by the ``/admin`` sign-in form and the API's bearer header, so guessing through
either slows down both; a client over the limit is refused even with the right token (else
the answer would tell a lucky guess apart). Each admin action is one INFO line that names
the action and its outcome (addresses in it are masked by :mod:`digestd.logs`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from datetime import datetime, timedelta

from itsdangerous import BadSignature
from sqlalchemy import delete
from starlette.requests import Request

from digestd.config import Settings
from digestd.models import AdminSignout
from digestd.tokens import Tokens
from digestd.web.context import Web, client_ip, web
from digestd.web.errors import WebError
from digestd.web.ratelimit import RateLimiter

log = logging.getLogger("digestd.admin")
# A handful of wrong tokens per client, then a pause: the token is 24+ random characters,
# so this only stops a script from trying a list.
TRIES = 10
WINDOW = timedelta(minutes=15)
COOKIE = "digestd_admin"
SESSION_AGE = timedelta(hours=12)
_SESSION_ID = re.compile(r"[0-9a-f]{32}")


class AdminSessions:
    def __init__(self, settings: Settings, tokens: Tokens) -> None:
        self._settings = settings
        self._serializer = tokens.serializer("digestd.admin-session")

    def _fingerprint(self) -> str:
        # Keyed with the newest secret: the cookie (readable base64) gives no offline way
        # to test guesses of the token.
        token = (self._settings.admin_token or "").encode()
        key = self._settings.secret_keys[0].encode()
        return hmac.new(key, b"admin:" + token, hashlib.sha256).hexdigest()[:32]

    def issue(self) -> str:
        """A new session's cookie: the token's fingerprint and a session id of its own."""
        return str(self._serializer.dumps({"t": self._fingerprint(), "s": secrets.token_hex(16)}))

    def session_id(self, request: Request) -> str | None:
        """The id of the session the request's cookie opens (signed, not expired, made for
        the current token), or None. Whether it was signed out is :func:`signed_in`'s."""
        raw = request.cookies.get(COOKIE, "")
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=int(SESSION_AGE.total_seconds()))
        except BadSignature:  # includes SignatureExpired
            return None
        if not isinstance(data, dict) or not hmac.compare_digest(
            str(data.get("t", "")), self._fingerprint()
        ):
            return None
        sid = data.get("s")
        return sid if isinstance(sid, str) and _SESSION_ID.fullmatch(sid) else None

    def valid(self, request: Request) -> bool:
        """A cookie this digestd made for the current token (signed-out or not)."""
        return self.session_id(request) is not None


def enabled(w: Web) -> str:
    """The admin token; a 403 when none is set (the admin pages are off)."""
    if not w.settings.admin_token:
        raise WebError(403, "The admin page is disabled: set DIGESTD_ADMIN_TOKEN to enable it.")
    return w.settings.admin_token


async def signed_in(request: Request) -> bool:
    """The request's cookie opens a session that was not signed out."""
    w = web(request)
    sid = AdminSessions(w.settings, w.tokens).session_id(request)
    return sid is not None and not await w.db(_signed_out, w, sid)


def _signed_out(w: Web, sid: str) -> bool:
    with w.sessions() as session:
        return session.get(AdminSignout, sid) is not None


async def sign_out(request: Request) -> None:
    """End the request's session for good: its cookie, copied or not, opens nothing more."""
    w = web(request)
    sid = AdminSessions(w.settings, w.tokens).session_id(request)
    if sid is not None:
        await w.db(_record_sign_out, w, sid, w.clock())


def _record_sign_out(w: Web, sid: str, now: datetime) -> None:
    with w.sessions.begin() as session:
        # The cookie dies by itself after SESSION_AGE: its row need not outlive it.
        session.execute(delete(AdminSignout).where(AdminSignout.expires_at < now))
        if session.get(AdminSignout, sid) is None:
            session.add(AdminSignout(session_id=sid, expires_at=now + SESSION_AGE))


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_matches(request: Request, expected: str | None) -> bool:
    """``Authorization: Bearer`` carries the admin token (none set: nobody's does)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return token_matches(given.strip(), expected)


def _limiter(request: Request) -> RateLimiter:
    state = request.app.state
    if not hasattr(state, "admin_limiter"):
        state.admin_limiter = RateLimiter(TRIES, WINDOW)
    limiter: RateLimiter = state.admin_limiter
    return limiter


def locked_out(request: Request) -> int:
    """Seconds this client must wait, having used up its wrong tries (checked before the
    token); 0 when it may try."""
    return _limiter(request).retry_in(client_ip(request), web(request).clock())


def wrong_token(request: Request, action: str) -> None:
    """Count a wrong token against the client and log it; the try that uses up the
    allowance says so once (later refusals are not logged: a flood stays one line)."""
    limiter, client, now = _limiter(request), client_ip(request), web(request).clock()
    limiter.allow(client, now)
    audit(request, action, "wrong-token")
    if limiter.over(client, now):
        minutes = int(WINDOW.total_seconds() // 60)
        log.warning(
            "admin.locked", extra={"client": client, "wrong_tokens": TRIES, "minutes": minutes}
        )


def audit(request: Request, action: str, outcome: str, **details: object) -> None:
    """One line per admin action: ``event=admin action=… outcome=… client=… [details]``
    (a detail's name must not be a LogRecord attribute such as ``name``)."""
    fields = {"action": action, "outcome": outcome, "client": client_ip(request)}
    log.info("admin", extra={**fields, **details})
