"""Who may act as the operator, and the record of what they did.

Operators sign in on ``/admin`` by typing the admin token into a form once; the answer is a
signed session cookie (its own itsdangerous salt, 12 hours, ``HttpOnly``,
``SameSite=Strict``, ``Secure`` over HTTPS, scoped to ``/admin``). The cookie carries a
keyed fingerprint of the token, so changing ``DIGESTD_ADMIN_TOKEN`` signs everybody out.

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
from datetime import timedelta

from itsdangerous import BadSignature
from starlette.requests import Request

from digestd.config import Settings
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
        return str(self._serializer.dumps({"t": self._fingerprint()}))

    def valid(self, request: Request) -> bool:
        raw = request.cookies.get(COOKIE, "")
        if not raw:
            return False
        try:
            data = self._serializer.loads(raw, max_age=int(SESSION_AGE.total_seconds()))
        except BadSignature:  # includes SignatureExpired
            return False
        return isinstance(data, dict) and hmac.compare_digest(
            str(data.get("t", "")), self._fingerprint()
        )


def enabled(w: Web) -> str:
    """The admin token; a 403 when none is set (the admin pages are off)."""
    if not w.settings.admin_token:
        raise WebError(403, "The admin page is disabled: set DIGESTD_ADMIN_TOKEN to enable it.")
    return w.settings.admin_token


def signed_in(request: Request) -> bool:
    w = web(request)
    return AdminSessions(w.settings, w.tokens).valid(request)


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
