"""What a refusal or a bounce report means for the reader: one table, from RFC 3463.

Only a reply that says the *address* is bad suppresses it. A relay that refuses our
content, our reputation, our authentication or its own routing says nothing about the
reader: the message fails and the reader stays. The same table classifies synchronous
SMTP replies (:mod:`digestd.delivery.outcomes`) and asynchronous reports
(:mod:`digestd.readers.bounces`); :func:`rows` renders it for the admin page.

Codes are matched most specific first: the stage (a 5xx to the ``DATA`` command is never
about the address), then the enhanced status code (``5.1.1``), then a bare reply code
(``550``, only when the server gave no enhanced code), then the class.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """What the ledger (``bounces.kind``) says an event was."""

    HARD = "hard"  # the address is bad: the reader is suppressed
    SOFT = "soft"  # counts towards SOFT_BOUNCE_LIMIT in a row
    FAILED = "failed-not-address"  # the message failed, the reader stays
    COMPLAINT = "complaint"  # the reader marked a digest as spam: suppressed
    NOTICE = "notice"  # delay and delivery notices, feedback other than a complaint
    UNMATCHED = "unmatched"  # a report about nothing digestd sent: nobody changes


class Stage(enum.StrEnum):
    """Where a reply came from."""

    RCPT = "rcpt"  # the reply to RCPT TO
    DATA = "data"  # the reply to the DATA command itself
    END = "end-of-data"  # the reply to the message content
    REPORT = "report"  # a DSN or a bounce message, after the relay had accepted
    SESSION = "session"  # connecting, the greeting, AUTH, MAIL FROM, or no reply at all


SOFT_BOUNCE_LIMIT = 3  # soft bounces in a row, on different days, that suppress an address
# What reports and counts call a bounce: the reader's address or mailbox refused it, or the
# reader complained. A refusal that is not about the address and a delay notice are ledger
# rows too, but no bounce: the reader stays, and so must the bounce rate.
BOUNCES = (Kind.HARD, Kind.SOFT, Kind.COMPLAINT)
_REPLY_STAGES = (Stage.RCPT, Stage.DATA, Stage.END, Stage.REPORT)  # "anywhere"


@dataclass(frozen=True)
class Rule:
    """``pattern``: an enhanced code with ``*`` wildcards (``5.7.*``), or a bare reply code
    (``550``) that applies only when the server gave no enhanced code."""

    pattern: str
    kind: Kind
    meaning: str
    stages: tuple[Stage, ...] = _REPLY_STAGES

    def matches(self, stage: Stage, code: int | None, status: str | None) -> bool:
        if stage not in self.stages:
            return False
        if self.pattern == "*":
            return True
        if "." not in self.pattern:  # a bare reply code
            return status is None and code is not None and str(code) == self.pattern
        if status is None:
            return False
        pattern = self.pattern.split(".")
        return all(p in ("*", s) for p, s in zip(pattern, status.split("."), strict=True))


_ANY_STAGE_BUT_DATA = (Stage.RCPT, Stage.END, Stage.REPORT)
_BARE_STAGES = (Stage.RCPT, Stage.REPORT)  # a bare 550 to the content is about the content

RULES: tuple[Rule, ...] = (
    Rule(
        "*",
        Kind.FAILED,
        "the relay refused or dropped the session: about us, not a reader",
        (Stage.SESSION,),
    ),
    Rule(
        "5.*.*",
        Kind.FAILED,
        "any refusal of the DATA command: not about one address",
        (Stage.DATA,),
    ),
    Rule("5.1.1", Kind.HARD, "bad destination mailbox (no such user)", _ANY_STAGE_BUT_DATA),
    Rule("5.1.2", Kind.HARD, "bad destination system (no such domain)", _ANY_STAGE_BUT_DATA),
    Rule("5.1.3", Kind.HARD, "bad destination mailbox address syntax", _ANY_STAGE_BUT_DATA),
    Rule("5.1.6", Kind.HARD, "destination mailbox has moved", _ANY_STAGE_BUT_DATA),
    Rule(
        "5.1.10",
        Kind.HARD,
        "recipient domain accepts no mail (null MX, RFC 7505)",
        _ANY_STAGE_BUT_DATA,
    ),
    Rule("5.2.1", Kind.HARD, "mailbox disabled", _ANY_STAGE_BUT_DATA),
    Rule("5.2.2", Kind.SOFT, "mailbox full: may empty again"),
    Rule("5.4.4", Kind.SOFT, "unable to route: often a passing DNS failure"),
    Rule("5.7.*", Kind.FAILED, "policy, spam, reputation, authentication or relay refusal"),
    Rule("5.3.*", Kind.FAILED, "the receiving system's own trouble"),
    Rule("5.4.*", Kind.FAILED, "network or routing trouble"),
    Rule("5.5.*", Kind.FAILED, "protocol trouble"),
    Rule("5.6.*", Kind.FAILED, "the content or its encoding"),
    Rule("550", Kind.HARD, "bare 550 (no enhanced code): mailbox unavailable", _BARE_STAGES),
    Rule("551", Kind.HARD, "bare 551 (no enhanced code): user not local", _BARE_STAGES),
    Rule("553", Kind.HARD, "bare 553 (no enhanced code): mailbox name not allowed", _BARE_STAGES),
    Rule("5.*.*", Kind.FAILED, "any other permanent refusal: never suppress on a guess"),
    # Temporary replies reach the policy only once retries ran out (or a DSN says the
    # reporting MTA gave up): about the mailbox they count as soft bounces; about our
    # relay, our reputation or the network they must not, or an outage of a few days
    # would suppress the whole list. A DSN giving up on 4.7.0 (a provider's reputation
    # deferral) or 4.4.7 (its queue expired) is no word about the address either.
    # X.1.7 and X.1.8 are about our sender address, X.1.2 a DNS lookup that a relay with a
    # broken resolver fails for every domain; a bare 450 is as often greylisting, a bare
    # 452 the server's own disk: none is about the reader's mailbox.
    Rule("4.1.1", Kind.SOFT, "temporary trouble with the mailbox; retries ran out"),
    Rule("4.2.*", Kind.SOFT, "temporary mailbox trouble (full, over quota); retries ran out"),
    Rule("4.*.*", Kind.FAILED, "our relay's, our reputation's or the network's trouble"),
)
# A bare code that matches no rule above, by its first digit.
_BARE_DEFAULT = {
    4: Rule("4xx", Kind.FAILED, "any other bare temporary reply; retries ran out"),
    5: Rule("5xx", Kind.FAILED, "any other bare permanent reply"),
}
_UNKNOWN = Rule("-", Kind.FAILED, "no reply code at all")
# Without an enhanced code, "550 Relaying denied" would read as a bare 550 about the
# mailbox, and a relay that refuses some domains would get their readers suppressed.
_BARE_RELAYING = Rule(
    "5xx naming relaying", Kind.FAILED, "the relay refused to relay: not about the address"
)
_RELAYING = re.compile(r"\brelay", re.IGNORECASE)

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY = re.compile(r"^\s*([245]\d\d)(?:[ -]|$)")
_QMAIL = re.compile(r"\(#([245])\.(\d{1,3})\.(\d{1,3})\)")


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    rule: Rule
    code: int | None
    status: str | None  # the enhanced code the verdict rests on

    @property
    def shown(self) -> str:
        """The code as the ledger keeps it: the enhanced one, else the bare reply code."""
        return self.status or (str(self.code) if self.code is not None else "")


def classify(stage: Stage, code: int | None, status: str | None, text: str = "") -> Verdict:
    """The kind of a reply ``code`` (``550``) with enhanced ``status`` (``5.1.1`` or None);
    ``text``, the reply itself, is read only when it has no enhanced code."""
    if status is None and code is not None and code // 100 == 5 and _RELAYING.search(text):
        return Verdict(_BARE_RELAYING.kind, _BARE_RELAYING, code, status)
    for rule in RULES:
        if rule.matches(stage, code, status):
            return Verdict(rule.kind, rule, code, status)
    if code is not None and code // 100 in _BARE_DEFAULT:
        return Verdict(_BARE_DEFAULT[code // 100].kind, _BARE_DEFAULT[code // 100], code, status)
    return Verdict(Kind.FAILED, _UNKNOWN, code, status)


def classify_reply(stage: Stage, text: str) -> Verdict:
    """A server's reply line (``550 5.1.1 <a@b>: User unknown``)."""
    return classify(stage, *codes_in(text), text)


def codes_in(text: str) -> tuple[int | None, str | None]:
    """(reply code, enhanced status) found in a reply or a Diagnostic-Code
    (``smtp; 550 5.1.1 ...``, ``X-Postfix; ...``): either may be None. qmail writes the
    enhanced code last, ``553 sorry, ... (#5.7.1)``."""
    body = text.split(";", 1)[1] if ";" in text[:20] else text
    reply = _REPLY.match(body)
    code = int(reply.group(1)) if reply else None
    rest = body[reply.end() :] if reply else body
    enhanced = _ENHANCED.search(rest[:40] if reply else rest) or _QMAIL.search(rest)
    status = ".".join(enhanced.groups()) if enhanced else None
    return code, normal_status(status)


def normal_status(status: str | None) -> str | None:
    """``5.01.001`` → ``5.1.1``; None for anything that is not an enhanced code."""
    if not status:
        return None
    found = _ENHANCED.match(status.strip())
    if found is None:
        return None
    return ".".join(str(int(part)) for part in found.groups())


def unspecific(status: str | None) -> bool:
    """``X.0.0`` says only the class: a reporting MTA writes it when it knows no better."""
    return status is None or status.endswith(".0.0")


def rows() -> list[dict[str, str]]:
    """The policy as a table (admin page, documentation): one row per rule, in the order
    they are tried."""
    every = set(_REPLY_STAGES)
    return [
        {
            "codes": rule.pattern if "." in rule.pattern else f"{rule.pattern} (no enhanced code)",
            "where": "anywhere"
            if set(rule.stages) == every
            else ", ".join(str(stage) for stage in rule.stages),
            "kind": str(rule.kind),
            "effect": EFFECTS[rule.kind],
            "meaning": rule.meaning,
        }
        for rule in (_BARE_RELAYING, *RULES, *_BARE_DEFAULT.values())
    ]


EFFECTS: dict[Kind, str] = {
    Kind.HARD: "the message fails; the address is suppressed",
    Kind.SOFT: f"the message fails; {SOFT_BOUNCE_LIMIT} in a row on different days suppress",
    Kind.FAILED: "the message fails; the reader stays",
    Kind.COMPLAINT: "the reader is unsubscribed and the address suppressed",
    Kind.NOTICE: "nothing changes",
    Kind.UNMATCHED: "nothing changes; kept for the operator for the retention window",
}
