"""The HTTP server: uvicorn inside the daemon's event loop, configured from digestd's settings.

uvicorn trusts ``X-Forwarded-For`` from exactly ``DIGESTD_TRUSTED_PROXIES`` (its default,
127.0.0.1 and ::1, would let anyone behind a local proxy, or any local process, name any
client address), speaks HTTP/1.1 through h11 with the deadlines and caps of
:mod:`digestd.web.connections`, and has no WebSocket or lifespan support (nothing uses them).
"""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Network, IPv6Network

import uvicorn
from starlette.types import ASGIApp

from digestd.config import Settings
from digestd.errors import ConfigError
from digestd.web.connections import (
    AcceptErrorLine,
    ConnectionGuard,
    ConnectionLimits,
    GuardedH11Protocol,
    RepeatFilter,
)

BACKLOG = 2048  # the kernel's queue of connections not yet accepted
# How many connections one wake-up of the loop accepts. Each holds a descriptor until its
# connection_made() (a few loop iterations later) can refuse it, so a burst of a whole
# BACKLOG at once would take every descriptor the database and templates need.
ACCEPT_BATCH = 64
GRACEFUL_SECONDS = 5  # open requests finish within this once digestd is told to stop
# Loggers that can write a line per connection or per retry under a flood.
NOISY_LOGGERS = ("asyncio", "uvicorn.error")


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT and stops
    the server itself (uvicorn would otherwise replace our handlers and re-raise)."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard) -> None:
        super().__init__(config)
        self.guard = guard

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # asyncio takes create_server's backlog both for listen() and for the accepts per
        # wake-up: uvicorn was given ACCEPT_BATCH, the kernel's queue gets BACKLOG back.
        await super().startup(sockets)
        for sock in sockets or []:
            sock.listen(BACKLOG)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None


def listen_socket(settings: Settings) -> socket.socket:
    """Bind before anything starts, so a taken port is one clear configuration error."""
    try:
        infos = socket.getaddrinfo(
            settings.listen_host, settings.listen_port, type=socket.SOCK_STREAM
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)  # connections queue from now on, even before uvicorn accepts
    except OSError as exc:
        raise ConfigError(
            "DIGESTD_LISTEN",
            f"cannot listen on {settings.listen_url.removeprefix('http://')}: "
            f"{exc.strerror or exc}",
        ) from exc
    sock.set_inheritable(True)
    return sock


def open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one, as Go's runtime does at start
    (the soft 1024 of many systems is for select(), which asyncio does not use), and
    return it: the cap on connections is fitted under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def http_server(app: ASGIApp, settings: Settings, limits: ConnectionLimits) -> EmbeddedServer:
    trusted = settings.http.trusted_proxies
    guard = ConnectionGuard(limits, trusted)
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        http=GuardedH11Protocol.bound_to(guard),
        ws="none",
        lifespan="off",
        log_config=None,  # keep digestd's logging
        access_log=False,
        server_header=False,
        # Never None: uvicorn would then trust FORWARDED_ALLOW_IPS or 127.0.0.1 and ::1.
        proxy_headers=bool(trusted),
        forwarded_allow_ips=forwarded_allow_ips(trusted),
        timeout_keep_alive=limits.keep_alive_seconds,
        h11_max_incomplete_event_size=limits.max_head_bytes,
        backlog=ACCEPT_BATCH,
        # On SIGTERM, requests still open after this are cut: a client holding a request
        # half-sent kept the process up for its body timeout (60 s), past Docker's 10 s.
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    quiet_noisy_loggers()
    return EmbeddedServer(config, guard)


def forwarded_allow_ips(trusted: Sequence[IPv4Network | IPv6Network]) -> list[str]:
    """The networks uvicorn believes ``X-Forwarded-For`` from: the trusted proxies, each
    IPv4 one in its IPv4-mapped form too. On a dual-stack socket (``[::]``) an IPv4 proxy
    connects as ``::ffff:a.b.c.d``, which uvicorn does not match with ``a.b.c.d``: every
    reader behind it was that proxy, sharing one signup allowance, and consent recorded it."""
    allowed = []
    for network in trusted:
        allowed.append(str(network))
        if isinstance(network, IPv4Network):
            mapped = IPv6Network(f"::ffff:{network.network_address}/{96 + network.prefixlen}")
            allowed.append(str(mapped))
    return allowed


def quiet_noisy_loggers() -> None:
    """At most one line a minute per message from the loggers a flood makes talk: asyncio
    reports every failed accept() at the file descriptor limit (up to ``BACKLOG`` a second),
    uvicorn every malformed request."""
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptErrorLine) for f in asyncio_log.filters):
        asyncio_log.addFilter(AcceptErrorLine())  # before RepeatFilter: one line, then rare
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(RepeatFilter())
