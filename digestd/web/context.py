"""What every endpoint needs, built once per app: the service, the web policy, pages,
CSRF, the signup mailer and rate limiter, and the clock (tests move it with time_machine)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar, cast

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from digestd.config import Settings
from digestd.errors import DeliveryError
from digestd.mail.render import Renderer
from digestd.readers.lifecycle import Schedule, SignupResult, release_confirmation
from digestd.service import Service
from digestd.tokens import Tokens
from digestd.web.csrf import Csrf
from digestd.web.mailer import SignupMailer
from digestd.web.pages import Pages
from digestd.web.ratelimit import RateLimiter

log = logging.getLogger("digestd.web")
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class WebPolicy:
    signups_per_ip: int = 20
    signup_window: timedelta = timedelta(hours=1)
    confirmation_interval: timedelta = timedelta(minutes=10)  # per address
    max_body: int = 64 * 1024
    max_api_body: int = 8 * 1024 * 1024


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

    def __post_init__(self) -> None:
        settings = self.service.settings
        self.pages = Pages(settings)
        self.csrf = Csrf(self.service.tokens)
        self.renderer = Renderer()
        self.mailer = SignupMailer(
            settings, self.service.tokens, self.service.transport, self.renderer
        )
        self.signup_limiter = RateLimiter(self.policy.signups_per_ip, self.policy.signup_window)

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
        return Schedule(self.settings.daily_time, self.settings.weekly_time)

    async def db(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking database work off the event loop (the scheduler shares it)."""
        return await run_in_threadpool(function, *args, **kwargs)

    async def send_signup_email(self, signup: SignupResult, now: datetime) -> None:
        """Runs after the answer went out, so its timing tells nothing about the address."""
        try:
            await self.mailer.send(signup, now)
        except DeliveryError as exc:
            log.warning("signup email not sent (%s); the reader may ask again", exc)
            await self.db(self._release, signup.public_id, now)

    def _release(self, public_id: str, sent_at: datetime) -> None:
        with self.sessions.begin() as session:
            release_confirmation(session, public_id, sent_at)


def web(request: Request) -> Web:
    return cast(Web, request.app.state.web)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
