"""From what happened to a message to what is written back to its queue row.

4xx answers, timeouts and dropped connections are retried with exponential backoff until
the edition is ``DIGESTD_CATCHUP_HOURS`` old or ``DIGESTD_MAX_ATTEMPTS`` were made; then
the delivery fails and counts as a soft bounce. A 5xx refusal fails it at once and
suppresses the address. Any other error building or sending one message (a DKIM key that
cannot sign it, a bug) fails that message alone: retried like a 4xx, then ``failed``,
never suppressing the reader and never holding up the rest of the queue.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from digestd.delivery.queue import Bounce, Job, Outcome
from digestd.errors import DeliveryError, PermanentDeliveryError
from digestd.models import DeliveryStatus
from digestd.readers.suppression import SOFT_BOUNCE_MARK

RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=1)


class Released:
    """Not sent, back to the queue as it was (stopping, pausing, the lease running short)."""


RELEASED = Released()


@dataclass(frozen=True)
class Skipped:
    why: str  # the reader is no longer active, the address is suppressed, ...


@dataclass(frozen=True)
class Unsendable:
    why: str  # the message cannot be made (its digest failed to render)


@dataclass(frozen=True)
class Broken:
    why: str  # an unexpected error while building or sending this message


@dataclass(frozen=True)
class Sent:
    reply: str  # the server's answer to the end of the content
    message_id: str


# What sending one job came to: sent, refused, or one of the above.
Result = Sent | DeliveryError | Released | Skipped | Unsendable | Broken


def backoff(attempts: int, rng: Callable[[], float] = random.random) -> timedelta:
    """Exponential with ±20 % jitter, so a fleet of deferred messages does not retry in step."""
    delay: timedelta = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
    return delay * (0.8 + 0.4 * rng())


@dataclass(frozen=True)
class Outcomes:
    """Turns results into outcomes with the sender's policy."""

    catchup: timedelta  # also how old a message may get while being retried
    max_attempts: int
    rng: Callable[[], float] = random.random

    def of(self, job: Job, result: Result, now: datetime) -> Outcome:
        if isinstance(result, Released):
            return Outcome(job, DeliveryStatus.QUEUED, tried=False, next_attempt_at=now)
        if isinstance(result, Skipped):
            return Outcome(job, DeliveryStatus.SKIPPED, False, now, last_error=result.why[:1000])
        if isinstance(result, Unsendable):
            return Outcome(job, DeliveryStatus.FAILED, True, now, last_error=result.why[:1000])
        if isinstance(result, Broken):
            return self._broken(job, result.why, now)
        if isinstance(result, Sent):
            return Outcome(
                job,
                DeliveryStatus.SENT,
                True,
                now,
                sent_at=now,
                smtp_reply=result.reply[:500],
                message_id=result.message_id,
            )
        return self._refused(job, result, now)

    def _refused(self, job: Job, error: DeliveryError, now: datetime) -> Outcome:
        reply = str(error)[:500]
        if isinstance(error, PermanentDeliveryError):
            return Outcome(
                job,
                DeliveryStatus.FAILED,
                True,
                now,
                smtp_reply=reply,
                last_error=str(error)[:1000],
                bounce=Bounce.HARD,
            )
        if now - job.due_at > self.catchup or job.attempts >= self.max_attempts:
            why = f"{SOFT_BOUNCE_MARK} gave up after {job.attempts} attempts: {error}"
            return Outcome(
                job,
                DeliveryStatus.FAILED,
                True,
                now,
                smtp_reply=reply,
                last_error=why[:1000],
                bounce=Bounce.SOFT,
            )
        retry_at = now + backoff(job.attempts + 1, self.rng)
        return Outcome(
            job,
            DeliveryStatus.QUEUED,
            True,
            retry_at,
            smtp_reply=reply,
            last_error=str(error)[:1000],
        )

    def _broken(self, job: Job, why: str, now: datetime) -> Outcome:
        if now - job.due_at > self.catchup or job.attempts >= self.max_attempts:
            error = f"gave up after {job.attempts} attempts: {why}"
            return Outcome(job, DeliveryStatus.FAILED, True, now, last_error=error[:1000])
        retry_at = now + backoff(job.attempts, self.rng)
        return Outcome(job, DeliveryStatus.QUEUED, True, retry_at, last_error=why[:1000])


def label(result: Result, outcome: Outcome) -> str:
    """The outcome as /metrics counts it: sent, bounced, failed, deferred or skipped."""
    if isinstance(result, PermanentDeliveryError):
        return "bounced"
    if outcome.status == DeliveryStatus.QUEUED:
        return "deferred"
    return str(outcome.status)
