"""Sending limits: a global rate, and per recipient domain a rate and a concurrency cap.

Big mailbox providers throttle (421/451) senders that open too many connections or push
too fast to their domain; a global cap protects a relay with a contract. Rates are token
buckets (a burst of one second's worth, then steady); time and sleep are injected so the
limits are tested without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` tokens a second, holding at most ``max(1, rate)``; rate 0 means no limit."""

    rate: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _tokens: float = field(init=False, default=0.0)
    _stamp: float | None = field(init=False, default=None)

    async def take(self) -> None:
        if self.rate <= 0:
            return
        capacity = max(1.0, self.rate)
        while True:
            now = self.clock()
            if self._stamp is None:
                self._tokens = capacity
            else:
                self._tokens = min(capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            # The tolerance stops float rounding (0.999...) from turning into endless
            # sleeps too short to move the clock.
            if self._tokens >= 1 - 1e-9:
                self._tokens = max(0.0, self._tokens - 1)
                return
            await self.sleep((1 - self._tokens) / self.rate)


class Limits:
    """Everything a message waits for before it may use a connection."""

    def __init__(
        self,
        rate: float = 0.0,
        domain_rate: float = 0.0,
        domain_concurrency: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._global = TokenBucket(rate, clock, sleep)
        self._domain_rate = domain_rate
        self._domain_concurrency = domain_concurrency
        self._buckets: dict[str, TokenBucket] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}

    @property
    def active(self) -> bool:
        return bool(self._global.rate > 0 or self._domain_rate > 0 or self._domain_concurrency)

    @asynccontextmanager
    async def slot(self, recipient: str) -> AsyncIterator[None]:
        """Held while one message to ``recipient`` is being sent."""
        if not self.active:
            yield
            return
        domain = recipient.rpartition("@")[2].lower()
        semaphore: asyncio.Semaphore | None = None
        if self._domain_concurrency:
            semaphore = self._slots.get(domain)
            if semaphore is None:
                semaphore = self._slots[domain] = asyncio.Semaphore(self._domain_concurrency)
            await semaphore.acquire()
        try:
            if self._domain_rate > 0:
                bucket = self._buckets.get(domain)
                if bucket is None:
                    bucket = TokenBucket(self._domain_rate, self._clock, self._sleep)
                    self._buckets[domain] = bucket
                await bucket.take()
            await self._global.take()
            yield
        finally:
            if semaphore is not None:
                semaphore.release()
