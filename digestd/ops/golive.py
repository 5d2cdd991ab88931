"""Going live: the settings that must not reach readers, and the DNS records mail needs.

With a real ``DIGESTD_SMTP_URL`` (not a ``?catcher=true`` one), ``digestd run`` refuses to
start on a placeholder (links to this machine, the example sender or postal address, a
value an example file marks ``CHANGE_ME``); ``digestd check`` lists every finding, with
variables that are no setting and an unaligned DKIM domain, and the SPF, DKIM and DMARC
records to publish, and sends nothing. A weak
``DIGESTD_ADMIN_TOKEN`` never gets this far: reading the settings refuses it
(:func:`digestd.config_values.admin_token`), for every command.
"""

from __future__ import annotations

import base64
import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from itertools import pairwise
from urllib.parse import urlsplit

from digestd.config import DEFAULT_FROM_ADDRESS, DEFAULT_POSTAL_ADDRESS, PREFIX, Settings
from digestd.config_values import GENERATE, PLACEHOLDER_WORDS
from digestd.errors import ConfigError

TXT_CHUNK = 255  # characters in one DNS character-string (RFC 1035 §3.3)


@dataclass(frozen=True)
class Finding:
    variable: str
    problem: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.problem}"


# Words that mark a value as still to be filled in: a word, or two in a row, with case and
# punctuation dropped ("CHANGE_ME", "change-me-to-a-long-random-string"), never part of
# one ("Exchange Mews" and "Fireplace Meadow" are addresses).
FILL_IN = ("changeme", "placeholder", "replaceme")


def placeholders(settings: Settings) -> list[Finding]:
    """Settings still at what a development install or an example file starts with."""
    found = []
    if settings.base_url == settings.listen_url:
        where = f"is the listen address {settings.listen_url}"
    elif _this_machine(settings.base_url):
        where = f"points at this machine ({settings.base_url})"
    elif _fill_in(urlsplit(settings.base_url).hostname or ""):
        where = f"is a placeholder ({settings.base_url})"
    else:
        where = ""
    if where:
        found.append(
            Finding(
                PREFIX + "BASE_URL",
                f"{where}: every link in every email would point there; set the public "
                "https:// address readers reach",
            )
        )
    if settings.from_address.lower() == DEFAULT_FROM_ADDRESS or _fill_in(settings.from_address):
        found.append(
            Finding(
                PREFIX + "FROM",
                f"is the placeholder {settings.from_address}: mail from a domain you do not "
                "own fails SPF, DKIM and DMARC; set your own sender",
            )
        )
    postal = _folded(settings.postal_address)
    if postal == _folded(DEFAULT_POSTAL_ADDRESS) or _fill_in(settings.postal_address):
        found.append(
            Finding(
                PREFIX + "POSTAL_ADDRESS",
                "is the placeholder address: bulk mail must carry your real postal address "
                "(CAN-SPAM)",
            )
        )
    # A key is no text: any placeholder word inside it counts (as for the admin token).
    if any(word in _folded(key) for key in settings.secret_keys for word in PLACEHOLDER_WORDS):
        found.append(
            Finding(
                PREFIX + "SECRET_KEYS",
                "looks like a placeholder: whoever read the example can sign every link "
                f"(unsubscribe, preferences) for any reader; use random keys: {GENERATE}",
            )
        )
    return found


def _this_machine(url: str) -> bool:
    """Whether ``url`` names this machine (localhost, a loopback or unspecified address in
    any spelling: ``127.1``, ``2130706433``, ``0x7f000001``, ``::ffff:127.0.0.1``): from an
    email, a reader's client would open it on the reader's own machine."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[0-9a-fx.]+", host):
            return False
        try:  # the forms inet_aton reads, as browsers and resolvers do
            address = IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _folded(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def _fill_in(text: str) -> bool:
    words = re.findall(r"[a-z0-9]+", text.lower())
    runs = {*words, *(a + b for a, b in pairwise(words))}
    return not runs.isdisjoint(FILL_IN)


def refusals(settings: Settings) -> list[Finding]:
    """What stops ``digestd run``: placeholders, and a base URL under a path, once mail
    really leaves (a relay is set, and is not a catcher that keeps every message)."""
    if settings.smtp is None or settings.smtp.catcher:
        return []
    return [*placeholders(settings), *under_a_path(settings)]


def under_a_path(settings: Settings) -> list[Finding]:
    """A base URL with a path (``https://news.example.com/digest``): the emailed links
    carry it, but digestd serves from the root of its host, and its pages post and link
    there (``/unsubscribe/…``, ``/preferences/…``, ``/admin/…``): behind a proxy that strips
    the path, a reader's Unsubscribe button would post to the site, not to digestd."""
    path = urlsplit(settings.base_url).path
    if path in ("", "/"):
        return []
    return [
        Finding(
            PREFIX + "BASE_URL",
            f"has a path ({path}): digestd's pages post and link from the root of its host "
            "(/unsubscribe/…, /preferences/…), so their buttons would miss it; give digestd "
            "a host name of its own, such as https://digest.example.com",
        )
    ]


def unaligned_dkim(settings: Settings) -> list[Finding]:
    """A DKIM domain that is neither the From domain nor a parent of it: receivers verify
    the signature, but DMARC needs its domain aligned with From, so it counts for nothing."""
    dkim = settings.dkim
    if dkim is None:
        return []
    signer, sender = dkim.domain.lower().rstrip("."), settings.from_domain.lower().rstrip(".")
    # DMARC's relaxed alignment (the default, and the record below) asks for the same
    # organisational domain; without the public suffix list, the last two labels stand in
    # for it (never a false finding; a.co.uk and b.co.uk pass unflagged).
    if signer.split(".")[-2:] == sender.split(".")[-2:]:
        return []
    return [
        Finding(
            PREFIX + "DKIM_DOMAIN",
            f"{dkim.domain} is not in the From domain {settings.from_domain}'s organisation: "
            "DMARC needs the signature aligned with From",
        )
    ]


def unknown_variables(settings: Settings) -> list[Finding]:
    """The environment's ``DIGESTD_*`` variables that are no setting: each is ignored."""
    return [
        Finding(name, f"is no setting{f' (did you mean {close}?)' if close else ''}; it is ignored")
        for name, close in settings.unknown_variables
    ]


def findings(settings: Settings) -> list[Finding]:
    """What ``digestd check`` reports: no relay that delivers, the placeholders, what
    mailbox providers refuse of bulk mail, and variables that are no setting."""
    return [
        *_delivery(settings),
        *_relay_port(settings),
        *under_a_path(settings),
        *_bulk_rules(settings),
        *unaligned_dkim(settings),
        *unknown_variables(settings),
    ]


def _relay_port(settings: Settings) -> list[Finding]:
    """A scheme that does not speak the port's protocol (RFC 8314): 465 starts with TLS,
    25 and 587 in plain text. Each message then fails only at sending, as 'timed out
    opening the session' or '[SSL: WRONG_VERSION_NUMBER]', with no word of the scheme."""
    smtp = settings.smtp
    if smtp is None or smtp.catcher:
        return []
    if not smtp.use_tls and smtp.port == 465:
        problem = "port 465 starts with TLS (SMTPS): write smtps://, not smtp://"
    elif smtp.use_tls and smtp.port in (25, 587):
        problem = (
            f"port {smtp.port} starts in plain text and upgrades with STARTTLS: write "
            "smtp://, not smtps://"
        )
    else:
        return []
    return [Finding(PREFIX + "SMTP_URL", f"{problem}; every message would fail to connect")]


# Mailbox providers' own domains: only the provider publishes their SPF, DKIM and DMARC.
MAILBOX_PROVIDERS = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "ymail.com", "rocketmail.com",
        "outlook.com", "hotmail.com", "live.com", "msn.com", "aol.com", "icloud.com",
        "me.com", "mac.com", "gmx.com", "gmx.net", "gmx.de", "web.de", "mail.com",
        "proton.me", "protonmail.com", "zoho.com", "yandex.ru", "yandex.com", "mail.ru",
    }
)  # fmt: skip


def _bulk_rules(settings: Settings) -> list[Finding]:
    """Settings that pass every placeholder check yet break what Gmail's and Yahoo's rules
    for bulk senders (2024) ask of each digest: a From domain the operator owns (DMARC
    aligned) and one-click unsubscribe, whose List-Unsubscribe URI RFC 8058 wants HTTPS."""
    found = []
    placeholder = any(f.variable == PREFIX + "BASE_URL" for f in placeholders(settings))
    if urlsplit(settings.base_url).scheme == "http" and not placeholder:  # said once
        found.append(
            Finding(
                PREFIX + "BASE_URL",
                f"is http:// ({settings.base_url}): one-click unsubscribe needs an https:// "
                "List-Unsubscribe link (RFC 8058; Gmail and Yahoo require it of bulk mail), "
                "and every link would carry its token in clear text; serve digestd over "
                "HTTPS and set the https:// address",
            )
        )
    domain = settings.from_domain.lower().rstrip(".")
    if domain in MAILBOX_PROVIDERS or domain.split(".")[0] in ("yahoo", "hotmail", "outlook"):
        found.append(
            Finding(
                PREFIX + "FROM",
                f"{domain} is a mailbox provider's domain: only it can publish that domain's "
                "SPF, DKIM and DMARC, so digests from it fail DMARC and are refused or "
                f"junked, and bounces to bounces+…@{domain} never reach digestd; send from "
                "a domain you own",
            )
        )
    return found


def _delivery(settings: Settings) -> list[Finding]:
    if settings.smtp is None:
        nowhere = f"is not set: mail is caught in {settings.mail_dir}/ and nobody receives it"
    elif settings.smtp.catcher:
        nowhere = "is a mail catcher (?catcher=true): it keeps the mail and nobody receives it"
    else:
        return placeholders(settings)
    return [Finding(PREFIX + "SMTP_URL", nowhere), *placeholders(settings)]


# --- DNS records --------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    kind: str  # SPF, DKIM, DMARC
    name: str  # the owner name, fully qualified
    value: str  # the TXT content, unsplit
    note: str = ""

    def zone_line(self) -> str:
        """The record as a zone file writes it: long values split into 255-character strings."""
        chunks = [self.value[i : i + TXT_CHUNK] for i in range(0, len(self.value), TXT_CHUNK)]
        quoted = " ".join(f'"{chunk}"' for chunk in chunks)
        return f"{self.name}. IN TXT {quoted if len(chunks) == 1 else f'( {quoted} )'}"


def dns_records(settings: Settings) -> tuple[list[Record], list[Finding]]:
    """SPF, DKIM (when digestd signs) and DMARC for the From domain, and any finding made
    while deriving them (a DKIM key digestd cannot sign with, or too short to count)."""
    domain = settings.from_domain
    records = [_spf(settings)]
    problems = []
    if settings.dkim is not None:
        from digestd.mail.dkim import MIN_BITS, key_bits, too_short  # dkimpy: when it signs

        dkim = settings.dkim
        try:
            bits = key_bits(dkim.private_key)
            public = dkim_public_key(dkim.private_key)
        except ConfigError as exc:
            problems.append(Finding(exc.variable, exc.problem))
        except ValueError as exc:
            problems.append(Finding(PREFIX + "DKIM_KEY_FILE", str(exc)))
        else:
            if bits < MIN_BITS:
                problems.append(Finding(PREFIX + "DKIM_KEY_FILE", too_short(bits)))
            records.append(
                Record(
                    "DKIM",
                    f"{dkim.selector}._domainkey.{dkim.domain}",
                    f"v=DKIM1; k=rsa; p={public}",
                    "the public half of DIGESTD_DKIM_KEY_FILE",
                )
            )
    records.append(
        Record(
            "DMARC",
            f"_dmarc.{domain}",
            f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}",
            "start with p=none and read the reports (the rua mailbox must exist); move to "
            "p=quarantine once every source of your mail passes",
        )
    )
    return records, problems


def _spf(settings: Settings) -> Record:
    """SPF for the bounce domain: a relay's documented include, or, for the operator's own
    MTA (the relay is an address or this machine), the public addresses it sends from."""
    domain, host = settings.from_domain, settings.smtp.host if settings.smtp else ""
    try:
        own = bool(ip_address(host))
    except ValueError:
        own = host == "localhost"
    if own:
        value = "v=spf1 ip4:<your MTA's public address> ~all"
        which = "list the public addresses your MTA sends from (ip4:, ip6:)"
    else:
        value = "v=spf1 include:<your relay's SPF domain> ~all"
        which = f"use the include {host or 'your relay'} documents"
    note = (
        f"bounces go to bounces+…@{domain}, so receivers check SPF there: {which}. One SPF "
        "record per domain: merge with one that exists."
    )
    return Record("SPF", domain, value, note)


def mx_note(settings: Settings) -> str | None:
    """With the LMTP listener on, what the From domain's MX must be (no record to paste:
    only the operator knows their MTA's name)."""
    if settings.inbound_listen is None:
        return None
    return (
        f"MX: bounces, complaints and mailto: unsubscribes arrive at …@{settings.from_domain}: "
        "its MX must be the MTA that hands them to DIGESTD_INBOUND_LISTEN "
        '(deploy/README.md "Mail in")'
    )


def dkim_public_key(private_pem: bytes) -> str:
    """The base64 SubjectPublicKeyInfo of an RSA private key in PEM (PKCS#1 or PKCS#8): the
    ``p=`` of its DKIM record, as ``openssl pkey -pubout -outform DER`` gives it."""
    from dkim.crypto import UnparsableKeyError, parse_pem_private_key

    try:
        key = parse_pem_private_key(private_pem)
    except (UnparsableKeyError, ValueError, IndexError) as exc:
        raise ValueError(f"not an RSA private key digestd can read ({exc})") from exc
    rsa_public = _der(0x30, _der_int(key["modulus"]) + _der_int(key["publicExponent"]))
    rsa_encryption = bytes.fromhex("06092a864886f70d010101") + b"\x05\x00"  # OID, NULL
    spki = _der(0x30, _der(0x30, rsa_encryption) + _der(0x03, b"\x00" + rsa_public))
    return base64.b64encode(spki).decode("ascii")


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _der_int(value: int) -> bytes:
    # One more byte than the bits need: a leading zero keeps a high first bit positive.
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))
