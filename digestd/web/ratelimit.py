"""A sliding-window counter per key (a client address), kept in memory, of bounded size.

In memory on purpose: it only has to blunt a burst from one address, and a restart or a
second process giving a few more attempts is harmless. The per-*inbox* limit, which
protects a victim's inbox, lives in the database (:mod:`digestd.readers.mailbox`).

At most ``max_keys`` keys are kept, least recently seen forgotten first, so a flood of
distinct addresses costs a fixed amount of memory. Forgetting a key can only give that
address its attempts back, and only once the flood has pushed it out.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from datetime import datetime, timedelta


class RateLimiter:
    def __init__(self, limit: int, window: timedelta, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        # key -> the times of its attempts in the window, oldest first
        self._hits: OrderedDict[str, deque[datetime]] = OrderedDict()

    def allow(self, key: str, now: datetime) -> bool:
        """Count one attempt for ``key``; False when it is over the limit."""
        hits = self._hits.pop(key, None)
        if hits is None:
            hits = deque(maxlen=self.limit)
            while len(self._hits) >= self.max_keys:
                self._hits.popitem(last=False)
        self._hits[key] = hits  # now the most recently seen
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

    def retry_in(self, key: str, now: datetime) -> int:
        """Whole seconds until ``key`` has an attempt again (0: it has one now)."""
        if not self.over(key, now):
            return 0
        oldest = self._hits[key][0]
        return max(1, math.ceil((oldest + self.window - now).total_seconds()))

    def __len__(self) -> int:
        return len(self._hits)
