"""What every endpoint needs, built once per app: the service, the web policy, pages,
CSRF, the signup mailer and rate limiter, and the clock (tests move it with time_machine)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar, cast

from sqlalchemy.orm import Session, sessionmaker
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from digestd.config import Settings
from digestd.errors import DeliveryError
from digestd.mail.render import Renderer
from digestd.readers.lifecycle import Schedule
from digestd.readers.mailbox import Limit, canonical_mailbox
from digestd.readers.signups import Held, Notice, SignupLimits, SignupResult, release_email
from digestd.service import Service
from digestd.tokens import Tokens
from digestd.web.click_writer import ClickDesk
from digestd.web.clients import client_address, limit_key
from digestd.web.csrf import Csrf
from digestd.web.errors import WebError
from digestd.web.mailer import SignupMailer
from digestd.web.pages import Pages
from digestd.web.ratelimit import RateLimiter
from digestd.web.shelves import Shelved

log = logging.getLogger("digestd.web")
CAP_LOG_EVERY = timedelta(minutes=15)
P = ParamSpec("P")
T = TypeVar("T")


TRY_IN_AN_HOUR = "Too many requests from your network. Please try again in an hour."
# Test sends from the API and the admin page, an hour: an admin token in the wrong hands
# must not make digestd a way to mail anybody without limit (the command line has none).
TEST_SENDS_TO_ONE_ADDRESS = 10
TEST_SENDS_IN_ALL = 60


@dataclass(frozen=True)
class WebPolicy:
    signups_per_ip: int = 20
    signup_window: timedelta = timedelta(hours=1)
    # Signup emails (confirmations, fresh links) to one inbox, however it is spelled.
    emails_per_mailbox: int = 3
    mailbox_window: timedelta = timedelta(hours=24)
    confirmation_interval: timedelta = timedelta(minutes=10)  # per inbox
    # Signup emails to everyone together: a flood of distinct addresses stops here.
    signup_emails_per_hour: int = 500
    max_body: int = 64 * 1024
    max_api_body: int = 8 * 1024 * 1024

    @property
    def signup_limits(self) -> SignupLimits:
        return SignupLimits(
            per_mailbox=Limit(
                self.emails_per_mailbox, self.mailbox_window, self.confirmation_interval
            ),
            everyone=Limit(self.signup_emails_per_hour, timedelta(hours=1)),
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Web:
    service: Service
    policy: WebPolicy = field(default_factory=WebPolicy)
    clock: Callable[[], datetime] = _utcnow
    pages: Pages = field(init=False)
    csrf: Csrf = field(init=False)
    renderer: Renderer = field(init=False)
    mailer: SignupMailer = field(init=False)
    signup_limiter: RateLimiter = field(init=False)
    test_send_limiters: tuple[RateLimiter, RateLimiter] = field(init=False)
    clicks: ClickDesk = field(init=False)
    _capped_logged_at: datetime | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        settings = self.service.settings
        self.pages = Pages(settings)
        self.csrf = Csrf(self.service.tokens)
        self.renderer = Renderer()
        self.mailer = SignupMailer(
            settings, self.service.composer, self.service.transport, self.renderer
        )
        self.signup_limiter = RateLimiter(self.policy.signups_per_ip, self.policy.signup_window)
        self.test_send_limiters = (
            RateLimiter(TEST_SENDS_TO_ONE_ADDRESS, timedelta(hours=1)),
            RateLimiter(TEST_SENDS_IN_ALL, timedelta(hours=1)),
        )
        self.clicks = ClickDesk(self.service.sessions)

    def count_signup_request(
        self, request: Request, now: datetime, message: str = TRY_IN_AN_HOUR
    ) -> None:
        """One more request for a signup email from this client's network: a 429 saying
        when to come back (Retry-After) once it has had its share of the window."""
        client = client_ip(request)
        if not self.signup_limiter.allow(client, now):
            wait = self.signup_limiter.retry_in(client, now)
            raise WebError(429, message, retry_after=wait)

    def count_test_send(self, to: str, now: datetime) -> None:
        """One more test send to ``to``: a 429 (with Retry-After) once that inbox (its
        ``+tag`` and Gmail's dots aside, as signups count it), or all test sends together,
        had their share of the hour."""
        inbox = canonical_mailbox(to)
        for limiter, key in zip(self.test_send_limiters, (inbox, "all"), strict=True):
            if limiter.over(key, now):
                raise WebError(
                    429,
                    f"Too many test sends {'to this inbox ' if key == inbox else ''}this hour.",
                    retry_after=limiter.retry_in(key, now),
                )
        for limiter, key in zip(self.test_send_limiters, (inbox, "all"), strict=True):
            limiter.allow(key, now)

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def tokens(self) -> Tokens:
        return self.service.tokens

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.service.sessions

    @property
    def schedule(self) -> Schedule:
        return Schedule(
            self.settings.daily_time, self.settings.weekly_time, self.settings.sunday_daily
        )

    async def db(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking database work off the event loop (the scheduler shares it)."""
        return await run_in_threadpool(function, *args, **kwargs)

    def email_task(
        self, signup: SignupResult, now: datetime, editions: Sequence[Shelved] = ()
    ) -> BackgroundTask | None:
        """What to do after answering: send the email (if any), or count why not.
        ``editions``: a welcome's latest public editions of the reader's topics."""
        if signup.held is Held.HOURLY_CAP:
            self._capped(now)
        if signup.notice in (Notice.CONFIRM, Notice.WELCOME_BACK):
            self.service.metrics.signups.inc()
        if not signup.notice:
            return None
        return BackgroundTask(self.send_signup_email, signup, editions)

    async def send_signup_email(
        self, signup: SignupResult, editions: Sequence[Shelved] = ()
    ) -> None:
        """Runs after the answer went out, so its timing tells nothing about the address."""
        try:
            await self.mailer.send(signup, self.clock(), editions)
        except DeliveryError as exc:
            log.warning("signup email not sent (%s); the reader may ask again", exc)
            await self.db(self._release, signup)

    def _release(self, signup: SignupResult) -> None:
        with self.sessions.begin() as session:
            release_email(session, signup)

    def _capped(self, now: datetime) -> None:
        self.service.metrics.signup_emails_capped.inc()
        # One line per quarter of an hour is enough to page someone; a flood must not
        # become a flood of log lines.
        if self._capped_logged_at is None or now - self._capped_logged_at >= CAP_LOG_EVERY:
            self._capped_logged_at = now
            log.warning(
                "signup emails held back: the cap of %d an hour is reached; signups and "
                "fresh-link requests get no email until the hour has passed "
                "(a flood of signups? digestd_signup_emails_capped_total counts them)",
                self.policy.signup_emails_per_hour,
            )


def web(request: Request) -> Web:
    return cast(Web, request.app.state.web)


def client_ip(request: Request) -> str:
    """The key per-client limits count by (web/clients.py: who the client is)."""
    return limit_key(client_address(request))
