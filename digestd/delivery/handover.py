"""One message from composition to the server's answer: the sending limits, the breakers
that pause sending, and what the process counts of it.

Two breakers pause sending: ``DIGESTD_SMTP_FAILURE_BURST`` failures in a row, and the same
final refusal from ``DIGESTD_SMTP_STORM_DOMAINS`` recipient domains in a row
(:mod:`digestd.delivery.storms`), which trips before anybody is suppressed for it. A final
refusal is a permanent one, or a temporary one after which the message is not tried again
(its tries or its catch-up window ran out). They must outlive a tick, so they live here,
with the sender, for the life of the process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from digestd.config import DeliveryTuning
from digestd.delivery.limits import Limits
from digestd.delivery.outcomes import RELEASED, Outcomes, Result, Sent
from digestd.delivery.queue import Job
from digestd.delivery.storms import RefusalRuns
from digestd.delivery.transport import Transport
from digestd.errors import DeliveryError, PermanentDeliveryError
from digestd.instruments import Metrics
from digestd.mail.composer import Composer
from digestd.mail.template import MessageTemplate
from digestd.mail.wire import ascii_address

log = logging.getLogger(__name__)


class HandOver:
    def __init__(
        self,
        composer: Composer,
        transport: Transport,
        limits: Limits,
        tuning: DeliveryTuning,
        outcomes: Outcomes,
        *,
        monotonic: Callable[[], float],
        metrics: Metrics,
        heartbeat: Callable[[], None],
    ) -> None:
        self.composer = composer
        self.transport = transport
        self.limits = limits
        self.tuning = tuning
        self.outcomes = outcomes
        self.monotonic = monotonic
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.consecutive_failures = 0
        self.paused_until = 0.0
        self.refusals = RefusalRuns(tuning.storm_domains)
        self.last_failure: DeliveryError | None = None

    @property
    def paused(self) -> bool:
        return self.monotonic() < self.paused_until

    async def transmit(
        self,
        job: Job,
        template: MessageTemplate,
        hold: Callable[[], bool],
        clock: Callable[[], datetime],
    ) -> Result:
        """Compose one message and hand it over, within the sending limits; ``hold``
        says, once a limit lets it go, that it must not leave after all. ``clock``: the
        send's, which says whether a temporary refusal is the message's last."""
        recipient = ascii_address(job.email)
        if not self.limits.active:
            return await self._hand_over(job, template, recipient, hold, clock)
        async with self.limits.slot(recipient):
            return await self._hand_over(job, template, recipient, hold, clock)

    async def _hand_over(
        self,
        job: Job,
        template: MessageTemplate,
        recipient: str,
        hold: Callable[[], bool],
        clock: Callable[[], datetime],
    ) -> Result:
        if hold():
            return RELEASED
        message_id = self.composer.message_id(job.kind, job.period, job.delivery_id)
        # Composed here, just before it leaves: only the messages in flight are in memory.
        data = self.composer.compose(
            template,
            message_id=message_id,
            public_id=job.public_id,
            email=job.email,
            delivery_id=job.delivery_id,
        )
        started = self.monotonic()
        try:
            reply = await self.transport.send(
                self.composer.envelope_from(job.delivery_id), recipient, data
            )
        except DeliveryError as exc:
            self.metrics.smtp_error(str(exc.code or "none"))
            self._failure(exc, recipient, final=self._final(job, exc, clock()))
            return exc
        finally:
            self.metrics.handed_over(self.monotonic() - started)
            self.heartbeat()
        self.consecutive_failures = 0
        self.refusals.accepted()
        self.metrics.smtp_succeeded()
        return Sent(reply, message_id)

    def begin_send(self) -> None:
        self.refusals.begin_send()

    def end_send(self, last: DeliveryError | None) -> None:
        """No more messages in this send: a run of refusals that was all of it is decided."""
        run = self.refusals.end_send()
        if run is not None and last is not None:
            self._pause(
                f"every message of this send ({run.messages}, to {len(run.domains)} "
                "recipient domains) was refused the same way, about the relay rather than "
                "the readers: nobody is suppressed for it",
                last,
            )

    def _final(self, job: Job, exc: DeliveryError, now: datetime) -> bool:
        """A refusal after which the message is not tried again: it may make a storm. A
        temporary refusal that will be retried does not (greylisting defers a new sender's
        first messages to every domain alike, and that is no storm)."""
        return isinstance(exc, PermanentDeliveryError) or self.outcomes.gives_up(job, exc, now)

    def _failure(self, exc: DeliveryError, recipient: str, *, final: bool) -> None:
        self.consecutive_failures += 1
        self.last_failure = exc
        if final and self.refusals.refused(exc, recipient):
            self._pause(
                f"the same refusal from {self.refusals.needed} recipient domains in a row, "
                "about the relay rather than the readers: nobody is suppressed for it",
                exc,
            )
        elif self.consecutive_failures >= self.tuning.failure_burst:
            self._pause(f"{self.consecutive_failures} failures in a row", exc)

    def _pause(self, why: str, exc: DeliveryError) -> None:
        if self.paused:
            return
        self.metrics.sending_paused()
        self.paused_until = self.monotonic() + self.tuning.pause_seconds
        log.warning(
            "sending paused for %.0fs: %s (last: %s); unsent messages stay queued",
            self.tuning.pause_seconds,
            why,
            exc,
        )
        self.consecutive_failures = 0
