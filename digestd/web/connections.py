"""HTTP connections under abuse: one client holding thousands of half-open connections
must stop neither the pages nor the sending (SPEC §10).

uvicorn's own settings do part of it (web/server.py): an idle keep-alive connection closes
after ``timeout_keep_alive``, a request head still incomplete may hold at most
``h11_max_incomplete_event_size`` bytes. What uvicorn lacks is added here, around its h11
protocol:

- the same bound on a head that arrives whole in one read (h11 parses it however large),
  answered 431;

- a deadline for each request to arrive: its line and headers within ``head_seconds``
  (uvicorn has none: its "timeout-request-start" was planned in issue #157 and never
  came, so ``GET / HTTP/1.1`` and nothing more held a connection forever), its body
  within ``body_seconds`` more;
- a cap on open connections per client address (IPv6: per /64, and per /48 too: one
  home or server gets a /56 or a /48, 256 or 65 536 /64s, enough to reach the total from
  one network while each /64 stays under its own cap) and in total, the total kept under
  the process's file descriptor limit. uvicorn's ``limit_concurrency`` does not
  fit: it counts half-open connections too, keeps them open, and answers every other
  client 503. Here a connection over a cap is reset as soon as it is accepted, so its
  descriptor comes back at once. Trusted proxies carry many clients: they count only
  towards the total.

Refusals and timeouts are counted and told in at most one log line a minute: a flood must
not become a flood of log lines (nor, through :class:`AcceptErrorLine` and
:class:`RepeatFilter`, must asyncio's report of every failed accept() at the descriptor
limit, or uvicorn's warning about every malformed request).
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Network
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr

from digestd.web.clients import limit_key, parse_address

log = logging.getLogger("digestd.web")
LOG_EVERY = 60.0  # seconds between two lines about the same trouble


@dataclass(frozen=True)
class ConnectionLimits:
    head_seconds: float = 10.0  # a request's line and headers arrive within this
    body_seconds: float = 60.0  # and its body within this after them
    keep_alive_seconds: int = 5  # idle between two requests (uvicorn's timeout_keep_alive)
    max_head_bytes: int = 16 * 1024  # request line and headers (h11_max_incomplete_event_size)
    per_client: int = 64  # open connections from one address (a browser opens 6)
    per_site: int = 256  # from one IPv6 /48, whatever its /64s (one site's networks)
    total: int = 2048  # open connections in all; see fitted()

    def fitted(self, descriptors: int) -> ConnectionLimits:
        """Leave a quarter of the descriptors (at least 128) to the database, SMTP, files
        and the connections accepted but not yet refused (web/server.py: ACCEPT_BATCH)."""
        room = descriptors - max(128, descriptors // 4)
        return replace(self, total=max(16, min(self.total, room)))


class ConnectionGuard:
    """Open connections per client and in total; who may open one more."""

    def __init__(
        self,
        limits: ConnectionLimits,
        trusted: tuple[IPv4Network | IPv6Network, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.trusted = trusted
        # client key (and an IPv6 client's /48) -> open connections; no key holds 0
        self.open: dict[str, int] = {}
        self.total = 0
        self.refused = 0  # since the last log line
        self.timed_out = 0
        self._clock = clock
        self._logged_at = -LOG_EVERY

    def admit(self, host: str | None) -> str | None:
        """The key to :meth:`release` when the connection closes; None: refuse it."""
        key = "" if self._trusted(host) else limit_key(host)
        site = site_of(key)
        if (
            self.total >= self.limits.total
            or (key and self.open.get(key, 0) >= self.limits.per_client)
            or (site and self.open.get(site, 0) >= self.limits.per_site)
        ):
            self.refused += 1
            self._report(f"client {key or host}")
            return None
        self.total += 1
        for counted in (key, site):
            if counted:
                self.open[counted] = self.open.get(counted, 0) + 1
        return key

    def release(self, key: str) -> None:
        self.total -= 1
        for counted in (key, site_of(key)):
            if counted:
                left = self.open.pop(counted) - 1
                if left:
                    self.open[counted] = left

    def too_slow(self) -> None:
        self.timed_out += 1
        self._report("a request too slow to arrive")

    def _trusted(self, host: str | None) -> bool:
        address = parse_address(host) if host else None
        return address is not None and any(address in network for network in self.trusted)

    def _report(self, latest: str) -> None:
        now = self._clock()
        if now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        log.warning(
            "HTTP connections: %d refused (over %d from one client, %d from one IPv6 /48 "
            "or %d in all), "
            "%d closed for sending a request too slowly; the latest: %s; "
            "%d open now (next report in %.0fs at the earliest)",
            self.refused,
            self.limits.per_client,
            self.limits.per_site,
            self.limits.total,
            self.timed_out,
            latest,
            self.total,
            LOG_EVERY,
        )
        self.refused = self.timed_out = 0


def site_of(key: str) -> str:
    """The /48 of an IPv6 client's key (its /64), "" for any other key."""
    if not key.endswith("/64"):
        return ""
    return str(IPv6Network(key).supernet(new_prefix=48))


_HEAD_END = re.compile(rb"\r?\n\r?\n")  # h11 takes bare LF line ends too
_TOO_BIG_BODY = b"The request's line and headers are too large.\n"
TOO_BIG = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    + b"Content-Length: %d\r\n" % len(_TOO_BIG_BODY)
    + b"Connection: close\r\n\r\n"
    + _TOO_BIG_BODY
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the guard's caps and a deadline per request. It reads
    the protocol's ``conn`` (the h11.Connection) and hooks ``on_response_complete``:
    tests/test_web_connections.py tells when a uvicorn release changes them."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: str | None = None  # the guard's key while admitted
        self._waiting_for: str | None = None  # "head" or "body": what the deadline is for
        self._deadline: asyncio.TimerHandle | None = None

    @classmethod
    def bound_to(cls, guard: ConnectionGuard) -> type[GuardedH11Protocol]:
        return type("GuardedH11Protocol", (cls,), {"guard": guard})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = get_remote_addr(transport)
        self._client = self.guard.admit(peer[0] if peer else None)
        if self._client is None:
            transport.abort()  # a reset: the descriptor is free at once, nothing to log
            return
        super().connection_made(transport)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._client is None:  # refused: uvicorn never saw it
            return
        self.guard.release(self._client)
        self._client = None
        self._set_deadline(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_too_big(data):
            self.transport.write(TOO_BIG)
            self.transport.close()
            return
        super().data_received(data)
        self._watch()

    def _head_too_big(self, data: bytes) -> bool:
        """h11 bounds only a head still incomplete in its buffer: one that arrives whole
        in a single read (up to 64 KB) passed. Here the head is bounded whole or not."""
        if self.conn.their_state is not h11.IDLE:
            return False  # the head is in; this is body, or the next request's pipelined
        buffered = self.conn.trailing_data[0] + data
        end = _HEAD_END.search(buffered)
        size = end.end() if end else len(buffered)
        return size > self.guard.limits.max_head_bytes

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._set_deadline(None)  # the next request on this connection has its own time
        self._watch()

    def _watch(self) -> None:
        """Arm the deadline for what the client owes us now: the next request's head
        (h11 IDLE, a partial head included), its body (SEND_BODY), or nothing."""
        state = self.conn.their_state
        owed = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if owed != self._waiting_for:
            self._set_deadline(owed)

    def _set_deadline(self, owed: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._waiting_for = owed
        if owed is not None and not self.transport.is_closing():
            limits = self.guard.limits
            seconds = limits.head_seconds if owed == "head" else limits.body_seconds
            self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        self.guard.too_slow()
        self.transport.abort()


class RepeatFilter(logging.Filter):
    """Lets one record with a given message template through per interval; the ones held
    back are counted into the next that passes."""

    def __init__(self, interval: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # template -> (last let through, held)

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg).split("\n", 1)[0][:200]
        now = self._clock()
        last, held = self._seen.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._seen[key] = (last, held + 1)
            return False
        if len(self._seen) >= 1000:  # templates, not values: a handful in practice
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {now - last:.0f}s]"
        return True


class AcceptErrorLine(logging.Filter):
    """asyncio's report of a failed accept() (a traceback and the socket's repr) as one line
    an operator can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OSError) and str(record.msg).startswith("socket.accept() out of"):
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            record.msg = (
                f"cannot accept HTTP connections: {error.strerror} (the open files limit is "
                f"{limit}); asyncio tries again every second"
            )
            record.args = None
            record.exc_info = None
        return True
