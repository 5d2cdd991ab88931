"""From what happened to a message to what is written back to its queue row, and to the
bounce ledger.

4xx answers, timeouts and dropped connections are retried with exponential backoff until
the edition is ``DIGESTD_CATCHUP_HOURS`` old or ``DIGESTD_MAX_ATTEMPTS`` were made; then
the delivery fails. A message that never left (its session lost before its content went
out, :class:`NotSentError`) goes back at once, its try not counted. A 5xx refusal fails it
at once. Either way the refusal is a ledger event whose kind the bounce policy decides
(:mod:`digestd.readers.bounce_policy`): only an address-level reply suppresses, a mailbox
that stays full counts as a soft bounce, anything else fails the message and keeps the
reader. A refusal the sender saw from many domains in a row (``storm``) is about the
relay, whatever its code says. Any other error building or sending one message (a DKIM key
that cannot sign it, a bug) fails that message alone: retried like a 4xx, then ``failed``,
never suppressing the reader and never holding up the rest of the queue.
"""

from __future__ import annotations

import functools
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from digestd.db import storable
from digestd.delivery.queue import Job, Outcome
from digestd.errors import DeliveryError, NotSentError, PermanentDeliveryError
from digestd.models import DeliveryStatus, EditionKind
from digestd.planning.planner import MISSED
from digestd.planning.schedule import catchup_window
from digestd.readers.bounce_policy import Kind, Stage, Verdict, classify_reply
from digestd.readers.ledger import Event

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
    relay: str | None = None  # who answered, for the ledger's reporting MTA
    # Each refusal's retry, drawn once: the sender asks whether a refusal ends its message's
    # tries when it arrives (storms.py), the outcome is written later; both must agree.
    _retries: weakref.WeakKeyDictionary[DeliveryError, tuple[datetime, bool]] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False, compare=False
    )

    def of(self, job: Job, result: Result, now: datetime, *, storm: bool = False) -> Outcome:
        """``storm``: the sender saw this refusal from many domains in a row."""
        if isinstance(result, Released):
            return Outcome(job, DeliveryStatus.QUEUED, tried=False, next_attempt_at=now)
        if isinstance(result, NotSentError):  # back at once, as if released, saying why
            why = storable(str(result), 1000)
            return Outcome(job, DeliveryStatus.QUEUED, False, now, last_error=why)
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
                smtp_reply=storable(result.reply, 500),
                message_id=result.message_id,
            )
        return self._refused(job, result, now, storm)

    def _window(self, job: Job) -> timedelta:
        return _windows(self.catchup)[job.kind]

    def too_late(self, job: Job, now: datetime) -> Skipped | Unsendable | None:
        """A claimed row past the catch-up window is not sent (never a day late, SPEC §4):
        a released or deferred message waited for a tick that came too late."""
        if now - job.due_at <= self._window(job):
            return None
        when = f"due {job.due_at:%Y-%m-%d %H:%M}Z, beyond the catch-up window"
        tried = job.attempts - 1  # the claim counted this one
        return (
            Unsendable(f"gave up after {tried} attempts: {when}")
            if tried
            else Skipped(f"{MISSED} {when}")
        )

    def gives_up(self, job: Job, error: DeliveryError, now: datetime) -> bool:
        """A temporary refusal after which the message is not tried again."""
        if isinstance(error, PermanentDeliveryError | NotSentError):
            return False
        return self._retry(job, error, now)[1]

    def _retry(self, job: Job, error: DeliveryError, now: datetime) -> tuple[datetime, bool]:
        """When a refused message would be tried again, and whether that is too late."""
        decided = self._retries.get(error)
        if decided is None:
            retry_at = now + backoff(job.attempts + 1, self.rng)
            # A retry the window would not let out is no retry: give up now, while the
            # reply that says why is at hand (a full mailbox counts as a soft bounce).
            late = retry_at - job.due_at > self._window(job)
            decided = self._retries[error] = (retry_at, late or job.attempts >= self.max_attempts)
        return decided

    def _refused(self, job: Job, error: DeliveryError, now: datetime, storm: bool) -> Outcome:
        reply = storable(str(error), 500)
        retry_at, gave_up = self._retry(job, error, now)
        permanent = isinstance(error, PermanentDeliveryError) and not storm
        why = str(error) + (_STORM if storm else "")
        if not permanent and not gave_up:
            # Deferred, or refused the way the relay refused everybody (a storm: sending
            # pauses): the message waits for the relay, not failed for its refusal, so a
            # refusing relay does not drain the edition a pause at a time.
            return Outcome(
                job,
                DeliveryStatus.QUEUED,
                True,
                retry_at,
                smtp_reply=reply,
                last_error=storable(why, 1000),
            )
        verdict = verdict_of(error)
        if not permanent:
            why = f"gave up after {job.attempts} attempts: {why}"
        kind = verdict.kind
        if storm and kind in (Kind.HARD, Kind.SOFT):
            kind = Kind.FAILED
        event = Event(kind, "smtp", "smtp", verdict.shown or None, reply, reporting_mta=self.relay)
        return Outcome(
            job,
            DeliveryStatus.FAILED,
            True,
            now,
            smtp_reply=reply,
            last_error=storable(why, 1000),
            event=event,
        )

    def _broken(self, job: Job, why: str, now: datetime) -> Outcome:
        retry_at = now + backoff(job.attempts, self.rng)
        if retry_at - job.due_at > self._window(job) or job.attempts >= self.max_attempts:
            error = f"gave up after {job.attempts} attempts: {why}"
            return Outcome(job, DeliveryStatus.FAILED, True, now, last_error=storable(error, 1000))
        return Outcome(job, DeliveryStatus.QUEUED, True, retry_at, last_error=storable(why, 1000))


_STORM = " (the same refusal came from many domains in a row: about the relay)"


@functools.cache
def _windows(catchup: timedelta) -> dict[str, timedelta]:
    """Each kind's catch-up window, worked out once (the sender asks for every message)."""
    return {str(kind): catchup_window(kind, catchup) for kind in EditionKind}


def verdict_of(error: DeliveryError) -> Verdict:
    """What the bounce policy makes of a refusal. Without a stage the reply was to the
    session (connecting, MAIL FROM) or there was none (a timeout)."""
    return classify_reply(Stage(error.stage or Stage.SESSION), str(error))


def label(result: Result, outcome: Outcome) -> str:
    """The outcome as /metrics counts it: sent, bounced (a hard or soft bounce), failed,
    deferred or skipped."""
    if outcome.event is not None and outcome.event.kind in (Kind.HARD, Kind.SOFT):
        return "bounced"
    if outcome.status == DeliveryStatus.QUEUED:
        return "deferred"
    return str(outcome.status)
