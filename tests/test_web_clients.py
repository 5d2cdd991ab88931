"""Who the client is, through the daemon's real uvicorn server: the TCP peer, unless the peer
is a trusted proxy; then the right-most X-Forwarded-For hop that is not one. The signup
and sign-in limits count by it, the consent record keeps it, and a forged or garbage
header moves neither. The limiters' memory stays bounded whatever the flood of addresses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx

from digestd.config import load_settings
from digestd.service import Service
from digestd.web.clients import limit_key
from digestd.web.context import WebPolicy
from digestd.web.ratelimit import RateLimiter
from tests.conftest import SmtpSink, WebRig
from tests.live_server import LiveServer
from tests.web_helpers import SIGNUP, csrf_of, links_in


@contextmanager
def _site(env: dict[str, str], signups_per_ip: int, **extra: str) -> Iterator[httpx.Client]:
    service = Service.build(load_settings({**env, **extra}))
    policy = WebPolicy(signups_per_ip=signups_per_ip)
    with LiveServer(service, policy=policy) as server, httpx.Client(base_url=server.url) as client:
        yield client


def _signup(client: httpx.Client, email: str, forwarded_for: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post("/subscribe", json={**SIGNUP, "email": email}, headers=headers).status_code


def _wrong_tokens(client: httpx.Client, page_for: str | None, hops: list[str]) -> list[int]:
    """The admin sign-in with a wrong token, once from each forwarded address in ``hops``
    (the sign-in page fetched as ``page_for``): the answers' status codes."""
    headers = {"X-Forwarded-For": page_for} if page_for else {}
    csrf = csrf_of(client.get("/admin", headers=headers).text)
    return [
        client.post(
            "/admin/login",
            data={"csrf": csrf, "token": "wrong"},
            headers={"X-Forwarded-For": hop},
        ).status_code
        for hop in hops
    ]


def _confirm(client: httpx.Client, smtp: SmtpSink, email: str, forwarded_for: str) -> None:
    raw = next(m.data for m in reversed(smtp.messages) if email in m.recipients)
    answer = client.get(links_in(raw)["confirm"], headers={"X-Forwarded-For": forwarded_for})
    assert answer.status_code == 200, answer.text


def _consent_ip(web: WebRig, email: str) -> str | None:
    reader = web.subscriber(email)
    assert reader is not None and reader.status == "active"
    return reader.consent_ip


def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    web_env: dict[str, str], smtp_server: SmtpSink, web: WebRig
) -> None:
    with _site(web_env, signups_per_ip=3) as client:
        for n in range(3):
            assert _signup(client, f"r{n}@example.com", f"198.51.100.{n}") == 202
        # A fresh address in the header every time: still the same peer, still limited.
        assert _signup(client, "r3@example.com", "198.51.100.3") == 429
        smtp_server.wait_for(3)
        _confirm(client, smtp_server, "r0@example.com", "198.51.100.99")
        # The admin sign-in lockout holds against the same trick.
        tries = _wrong_tokens(client, None, [f"192.0.2.{n}" for n in range(11)])
    assert tries == [401] * 10 + [429]
    assert _consent_ip(web, "r0@example.com") == "127.0.0.1"  # the peer, not the header
    assert web.subscriber("r3@example.com") is None


def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client(
    web_env: dict[str, str], smtp_server: SmtpSink, web: WebRig
) -> None:
    # reader -> proxy 10.1.1.1 -> proxy on 127.0.0.1 -> digestd; the reader wrote the left part.
    def chain(forged: str, reader: str = "198.51.100.9") -> str:
        return f"{forged}, {reader}, 10.1.1.1"

    proxies = {"DIGESTD_TRUSTED_PROXIES": "127.0.0.1/32, 10.0.0.0/8"}
    with _site(web_env, signups_per_ip=2, **proxies) as client:
        assert _signup(client, "a@example.com", chain("203.0.113.1")) == 202
        assert _signup(client, "b@example.com", chain("203.0.113.2")) == 202
        assert _signup(client, "c@example.com", chain("203.0.113.3")) == 429  # same reader
        assert _signup(client, "d@example.com", chain("203.0.113.4", "198.51.100.10")) == 202
        # Without the header the peer is the client: the proxy itself, a key of its own.
        assert _signup(client, "e@example.com", None) == 202
        smtp_server.wait_for(4)
        _confirm(client, smtp_server, "a@example.com", chain("203.0.113.77"))
        _confirm(client, smtp_server, "d@example.com", "2001:db8::1:5, 10.9.9.9")
    assert _consent_ip(web, "a@example.com") == "198.51.100.9"
    assert _consent_ip(web, "d@example.com") == "2001:db8::1:5"


def test_garbage_in_forwarded_for_never_lands_in_the_consent_record(
    web_env: dict[str, str], smtp_server: SmtpSink, web: WebRig
) -> None:
    garbage = [
        "<script>alert(1)</script>",
        "198.51.100.1, not-an-address",
        "unknown",
        "x" * 300,
        "1.2.3.4.5",
        "'; DROP TABLE subscribers; --",
    ]
    proxies = {"DIGESTD_TRUSTED_PROXIES": "127.0.0.1/32"}
    with _site(web_env, signups_per_ip=50, **proxies) as client:
        for n, header in enumerate(garbage):
            assert _signup(client, f"g{n}@example.com", header) == 202
        smtp_server.wait_for(len(garbage))
        for n, header in enumerate(garbage):
            _confirm(client, smtp_server, f"g{n}@example.com", header)
    # A trusted proxy passing on garbage leaves no address to record; never the garbage.
    assert {_consent_ip(web, f"g{n}@example.com") for n in range(len(garbage))} == {None}
    # From an untrusted peer the header is not even read: the peer is recorded.
    with _site(web_env, signups_per_ip=50) as client:
        assert _signup(client, "u@example.com", garbage[0]) == 202
        smtp_server.wait_for(2 * len(garbage) + 1)  # each confirmed one got a welcome too
        _confirm(client, smtp_server, "u@example.com", garbage[0])
    assert _consent_ip(web, "u@example.com") == "127.0.0.1"


def test_limiters_keep_a_bounded_number_of_addresses() -> None:
    limiter = RateLimiter(limit=2, window=timedelta(hours=1), max_keys=100)
    now = datetime(2026, 11, 30, tzinfo=UTC)
    assert limiter.allow("198.51.100.7", now) and limiter.allow("198.51.100.7", now)
    assert not limiter.allow("198.51.100.7", now)
    for n in range(50):  # a flood of distinct addresses, while the limited one keeps trying
        limiter.allow(f"10.0.{n // 256}.{n % 256}", now)
        assert not limiter.allow("198.51.100.7", now)
    for n in range(100_000):
        limiter.allow(f"2001:db8:{n // 65536:x}:{n % 65536:x}::/64", now)
        assert len(limiter) <= 100
    # Pushed out by the flood, the oldest address got its attempts back: the price of the
    # bound (the per-inbox limit in the database does not forget).
    assert limiter.allow("198.51.100.7", now)
    # Attempts leave the window.
    assert limiter.allow("203.0.113.1", now) and limiter.allow("203.0.113.1", now)
    assert not limiter.allow("203.0.113.1", now + timedelta(minutes=59))
    assert limiter.allow("203.0.113.1", now + timedelta(hours=1, seconds=1))


def test_ipv6_clients_are_limited_by_their_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::2")
    assert limit_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("::ffff:198.51.100.7") == limit_key("198.51.100.7") == "198.51.100.7"
    assert limit_key(None) == limit_key("<script>") == "unknown"


def test_behind_a_proxy_an_ipv6_client_rotating_within_its_64_shares_one_allowance(
    web_env: dict[str, str], smtp_server: SmtpSink
) -> None:
    # One subscriber line owns a whole /64: each request from a fresh address in it, as the
    # proxy writes it (bare, bracketed with a port, spelled out in full), counts for the /64.
    proxies = {"DIGESTD_TRUSTED_PROXIES": "127.0.0.1/32"}
    same_64 = ["2001:db8:1:2::a", "[2001:db8:1:2:ffff::b]:443", "2001:0db8:0001:0002:0:0:0:c"]
    with _site(web_env, signups_per_ip=2, **proxies) as client:
        answers = [_signup(client, f"v6-{n}@example.com", hop) for n, hop in enumerate(same_64)]
        assert answers == [202, 202, 429]
        # The next /64 is another subscriber line with an allowance of its own.
        assert _signup(client, "v6-next@example.com", "2001:db8:1:3::a") == 202
        # An IPv4 client written as IPv4-mapped IPv6 is that IPv4 address.
        assert _signup(client, "v4-0@example.com", "198.51.100.7") == 202
        assert _signup(client, "v4-1@example.com", "::ffff:198.51.100.7") == 202
        assert _signup(client, "v4-2@example.com", "[::ffff:c633:6407]:8443") == 429
        # A hop the client wrote left of its own address chooses nothing.
        assert _signup(client, "v6-forged@example.com", "2001:db8:9::1, 2001:db8:1:2::d") == 429
        # The admin sign-in lockout counts wrong tokens by the /64 too.
        hops = [f"2001:db8:7:7::{n + 2:x}" for n in range(11)]
        tries = _wrong_tokens(client, "2001:db8:7:7::1", hops)
    assert tries == [401] * 10 + [429]


def test_a_dual_stack_listener_believes_an_ipv4_proxy_whose_connections_arrive_mapped(
    web_env: dict[str, str], smtp_server: SmtpSink, web: WebRig
) -> None:
    # Listening on [::], the proxy on 127.0.0.1 connects as ::ffff:127.0.0.1.
    env = {**web_env, "DIGESTD_LISTEN": "[::]:8080", "DIGESTD_TRUSTED_PROXIES": "127.0.0.1/32"}
    service = Service.build(load_settings(env))
    with (
        LiveServer(service, policy=WebPolicy(signups_per_ip=2)) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client,
    ):
        # Four readers behind the proxy: each has an allowance of its own.
        answers = [_signup(client, f"p{n}@example.com", f"198.51.100.{n}") for n in range(4)]
        assert answers == [202] * 4
        assert _signup(client, "p4@example.com", "198.51.100.3") == 202
        assert _signup(client, "p5@example.com", "198.51.100.3") == 429
        smtp_server.wait_for(5)
        _confirm(client, smtp_server, "p0@example.com", "198.51.100.50")
    assert _consent_ip(web, "p0@example.com") == "198.51.100.50"


def test_a_zone_in_a_forwarded_ipv6_address_is_dropped(
    web_env: dict[str, str], smtp_server: SmtpSink, web: WebRig
) -> None:
    # A zone is any text but "%" and "/": neither a fresh allowance nor the consent record's.
    proxies = {"DIGESTD_TRUSTED_PROXIES": "127.0.0.1/32"}
    with _site(web_env, signups_per_ip=2, **proxies) as client:
        zones = [_signup(client, f"z{n}@example.com", f"2001:db8:1:2::%{n}") for n in range(3)]
        assert zones == [202, 202, 429]
        smtp_server.wait_for(2)
        _confirm(client, smtp_server, "z0@example.com", "2001:db8::5%'; DROP TABLE x; " + "x" * 80)
    assert _consent_ip(web, "z0@example.com") == "2001:db8::5"
