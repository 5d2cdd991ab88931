"""A sliding-window counter per key (a client IP), kept in memory.

In memory on purpose: it only has to blunt a burst from one address, and a restart or a
second process giving a few more attempts is harmless. The per-*inbox* limit, which
protects a victim's inbox, lives in the database (:mod:`digestd.readers.mailbox`).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta


class RateLimiter:
    def __init__(self, limit: int, window: timedelta, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: dict[str, deque[datetime]] = {}

    def allow(self, key: str, now: datetime) -> bool:
        """Count one attempt for ``key``; False when it is over the limit."""
        if len(self._hits) >= self.max_keys:
            self._forget_idle(now)
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def over(self, key: str, now: datetime) -> bool:
        """True when ``key`` has no attempt left in the window (counts nothing)."""
        hits = self._hits.get(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits is not None and len(hits) >= self.limit

    def _forget_idle(self, now: datetime) -> None:
        horizon = now - self.window
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= horizon]:
            del self._hits[key]
