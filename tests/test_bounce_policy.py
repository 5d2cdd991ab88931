"""The bounce policy (RFC 3463) as one table: which replies suppress, which fail the message
only, which count as soft; and what makes two refusals "the same" for the storm breaker."""

from __future__ import annotations

import pytest

from digestd.delivery.storms import RefusalRuns, Verdict, reply_key
from digestd.errors import PermanentDeliveryError
from digestd.readers.bounce_policy import Kind, Stage, classify_reply, codes_in, rows

RCPT, DATA, END, REPORT = Stage.RCPT, Stage.DATA, Stage.END, Stage.REPORT


@pytest.mark.parametrize(
    ("stage", "reply", "kind"),
    [
        (RCPT, "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown", Kind.HARD),
        (RCPT, "550 5.1.2 Host unknown", Kind.HARD),
        (RCPT, "553 5.1.3 Bad recipient address syntax", Kind.HARD),
        (RCPT, "551 5.1.6 Mailbox has moved", Kind.HARD),
        (RCPT, "556 5.1.10 Recipient address has null MX", Kind.HARD),
        (RCPT, "550 5.2.1 Mailbox disabled", Kind.HARD),
        (RCPT, "550 No such user here", Kind.HARD),  # bare 550: the address
        (RCPT, "551 User not local", Kind.HARD),
        (RCPT, "553 Mailbox name not allowed", Kind.HARD),
        (RCPT, "552 5.2.2 Mailbox full", Kind.SOFT),
        (RCPT, "550 5.4.4 Unable to route", Kind.SOFT),
        (RCPT, "554 5.7.1 <a@b.example>: Relay access denied", Kind.FAILED),
        (
            RCPT,
            "554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org",
            Kind.FAILED,
        ),
        (RCPT, "550 5.7.26 Unauthenticated email is not accepted (DMARC)", Kind.FAILED),
        (RCPT, "554 5.3.0 Local configuration error", Kind.FAILED),
        (RCPT, "554 5.4.6 Routing loop detected", Kind.FAILED),
        (RCPT, "501 5.5.4 Syntax error", Kind.FAILED),
        (RCPT, "554 5.6.0 Content conversion not supported", Kind.FAILED),
        (RCPT, "550 5.0.0 Something unspecific", Kind.FAILED),  # never suppress on a guess
        (RCPT, "554 Transaction failed", Kind.FAILED),  # bare, but not 550/551/553
        (DATA, "554 5.1.1 No valid recipients", Kind.FAILED),  # the DATA command: never
        (DATA, "550 Go away", Kind.FAILED),
        (END, "554 5.7.1 content rejected", Kind.FAILED),
        (END, "550 Message rejected as spam", Kind.FAILED),  # bare to the content: content
        (END, "550 5.1.1 User unknown (checked after the content)", Kind.HARD),
        (REPORT, "550 Unknown user", Kind.HARD),
        # A reporting MTA giving up says something about the address only for X.1, X.2.
        (REPORT, "4.4.7 Delivery time expired", Kind.FAILED),
        (REPORT, "421 4.7.0 [TSS04] Messages temporarily deferred", Kind.FAILED),
        (REPORT, "4.4.1 Connection timed out", Kind.FAILED),
        (REPORT, "4.2.2 Mailbox full", Kind.SOFT),
        (REPORT, "450 4.1.1 Mailbox unavailable", Kind.SOFT),
        # qmail writes the enhanced code last
        (
            RCPT,
            "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
            Kind.FAILED,
        ),
        (RCPT, "550 sorry, no mailbox here by that name. (#5.1.1)", Kind.HARD),
        # Temporary replies whose retries ran out: the mailbox counts, our reputation not.
        (RCPT, "452 4.2.2 Mailbox full", Kind.SOFT),
        (RCPT, "450 4.1.1 Recipient address rejected: unverified address", Kind.SOFT),
        (RCPT, "451 4.7.1 Greylisted", Kind.FAILED),
        (RCPT, "451 4.3.0 Temporary lookup failure", Kind.FAILED),
        (RCPT, "450 Mailbox unavailable", Kind.FAILED),  # bare: as often greylisting
        (RCPT, "452 Insufficient system storage", Kind.FAILED),  # the server's own disk
        (RCPT, "450 4.1.8 <bounces@news.example>: Sender address rejected", Kind.FAILED),
        (RCPT, "450 4.1.7 Sender address rejected: unverified", Kind.FAILED),
        (
            RCPT,
            "450 4.1.2 <a@b.example>: Recipient address rejected: Domain not found",
            Kind.FAILED,
        ),
        (RCPT, "421 Service not available", Kind.FAILED),
        # A bare refusal that names relaying is the relay's, whichever domains it refuses.
        (RCPT, "550 Relaying denied", Kind.FAILED),
        (RCPT, "553 sorry, relaying not permitted for that domain", Kind.FAILED),
        (REPORT, "smtp; 550 Unable to relay for c@d.example", Kind.FAILED),
        (RCPT, "550 No such user here (relay host mx2)", Kind.FAILED),  # never on a guess
        (RCPT, "550 No such user here", Kind.HARD),  # while the bare 550 alone still is
        (Stage.SESSION, "550 5.1.1 Sender refused", Kind.FAILED),  # MAIL FROM: about us
        (Stage.SESSION, "connection problem: timed out", Kind.FAILED),
    ],
)
def test_each_reply_gets_the_kind_the_policy_says(stage: Stage, reply: str, kind: Kind) -> None:
    assert classify_reply(stage, reply).kind is kind


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("550 5.1.1 <a@b>: User unknown", (550, "5.1.1")),
        ("smtp; 550 5.1.1 <a@b>: Recipient address rejected", (550, "5.1.1")),
        ("smtp;550-5.1.1 The email account that you tried to reach does not exist", (550, "5.1.1")),
        ("smtp; 550 Unknown user", (550, None)),
        ("X-Postfix; mail for example.com loops back to myself", (None, None)),
        ("5.02.002 (over quota)", (None, "5.2.2")),
        ("250 2.0.0 Ok: queued as 4XyZ 1.2.3.4", (250, "2.0.0")),
        ("550 see https://example.com/5.1.1.html", (550, None)),  # not a code in a URL
    ],
)
def test_codes_are_found_where_servers_put_them(
    text: str, codes: tuple[int | None, str | None]
) -> None:
    assert codes_in(text) == codes


def test_the_policy_renders_as_rows_for_the_admin_page() -> None:
    table = rows()
    assert {"codes", "where", "kind", "effect", "meaning"} <= set(table[0])
    by_codes = {(r["codes"], r["where"]): r for r in table}
    assert by_codes[("5.1.1", "rcpt, end-of-data, report")]["kind"] == "hard"
    assert by_codes[("5.7.*", "anywhere")]["effect"] == "the message fails; the reader stays"
    assert by_codes[("550 (no enhanced code)", "rcpt, report")]["kind"] == "hard"
    relaying = by_codes[("5xx naming relaying (no enhanced code)", "anywhere")]
    assert relaying["kind"] == "failed-not-address"
    assert table.index(relaying) < table.index(by_codes[("550 (no enhanced code)", "rcpt, report")])
    assert "3 in a row on different days" in by_codes[("5.2.2", "anywhere")]["effect"]


def test_refusals_differing_only_in_address_domain_and_ids_are_the_same() -> None:
    gmail = (
        "550 5.1.1 The email account that you tried to reach does not exist. Learn more at "
        "https://support.google.com/mail/?p=NoSuchUser {id} - gsmtp"
    )
    a = reply_key(gmail.format(id="d2-20020a05a.41"), "x@one.example")
    b = reply_key(gmail.format(id="q9-998877c.12"), "y@two.example")
    assert a == b
    relay = "554 5.7.1 <{r}>: Relay access denied"
    assert reply_key(relay.format(r="x@one.example"), "x@one.example") == reply_key(
        relay.format(r="y@two.example"), "y@two.example"
    )
    assert reply_key("554 5.7.1 Relay access denied", "x@a.example") != reply_key(
        "550 5.7.1 Relay access denied", "x@a.example"
    )
    domain = "550 5.1.1 user unknown in {d}"
    assert reply_key(domain.format(d="one.example"), "x@one.example") == reply_key(
        domain.format(d="two.example"), "y@two.example"
    )


def test_a_run_is_held_until_decided_and_a_storm_needs_distinct_domains() -> None:
    runs = RefusalRuns(domains=3)

    def refusal(address: str) -> PermanentDeliveryError:
        return PermanentDeliveryError(f"550 5.1.1 <{address}>: User unknown", 550, "rcpt")

    same_domain = [refusal(f"u{i}@big.example") for i in range(10)]
    assert not any(runs.refused(e, str(e)[11:].split(">")[0]) for e in same_domain)
    assert {runs.verdict(e) for e in same_domain} == {Verdict.HOLD}
    runs.accepted()  # a message went through: the run was no storm
    assert {runs.verdict(e) for e in same_domain} == {Verdict.CLEAR}

    storm = [refusal(f"u@d{i}.example") for i in range(3)]
    tripped = [runs.refused(e, f"u@d{i}.example") for i, e in enumerate(storm)]
    assert tripped == [False, False, True]
    assert {runs.verdict(e) for e in storm} == {Verdict.STORM}
    again = refusal("v@d9.example")
    runs.end()  # a pause; the same refusal afterwards trips at once
    assert runs.refused(again, "v@d9.example") and runs.verdict(again) is Verdict.STORM
