"""CSRF protection for the HTML forms: a signed double submit.

The browser holds a random nonce in a ``SameSite=Lax``, ``HttpOnly`` cookie (never sent
with a cross-site POST); each form carries an itsdangerous token signing (nonce, form
purpose, subject) — the subject being the subscriber's opaque id on the preferences page.
A POST is accepted only when the token's signature is good, it is recent, it names this
form and subscriber, and its nonce equals the cookie. Another site can neither read the
token nor set our cookie, and a token copied from one page does not work on another form
or for another subscriber.

The RFC 8058 one-click unsubscribe is deliberately *not* behind this: mail providers POST
it without cookies, and the signed link is its authority.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import timedelta

from itsdangerous import BadSignature
from starlette.requests import Request
from starlette.responses import Response

from digestd.tokens import Tokens
from digestd.web.errors import WebError

COOKIE = "digestd_csrf"
FIELD = "csrf"
MAX_AGE = timedelta(hours=24)
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class Csrf:
    def __init__(self, tokens: Tokens, max_age: timedelta = MAX_AGE) -> None:
        self._serializer = tokens.serializer("digestd.csrf")
        self._max_age = int(max_age.total_seconds())

    def session(self, request: Request) -> CsrfSession:
        nonce = request.cookies.get(COOKIE, "")
        if _NONCE.match(nonce):
            return CsrfSession(self, nonce, new=False)
        return CsrfSession(self, secrets.token_urlsafe(24), new=True)

    def token(self, nonce: str, purpose: str, subject: str) -> str:
        return str(self._serializer.dumps([nonce, purpose, subject]))

    def check(self, request: Request, token: str | None, purpose: str, subject: str) -> None:
        """Raise a 403 unless ``token`` was issued to this browser for this form."""
        nonce = request.cookies.get(COOKIE, "")
        if not token:
            raise WebError(403, _STALE)
        try:
            signed = self._serializer.loads(token, max_age=self._max_age)
        except BadSignature as exc:  # includes SignatureExpired
            raise WebError(403, _STALE) from exc
        if (
            not isinstance(signed, list)
            or len(signed) != 3
            or not all(isinstance(part, str) for part in signed)
            or not nonce
            or not hmac.compare_digest(signed[0], nonce)
            or signed[1:] != [purpose, subject]
        ):
            raise WebError(403, _STALE)


_STALE = (
    "This form has expired or did not come from this site. "
    "Reload the page and try again (cookies must be enabled)."
)


class CsrfSession:
    """The nonce of one browser for one response; sets the cookie when it is new."""

    def __init__(self, csrf: Csrf, nonce: str, *, new: bool) -> None:
        self._csrf = csrf
        self.nonce = nonce
        self.new = new

    def token(self, purpose: str, subject: str) -> str:
        return self._csrf.token(self.nonce, purpose, subject)

    def attach(self, request: Request, response: Response) -> Response:
        if self.new:
            response.set_cookie(
                COOKIE,
                self.nonce,
                max_age=int(MAX_AGE.total_seconds()),
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
                path="/",
            )
        return response
