"""A test send: an edition, as a reader of some categories gets it today, mailed to one
address through the service's own transport, so an operator sees it in a real inbox.

It uses up nobody's edition: no edition, digest or queue row is written, so every reader
still gets theirs. The message says what it is: the subject starts with ``[Test]`` and the
Message-ID with ``test.``; its personal links name no reader (they open "no subscription"
pages), and the envelope sender is the plain bounce address, matching no delivery.
Called by ``POST /api/editions/test``, the admin page and ``digestd send-test``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from digestd.delivery.transport import Transport
from digestd.errors import ValidationError
from digestd.mail.wire import ascii_address
from digestd.models import EditionKind, Suppression
from digestd.ops.preview import Parts, edition_now
from digestd.readers.subscribers import email_hash

SUBJECT_PREFIX = "[Test] "
NOBODY = "test"  # the public id the links carry: no reader has it (tokens.SAMPLE_READERS)


class Sendable(Parts, Protocol):
    transport: Transport


@dataclass(frozen=True)
class TestSent:
    __test__ = False  # not a pytest class, whatever its name

    kind: EditionKind
    period: str  # the edition's local date
    to: str
    subject: str
    message_id: str
    articles: int
    reply: str  # what the mail server answered

    def as_json(self) -> dict[str, object]:
        return {
            "kind": str(self.kind),
            "period": self.period,
            "to": self.to,
            "subject": self.subject,
            "message_id": self.message_id,
            "articles": self.articles,
            "reply": self.reply,
        }


def test_message(
    service: Parts, kind: EditionKind, to: str, categories: list[str], now: datetime
) -> tuple[TestSent, bytes] | None:
    """The test message's bytes and what it is; None when the edition would be empty."""
    edition = edition_now(service, kind, categories, now)
    if edition is None:
        return None
    template = edition.template.retitled(SUBJECT_PREFIX + edition.template.subject)
    period = edition.slot.period
    composer = service.composer
    message_id = composer.notice_id(f"test.{kind}.{period}")
    # Signed like every digest: a test of the real thing.
    data = composer.notice(template, message_id=message_id, email=to, public_id=NOBODY, now=now)
    sent = TestSent(kind, period, to, template.subject, message_id, edition.articles, "")
    return sent, data


def refuse_suppressed(service: Parts, to: str) -> None:
    """A :class:`ValidationError` naming ``to`` when the address is suppressed: a test is
    mail too, and an erased, bounced or complaining address is never mailed again."""
    with service.sessions() as session:
        suppression = session.get(Suppression, email_hash(to))
    if suppression is not None:
        reason = suppression.reason
        raise ValidationError("to", f"is on the suppression list ({reason}): never mailed")


async def send_test(
    service: Sendable, kind: EditionKind, to: str, categories: list[str], now: datetime
) -> TestSent | None:
    """Render and send; raises :class:`~digestd.errors.DeliveryError` when the mail server
    refuses, :class:`ValidationError` (``to``) for a suppressed address. None when there is
    nothing to send (no articles in those categories)."""
    await asyncio.to_thread(refuse_suppressed, service, to)
    made = await asyncio.to_thread(test_message, service, kind, to, categories, now)
    if made is None:
        return None
    sent, data = made
    envelope_from = f"bounces@{service.settings.from_domain}"
    reply = await service.transport.send(envelope_from, ascii_address(to), data)
    return replace(sent, reply=reply)
