"""Who is asking: the client address that per-client limits count and consent records keep.

The client is the TCP peer, unless the peer is one of ``DIGESTD_TRUSTED_PROXIES``. Then
uvicorn, started with ``forwarded_allow_ips`` set to exactly those networks (web/server.py),
has already replaced the peer by the right-most ``X-Forwarded-For`` hop that is not itself
a trusted proxy: each proxy appends the address it saw, so hops further left were written
by the client and prove nothing. Whatever ends up here is checked to be an IP address, so
a header's garbage never reaches a limit key or a consent record.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

from starlette.requests import Request

# Headers a reverse proxy adds: a loopback peer carrying one is relaying someone else.
RELAY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def parse_address(text: str) -> IPv4Address | IPv6Address | None:
    """An IP address (an IPv4 client of a dual-stack socket as IPv4), or None."""
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if isinstance(address, IPv6Address) and address.scope_id is not None:
        # A zone (``fe80::1%eth0``) names an interface of the host that wrote it, nothing
        # of the client; its text is anything but "%" and "/", up to any length, so kept it
        # would carry a header's garbage into a consent record and give one /64 a fresh
        # limit key per zone.
        return IPv6Address(address.packed)
    return address


def client_address(request: Request) -> str | None:
    """The client's IP address, or None when there is none to believe (a test client,
    a Unix socket, a proxy header that is not an address)."""
    address = parse_address(request.client.host) if request.client else None
    return None if address is None else str(address)


def limit_key(address: str | None) -> str:
    """What per-client limits count by: the address, or for IPv6 its /64 (one subscriber
    line gets a whole /64, so counting single addresses would count nothing)."""
    parsed = parse_address(address) if address else None
    if parsed is None:
        return "unknown"
    if isinstance(parsed, IPv6Address):
        return str(IPv6Network(f"{parsed}/64", strict=False))
    return str(parsed)


def is_local(request: Request) -> bool:
    """The request comes from this machine itself and names it by a loopback name: not
    relayed through a proxy on it, and not sent by a web page whose host name was rebound
    to 127.0.0.1 (a browser names that page's host in ``Host``)."""
    address = parse_address(request.client.host) if request.client else None
    if address is None or not address.is_loopback:
        return False
    if any(name in request.headers for name in RELAY_HEADERS):
        return False
    host = request.headers.get("host", "")
    name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    return is_loopback_name(name)


def is_loopback_name(host: str) -> bool:
    """``localhost`` or a loopback address (``[::1]`` with or without its brackets)."""
    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ip_address(name).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False
