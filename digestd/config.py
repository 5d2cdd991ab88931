"""Typed, frozen settings read once from ``DIGESTD_*`` variables (and an optional TOML file).

The environment wins over the file. Every bad value raises :class:`ConfigError` naming the
variable, so start-up fails with one line an operator can act on. Nothing here runs at import.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import time
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from digestd import config_values as values
from digestd.dev_key import dev_secret
from digestd.errors import ConfigError

PREFIX = "DIGESTD_"
# Variables digestd's own test suite and benchmarks read: not settings, and not typos.
NOT_SETTINGS = ("DIGESTD_TEST_", "DIGESTD_BENCH_")
LOG_FORMATS = ("text", "logfmt", "json")
# DIGESTD_TRACK_CLICKS (SPEC §11, README "Clicks"): off, aggregate (counts per edition and
# article, no per-reader record) or reader (per-reader clicks: learning and sunset).
TRACK_CLICKS = ("off", "aggregate", "reader")
# Placeholders a development install starts with; with a real relay `digestd run` refuses
# them (digestd.ops.golive).
DEFAULT_FROM_ADDRESS = "digest@example.com"
DEFAULT_FROM = f"Tech Pulse <{DEFAULT_FROM_ADDRESS}>"
DEFAULT_POSTAL_ADDRESS = "Tech Pulse · 1 Example Street · Springfield, USA"


@dataclass(frozen=True)
class SmtpSettings:
    """Where mail goes: parsed from ``DIGESTD_SMTP_URL``."""

    host: str
    port: int
    use_tls: bool  # implicit TLS (smtps://)
    start_tls: bool | None  # True: required; None: when the server offers it; False: never
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0  # opening the session, and each command's reply
    # The reply to the end of the content: a content filter may take minutes, and giving up
    # after the server took the message sends it twice (RFC 5321 §4.5.3.2.6: 10 minutes).
    data_timeout: float = 600.0
    cafile: str | None = None  # CA bundle to verify the relay with (a private CA); None: system
    pipelining: bool = True  # used when the server offers it; False: one command at a time
    insecure_auth: bool = False  # allow AUTH without TLS (a trusted relay on loopback)
    ehlo: str | None = None  # the name said in EHLO; None: aiosmtplib's (this host's FQDN)
    catcher: bool = False  # a mail catcher that delivers nothing (Mailpit): not going live

    @property
    def slowest_message_seconds(self) -> float:
        """How long one message may take at worst: opening a session (bounded as a whole by
        ``timeout``), ``MAIL``, ``RCPT`` and ``DATA`` in lockstep, then the final reply."""
        return 4 * self.timeout + self.data_timeout


MAX_HELPER_PROCESSES = 64


@dataclass(frozen=True)
class DeliveryTuning:
    """How hard and how carefully the sender pushes mail (README: "Delivery tuning").

    Rates are messages per second, 0 meaning no limit.
    """

    pool_size: int = 4  # DIGESTD_SMTP_POOL_SIZE: persistent SMTP connections
    max_per_connection: int = 1000  # DIGESTD_SMTP_MAX_PER_CONNECTION: then reconnect
    rate: float = 0.0  # DIGESTD_SMTP_RATE: global messages per second
    domain_concurrency: int = 0  # DIGESTD_SMTP_DOMAIN_CONCURRENCY: per recipient domain, 0 = pool
    domain_rate: float = 0.0  # DIGESTD_SMTP_DOMAIN_RATE: per recipient domain
    failure_burst: int = 50  # DIGESTD_SMTP_FAILURE_BURST: consecutive failures that pause
    pause_seconds: float = 60.0  # DIGESTD_SMTP_PAUSE_SECONDS: how long such a pause lasts
    # DIGESTD_SMTP_STORM_DOMAINS: the same final refusal (permanent, or temporary on a last
    # try) from this many recipient domains in a row is about the relay: it pauses sending
    # and suppresses nobody
    storm_domains: int = 5
    batch: int = 500  # DIGESTD_SEND_BATCH: rows claimed at once
    lease_seconds: float = 3600.0  # DIGESTD_SEND_LEASE_SECONDS: a dead worker's rows return
    tick_seconds: float = 60.0  # DIGESTD_TICK_SECONDS: how often `run` wakes the work
    # DIGESTD_HELPER_PROCESSES: 1 plans due editions (and renders their digests) in a process
    # beside the sender, on another core; 0 does everything in the sending process
    helper_processes: int = 1
    max_attempts: int = 8  # DIGESTD_MAX_ATTEMPTS: tries of one message before it fails


@dataclass(frozen=True)
class DkimSettings:
    """Optional DKIM signing: DIGESTD_DKIM_SELECTOR, _DOMAIN and _KEY_FILE (PEM)."""

    selector: str
    domain: str
    private_key: bytes = field(repr=False)


@dataclass(frozen=True)
class HttpSettings:
    """Who the HTTP server believes and who may read ``/metrics`` (README: "Behind a proxy")."""

    # DIGESTD_TRUSTED_PROXIES: only a TCP peer in one of these is believed about the client
    # (X-Forwarded-For); everyone else is the client themselves.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    # DIGESTD_METRICS_TOKEN: the bearer token /metrics asks for; None: loopback clients only.
    metrics_token: str | None = field(default=None, repr=False)
    # DIGESTD_SITE_ORIGINS: web origins whose pages may POST the signup form (an embedded
    # form, or fetch with CORS), without the CSRF token only our own page can carry.
    site_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    smtp: SmtpSettings | None  # None: the embedded development mail catcher
    base_url: str
    listen_host: str
    listen_port: int
    from_name: str
    from_address: str
    secret_keys: tuple[str, ...] = field(repr=False)  # newest first, as configured
    admin_token: str | None = field(repr=False)
    postal_address: str
    site_name: str
    daily_time: time
    weekly_time: time
    default_timezone: str
    catchup_hours: float
    daily_limit: int
    weekly_limit: int
    per_source_limit: int
    generated_secret: bool = False  # True when no key was configured (development only)
    # DIGESTD_* variables of the environment that are no setting (a typo), each with the
    # setting it is most like, if any: ``digestd run`` warns, ``digestd check`` lists them
    unknown_variables: tuple[tuple[str, str | None], ...] = ()
    delivery: DeliveryTuning = field(default_factory=DeliveryTuning)
    dkim: DkimSettings | None = None
    log_format: str = "text"  # text | logfmt | json
    # DIGESTD_INBOUND_LISTEN: (host, port) of the LMTP listener for bounces, complaints and
    # mailto: unsubscribes (digestd.inbound); None: not listening
    inbound_listen: tuple[str, int] | None = None
    http: HttpSettings = field(default_factory=HttpSettings)
    # DIGESTD_DEV_MAILBOX: serve /dev/mail beyond loopback too (see web/devmail.py)
    dev_mailbox: bool = False
    retention_days: int = 90  # DIGESTD_RETENTION_DAYS: settled history kept (ops/retention.py)
    # DIGESTD_SUNDAY_DAILY: a reader on both gets the Sunday daily as well as the recap
    sunday_daily: bool = False
    track_clicks: str = "aggregate"  # DIGESTD_TRACK_CLICKS: one of TRACK_CLICKS
    # DIGESTD_SUNSET_WEEKS: weeks without a click before a reader is asked (reader mode)
    sunset_weeks: int = 12

    @property
    def tracks_clicks(self) -> bool:
        return self.track_clicks != "off"

    @property
    def tracks_readers(self) -> bool:
        return self.track_clicks == "reader"

    @property
    def listen_url(self) -> str:
        return http_url(self.listen_host, self.listen_port)

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def from_domain(self) -> str:
        return self.from_address.rpartition("@")[2]

    @property
    def list_id(self) -> str:
        host = urlsplit(self.base_url).hostname or "localhost"
        return f"{self.site_name} digests <digest.{host}>"


def _parse_hour(variable: str, raw: str) -> time:
    text = raw.strip()
    try:
        if not text.isascii():  # int() reads other scripts' digits: "٧" would be 07:00
            raise ValueError(text)
        if ":" in text:
            hours, minutes = text.split(":", 1)
            return time(int(hours), int(minutes))
        return time(int(text), 0)
    except (ValueError, OverflowError) as exc:
        raise ConfigError(
            variable, f"expected an hour such as 7 or 07:30, got {raw[:40]!r}"
        ) from exc


def _parse_choice(variable: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(variable, f"must be one of {', '.join(choices)}, got {raw!r}")
    return value


SMTP_OPTIONS = (
    "starttls",
    "timeout",
    "data_timeout",
    "cafile",
    "pipelining",
    "insecure_auth",
    "ehlo",
    "catcher",
)
_FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# A domain name (RFC 5321 "Domain"): letters, digits and hyphens in dot-separated labels.
_DOMAIN = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def parse_smtp_url(raw: str, variable: str = PREFIX + "SMTP_URL") -> SmtpSettings:
    """``smtp://user:pass@host:587?starttls=true`` or ``smtps://host:465``; options after
    ``?`` are listed in :data:`SMTP_OPTIONS` (README: ``DIGESTD_SMTP_URL``)."""
    shown = without_password(raw)  # messages reach stderr and the journal
    _check_userinfo(variable, raw.strip())
    try:
        parts = urlsplit(raw.strip())
    except ValueError as exc:  # an unclosed IPv6 bracket, for one
        raise ConfigError(variable, f"not a URL: {shown!r} ({exc})") from exc
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError(variable, f"scheme must be smtp:// or smtps://, got {shown!r}")
    port = values.port(variable, parts, shown)
    if not parts.hostname:
        raise ConfigError(variable, f"no host in {shown!r}")
    query = {
        name: values[-1] for name, values in parse_qs(parts.query, keep_blank_values=True).items()
    }
    unknown = sorted(set(query) - set(SMTP_OPTIONS))
    if unknown:
        known = ", ".join(SMTP_OPTIONS)
        raise ConfigError(variable, f"unknown option {unknown[0]!r} (know {known})")
    use_tls = parts.scheme == "smtps"
    start_tls = _smtp_flag(variable, query, "starttls", None)
    if use_tls and start_tls:
        raise ConfigError(variable, "smtps:// already uses TLS; drop ?starttls=true")
    settings = SmtpSettings(
        host=parts.hostname,
        port=port or (465 if use_tls else 25),
        use_tls=use_tls,
        start_tls=False if use_tls else start_tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=_smtp_seconds(variable, query, "timeout", 30.0),
        data_timeout=_smtp_seconds(variable, query, "data_timeout", 600.0),
        cafile=query.get("cafile"),
        pipelining=bool(_smtp_flag(variable, query, "pipelining", True)),
        insecure_auth=bool(_smtp_flag(variable, query, "insecure_auth", False)),
        ehlo=_ehlo_name(variable, query["ehlo"]) if "ehlo" in query else None,
        catcher=bool(_smtp_flag(variable, query, "catcher", False)),
    )
    _check_smtp_tls(variable, settings)
    return settings


def _check_userinfo(variable: str, raw: str) -> None:
    """Refuse credentials the URL cannot carry as written. A relay's generated password
    often holds ``/`` or ``+`` (Amazon SES's are base64): unencoded, ``/``, ``?`` or ``#``
    ends the URL's host part early, and the parse would blame a port the operator can see
    is right. A user without a password (or the reverse) would send no AUTH at all, and
    the relay would refuse every message as unauthenticated, retried until it fails."""
    _, sep, rest = raw.partition("//")
    userinfo, at, _ = rest.rpartition("@")
    if not (sep and at):
        return
    options = (f"?{name}=" for name in SMTP_OPTIONS)
    if any(char in userinfo for char in "/?#"):
        if any(option in userinfo for option in options):
            return  # the '@' is in an option's value (a cafile path), not after a user
        raise ConfigError(
            variable,
            "the user or password holds '/', '?' or '#': write them percent-encoded "
            "(%2F, %3F, %23; '@' as %40, '%' as %25)",
        )
    user, _, password = userinfo.partition(":")
    if not user or not password:
        missing = "password" if user else "user name"
        raise ConfigError(
            variable,
            f"no {missing} before the '@': write smtp://USER:PASSWORD@host, or neither "
            "for a relay that needs no AUTH",
        )


def without_password(url: str) -> str:
    """``url`` with everything before its last ``@`` (the user and password) shown as
    ``***``: a password may itself hold ``@``, ``/``, ``?`` or ``#``, unencoded."""
    scheme, sep, rest = url.partition("//")
    user, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if sep and at and user else url


def _smtp_flag(
    variable: str, query: dict[str, str], name: str, default: bool | None
) -> bool | None:
    if name not in query:
        return default
    flag = _FLAGS.get(query[name].strip().lower())
    if flag is None:
        raise ConfigError(variable, f"{name} must be true or false, got {query[name]!r}")
    return flag


def _smtp_seconds(variable: str, query: dict[str, str], name: str, default: float) -> float:
    if name not in query:
        return default
    try:
        seconds = float(query[name])
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(
            variable, f"{name} must be a positive number of seconds, got {query[name]!r}"
        )
    return seconds


def _ehlo_name(variable: str, raw: str) -> str:
    """A domain, or an address literal: ``[192.0.2.1]``, ``[IPv6:2001:db8::1]`` (RFC 5321
    §4.1.3). Nothing else may go on the EHLO line (a space or CRLF would add to it)."""
    if raw.startswith("[") and raw.endswith("]"):
        literal = raw[1:-1]
        version = 6 if literal.startswith("IPv6:") else 4
        try:
            if ip_address(literal.removeprefix("IPv6:")).version == version:
                return raw
        except ValueError:
            pass
    elif len(raw) <= 253 and _DOMAIN.fullmatch(raw):
        return raw
    raise ConfigError(variable, f"ehlo must be a host name or an [address], got {raw!r}")


def _check_smtp_tls(variable: str, smtp: SmtpSettings) -> None:
    """Options that only make sense with TLS, and credentials never sent in clear text."""
    never_tls = not smtp.use_tls and smtp.start_tls is False
    if smtp.cafile is not None:
        if never_tls:
            raise ConfigError(variable, "cafile needs TLS: smtps://, or drop ?starttls=false")
        if not Path(smtp.cafile).is_file():
            raise ConfigError(variable, f"cafile {smtp.cafile!r} is not a readable file")
    if smtp.username and never_tls and not smtp.insecure_auth:
        raise ConfigError(
            variable,
            "the password would go in clear text with ?starttls=false; use smtps:// or "
            "STARTTLS, or add ?insecure_auth=true for a trusted relay",
        )


# The sender starts no message in the last fifth of a batch's lease (delivery/batches.py
# releases what is unstarted at 80 %): that fifth must hold the slowest message, or its
# outcome comes after the lease ran out and the row is sent again.
LEASE_SHARE_AFTER_LAST_START = 0.2


def check_lease_budget(smtp: SmtpSettings | None, tuning: DeliveryTuning) -> None:
    """Refuse a ``DIGESTD_SEND_LEASE_SECONDS`` too short for a batch whose last message
    waits the full ``data_timeout`` (nothing to check for the mail catcher: ``None``)."""
    if smtp is None:
        return
    slowest = smtp.slowest_message_seconds
    needed = round(slowest / LEASE_SHARE_AFTER_LAST_START, 3)
    if tuning.lease_seconds < needed:
        raise ConfigError(
            PREFIX + "SEND_LEASE_SECONDS",
            f"must be at least {needed:g} with {PREFIX}SMTP_URL's timeout={smtp.timeout:g} "
            f"and data_timeout={smtp.data_timeout:g}: a message started at "
            f"{1 - LEASE_SHARE_AFTER_LAST_START:.0%} of the lease "
            f"may take 4 x timeout + data_timeout = {slowest:g} s; got {tuning.lease_seconds:g}",
        )


def _parse_from(variable: str, raw: str) -> tuple[str, str]:
    from email.utils import getaddresses, parseaddr

    if "\r" in raw or "\n" in raw:
        raise ConfigError(variable, "must not contain line breaks")
    if len(getaddresses([raw])) != 1 or raw.count("<") != raw.count(">"):
        raise ConfigError(variable, "must be one address, as Name <address> or address")
    name, address = parseaddr(raw)
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ConfigError(variable, f"not a valid address ({exc})") from exc
    # Headers and envelopes go to relays that may not speak SMTPUTF8: an internationalised
    # domain is written as its A-label (xn--...), which mail clients show as it reads.
    if valid.ascii_email is None:
        raise ConfigError(
            variable,
            "the part before @ must be ASCII (letters a-z, digits, . _ + -): relays "
            "without SMTPUTF8 cannot carry it",
        )
    return name, valid.ascii_email


def _parse_delivery(get: Get) -> DeliveryTuning:
    def number(
        name: str, default: Any, kind: type[int] | type[float], low: float, high: float
    ) -> Any:
        raw = get(name)
        return default if not raw else values.number(PREFIX + name, raw, kind, low, high)

    d = DeliveryTuning()
    day = 24 * 3600
    return DeliveryTuning(
        pool_size=number("SMTP_POOL_SIZE", d.pool_size, int, 1, 1000),
        max_per_connection=number("SMTP_MAX_PER_CONNECTION", d.max_per_connection, int, 1, 10**7),
        rate=number("SMTP_RATE", d.rate, float, 0, 10**6),
        domain_concurrency=number("SMTP_DOMAIN_CONCURRENCY", d.domain_concurrency, int, 0, 1000),
        domain_rate=number("SMTP_DOMAIN_RATE", d.domain_rate, float, 0, 10**6),
        failure_burst=number("SMTP_FAILURE_BURST", d.failure_burst, int, 1, 10**6),
        pause_seconds=number("SMTP_PAUSE_SECONDS", d.pause_seconds, float, 0, day),
        # one domain is no storm
        storm_domains=number("SMTP_STORM_DOMAINS", d.storm_domains, int, 2, 10**6),
        batch=number("SEND_BATCH", d.batch, int, 1, 100_000),
        lease_seconds=number("SEND_LEASE_SECONDS", d.lease_seconds, float, 1, 7 * day),
        tick_seconds=number("TICK_SECONDS", d.tick_seconds, float, 1, day),
        # one per spare CPU core is plenty
        helper_processes=number(
            "HELPER_PROCESSES", d.helper_processes, int, 0, MAX_HELPER_PROCESSES
        ),
        max_attempts=number("MAX_ATTEMPTS", d.max_attempts, int, 1, 1000),
    )


def _parse_dkim(get: Get, from_domain: str) -> DkimSettings | None:
    selector, key_file = get("DKIM_SELECTOR"), get("DKIM_KEY_FILE")
    domain = get("DKIM_DOMAIN", from_domain)
    if not selector and not key_file:
        return None
    if not selector or not key_file:
        missing = "DKIM_SELECTOR" if not selector else "DKIM_KEY_FILE"
        raise ConfigError(PREFIX + missing, "DKIM signing needs both a selector and a key file")
    try:
        key = Path(key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(
            PREFIX + "DKIM_KEY_FILE", f"cannot read {key_file}: {exc.strerror}"
        ) from exc
    if b"PRIVATE KEY" not in key:
        raise ConfigError(PREFIX + "DKIM_KEY_FILE", f"{key_file} is not a PEM private key")
    if b"ENCRYPTED" in key:
        raise ConfigError(
            PREFIX + "DKIM_KEY_FILE",
            f"{key_file} is encrypted: digestd signs with a key that has no passphrase "
            "(openssl pkey -in KEY -out PLAIN, kept readable by digestd only)",
        )
    selector, domain = selector.rstrip("."), domain.rstrip(".")  # zone files add the root
    for name, value in (("DKIM_SELECTOR", selector), ("DKIM_DOMAIN", domain)):
        # DNS names; an underscore is fine in a selector (DNS takes it, as do receivers).
        if len(value) > 253 or not _DOMAIN.fullmatch(value.replace("_", "x")):
            raise ConfigError(
                PREFIX + name, f"must be a DNS name (letters, digits, -, .), got {value[:80]!r}"
            )
    # PEM read by openssl may have CRLF line ends; dkimpy finds no key in them.
    key = key.replace(b"\r\n", b"\n")
    return DkimSettings(selector=selector, domain=domain, private_key=key)


MIN_METRICS_TOKEN = 16


def parse_listen(raw: str, variable: str = PREFIX + "LISTEN") -> tuple[str, int]:
    """``HOST:PORT``, ``IPV4:PORT`` or ``[IPV6]:PORT``. A bare IPv6 address is refused: in
    ``::1:8080`` nobody can tell where the address ends and the port begins."""
    if raw.startswith("["):
        host, bracket, port_text = raw[1:].partition("]:")
        try:
            if not bracket or ip_address(host).version != 6:
                raise ValueError(raw)
        except ValueError:
            raise ConfigError(
                variable, f"expected [IPV6]:PORT such as [::1]:8080, got {raw!r}"
            ) from None
    else:
        host, _, port_text = raw.rpartition(":")
        if ":" in host:
            raise ConfigError(
                variable, f"write an IPv6 address in brackets, as in [::1]:8080; got {raw!r}"
            )
    numeric = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not host or not numeric or not 0 < int(port_text) < 65536:
        raise ConfigError(variable, f"expected HOST:PORT or [IPV6]:PORT, got {raw[:80]!r}")
    return host, int(port_text)


def http_url(host: str, port: int) -> str:
    """``http://host:port`` as a browser writes it: an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _parse_http(get: Any) -> HttpSettings:
    proxies = []
    for item in get("TRUSTED_PROXIES").split(","):
        if not item.strip():
            continue
        try:
            proxies.append(ip_network(item.strip()))
        except ValueError as exc:
            raise ConfigError(
                PREFIX + "TRUSTED_PROXIES",
                f"expected comma-separated addresses or networks such as 10.0.0.0/8 or ::1 ({exc})",
            ) from None
    token = get("METRICS_TOKEN") or None
    # Guesses at /metrics are not throttled: the token must be too long to guess.
    if token is not None and len(token) < MIN_METRICS_TOKEN:
        raise ConfigError(
            PREFIX + "METRICS_TOKEN", f"must be at least {MIN_METRICS_TOKEN} characters"
        )
    return HttpSettings(
        trusted_proxies=tuple(proxies),
        metrics_token=token,
        site_origins=values.origins(PREFIX + "SITE_ORIGINS", get("SITE_ORIGINS")),
    )


def _read_toml(path: Path) -> dict[str, str]:
    import tomllib  # only with --config: every command's start-up pays for what it imports

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("--config", f"{path} is not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from exc
    table = data.get("digestd", data)
    if not isinstance(table, dict):
        raise ConfigError("--config", f"{path}: digestd must be a table ([digestd]), not a value")
    values: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            raise ConfigError(
                "--config", f"{path}: {key} is a table; settings are plain: name = value"
            )
        name = key.upper()
        name = name if name.startswith(PREFIX) else PREFIX + name
        values[name] = str(value) if not isinstance(value, list) else ",".join(map(str, value))
    return values


def _history(get: Get) -> dict[str, Any]:
    """What is kept and what it is used for: DIGESTD_RETENTION_DAYS, DIGESTD_TRACK_CLICKS
    and DIGESTD_SUNSET_WEEKS."""
    return {
        "retention_days": values.number(
            PREFIX + "RETENTION_DAYS", get("RETENTION_DAYS", "90"), int, 9, 36_500
        ),
        "track_clicks": _parse_choice(
            PREFIX + "TRACK_CLICKS", get("TRACK_CLICKS", "aggregate"), TRACK_CLICKS
        ),
        "sunset_weeks": values.number(
            PREFIX + "SUNSET_WEEKS", get("SUNSET_WEEKS", "12"), int, 1, 520
        ),
    }


class Get(Protocol):
    """Reads one setting by its name without the prefix: stripped text, or ``default``."""

    def __call__(self, name: str, default: str = "") -> str: ...


class _Reader:
    """The :class:`Get` of one load: the environment over the config file. It remembers the
    names it was asked for, so a name in the file that nothing asked for is a typo."""

    def __init__(self, environ: Mapping[str, str], config_file: Path | None) -> None:
        self._file = config_file
        self._raw: dict[str, str] = _read_toml(config_file) if config_file else {}
        self._in_file = set(self._raw)
        # An empty variable is an unset one (compose files write `DIGESTD_X=`): the file's
        # value stands.
        self._raw.update({k: v for k, v in environ.items() if k.startswith(PREFIX) and v.strip()})
        self._in_environment = {k for k in environ if k.startswith(PREFIX)} - {
            k for k in environ if k.startswith(NOT_SETTINGS)
        }
        self._asked: set[str] = set()

    def __call__(self, name: str, default: str = "") -> str:
        self._asked.add(PREFIX + name)
        value = self._raw.get(PREFIX + name, "")
        values.check_text(PREFIX + name, value)
        return value.strip() or default

    def unknown_in_environment(self) -> tuple[tuple[str, str | None], ...]:
        """The environment's ``DIGESTD_*`` names no setting has, each with its likeliest
        meaning: a misspelt ``DIGESTD_SMTP_ULR`` leaves mail in the catcher otherwise."""
        found = []
        for name in sorted(self._in_environment - self._asked):
            close = self._likeliest(name.removeprefix(PREFIX))
            found.append((name, PREFIX + close if close else None))
        return tuple(found)

    def _likeliest(self, key: str) -> str | None:
        """The setting (without the prefix, as written) ``key`` most looks like, if any."""
        import difflib

        known = sorted(name.removeprefix(PREFIX) for name in self._asked)
        close = difflib.get_close_matches(key.upper(), known, n=1)
        return close[0] if close else None

    def refuse_unknown(self) -> None:
        """Raise :class:`ConfigError` for a key of the config file no setting has: a
        misspelt ``smtp_ulr`` would otherwise leave the default silently in force."""
        for name in sorted(self._in_file - self._asked):
            key = name.removeprefix(PREFIX).lower()
            close = self._likeliest(key)
            hint = f": did you mean {close.lower()}?" if close else ""
            raise ConfigError("--config", f"{self._file}: {key} is no setting{hint}")


def _secret_keys(raw: str) -> tuple[str, ...]:
    """The configured keys, newest first; empty when none is set (see dev_key)."""
    if not raw:
        return ()
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    if not keys:
        raise ConfigError(PREFIX + "SECRET_KEYS", "lists no key: give one or more, comma-separated")
    if any(len(k) < 16 for k in keys):
        raise ConfigError(PREFIX + "SECRET_KEYS", "each key must be at least 16 characters")
    return keys


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(PREFIX + "DEFAULT_TIMEZONE", f"unknown IANA timezone {name!r}") from exc
    return name


# What to do without DIGESTD_SECRET_KEYS (see dev_key): "create" the development key file
# if it is missing (migrate, run), use the "existing" one or refuse (the commands that sign
# links), or a "throwaway" key for commands that sign nothing and must write no file.
DevKey = Literal["create", "existing", "throwaway"]


def _catchup_hours(raw: str, tick: float) -> float:
    """``DIGESTD_CATCHUP_HOURS``. An edition is planned at the first tick after its send
    time, up to a tick late: a window shorter than two ticks would skip readers as late at
    an ordinary tick (0 skipped every edition under ``digestd run``, whose ticks fall at any
    second)."""
    hours: float = values.number(PREFIX + "CATCHUP_HOURS", raw, float, 0, 7 * 24)
    if hours * 3600 < 2 * tick:
        raise ConfigError(
            PREFIX + "CATCHUP_HOURS",
            f"must be at least two ticks ({2 * tick / 3600:.3g} hours with "
            f"{PREFIX}TICK_SECONDS={tick:g}): an edition is planned up to a tick after its "
            "send time, and one later than the window is skipped",
        )
    return hours


def load_settings(
    environ: Mapping[str, str], config_file: Path | None = None, *, dev_key: DevKey = "create"
) -> Settings:
    get = _Reader(environ, config_file)
    data_dir = Path(get("DATA_DIR", "var"))
    smtp_raw = get("SMTP_URL")
    smtp = parse_smtp_url(smtp_raw) if smtp_raw else None
    delivery = _parse_delivery(get)
    check_lease_budget(smtp, delivery)
    host, port = parse_listen(get("LISTEN", "127.0.0.1:8080"))
    from_name, from_address = _parse_from(PREFIX + "FROM", get("FROM", DEFAULT_FROM))
    settings = Settings(
        data_dir=data_dir,
        database_url=values.database_url(
            PREFIX + "DATABASE_URL", get("DATABASE_URL", f"sqlite:///{data_dir}/digestd.db")
        ),
        smtp=smtp,
        base_url=values.base_url(PREFIX + "BASE_URL", get("BASE_URL", http_url(host, port))),
        listen_host=host,
        listen_port=port,
        from_name=from_name,
        from_address=from_address,
        secret_keys=_secret_keys(get("SECRET_KEYS")),
        admin_token=values.admin_token(PREFIX + "ADMIN_TOKEN", get("ADMIN_TOKEN")),
        postal_address=get("POSTAL_ADDRESS", DEFAULT_POSTAL_ADDRESS),
        site_name=get("SITE_NAME", "Tech Pulse"),
        daily_time=_parse_hour(PREFIX + "DAILY_HOUR", get("DAILY_HOUR", "7")),
        weekly_time=_parse_hour(PREFIX + "WEEKLY_HOUR", get("WEEKLY_HOUR", "8")),
        default_timezone=_timezone(get("DEFAULT_TIMEZONE", "UTC")),
        catchup_hours=_catchup_hours(get("CATCHUP_HOURS", "6"), delivery.tick_seconds),
        daily_limit=values.number(PREFIX + "DAILY_LIMIT", get("DAILY_LIMIT", "10"), int, 1, 1000),
        weekly_limit=values.number(
            PREFIX + "WEEKLY_LIMIT", get("WEEKLY_LIMIT", "15"), int, 1, 1000
        ),
        per_source_limit=values.number(
            PREFIX + "PER_SOURCE_LIMIT", get("PER_SOURCE_LIMIT", "3"), int, 1, 1000
        ),
        delivery=delivery,
        dkim=_parse_dkim(get, from_address.rpartition("@")[2]),
        log_format=_parse_choice(PREFIX + "LOG_FORMAT", get("LOG_FORMAT", "text"), LOG_FORMATS),
        http=_parse_http(get),
        dev_mailbox=values.flag(PREFIX + "DEV_MAILBOX", get("DEV_MAILBOX", "false")),
        sunday_daily=values.flag(PREFIX + "SUNDAY_DAILY", get("SUNDAY_DAILY", "false")),
        **_history(get),
        inbound_listen=parse_listen(get("INBOUND_LISTEN"), PREFIX + "INBOUND_LISTEN")
        if get("INBOUND_LISTEN")
        else None,
    )
    get.refuse_unknown()
    settings = replace(settings, unknown_variables=get.unknown_in_environment())
    if settings.secret_keys:
        return settings
    # Only now that everything else is valid: a bad setting leaves no key file behind.
    if dev_key == "throwaway":
        key = secrets.token_urlsafe(32)
    else:
        key = dev_secret(data_dir, create=dev_key == "create")
    return replace(settings, secret_keys=(key,), generated_secret=True)
