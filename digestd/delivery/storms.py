"""The same final refusal from many domains in a row is about the relay, not the readers.

A relay answering every recipient ``554 5.7.1 Relay access denied``, or, misconfigured,
``550 5.1.1 User unknown in relay recipient table``, would otherwise fail or suppress the
whole list; one deferring everybody for days (``450 4.1.1 unverified address`` while its
address probes cannot get out) would have each message give up as a soft bounce, and after
three days suppress everybody. The sender tells :class:`RefusalRuns` every *final*
refusal, in the order they arrive: a permanent one, or a temporary one after which the
message is not tried again. (A temporary refusal that will be retried is not told: a new
sender is greylisted by every domain alike, and that is no storm.) The same reply (codes
and text with addresses, the recipient's domain and anything holding a digit taken out)
from ``domains`` distinct recipient domains, with no accepted message or other refusal
between, is a *storm*: sending pauses, nobody is suppressed for that reply, and its
messages wait in the queue for the relay (a temporary one's tries are over: it fails,
counting against nobody).

A list with fewer domains than that can never make such a run, so one more run is a
storm: every message of a send refused the same way, at least :data:`ALL_REFUSED`
of them and not one accepted (for temporary refusals, from two domains at least: three
readers whose mailboxes at one provider stay full are three soft bounces). A relay
refusing a small company's list must not suppress it; a handful of dead addresses sent on
their own is refused again at the next send, and the warning says so.

Until its run is decided, a refusal is *held*: its outcome is not written yet, so nobody
is suppressed, and no message failed, before the breaker could trip. A refusal that was
part of a storm goes back to the queue (:mod:`digestd.delivery.outcomes`): the relay,
not the message, was refused, and a refusing relay must not drain the edition a pause at
a time. A held row stays leased; after a crash it is sent again, which for a refused
message repeats nothing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from digestd.errors import DeliveryError, PermanentDeliveryError
from digestd.readers.bounce_policy import codes_in

J = TypeVar("J")
R = TypeVar("R")
_ADDRESS = re.compile(r"[^\s<>\"'():;,\[\]]+@[^\s<>\"'():;,\[\]]+")
_HAS_DIGIT = re.compile(r"\S*\d\S*")


class Verdict(enum.Enum):
    CLEAR = "clear"  # its run ended short of a storm: the refusal means what it says
    HOLD = "hold"  # its run is still going: wait
    STORM = "storm"  # its run reached the threshold: about the relay


ALL_REFUSED = 3  # messages: a whole send refused alike is the relay's refusal from here


@dataclass(eq=False)
class Run:
    key: str
    domains: set[str] = field(default_factory=set)
    messages: int = 0
    open: bool = True
    storm: bool = False
    temporary: bool = False  # temporary refusals that ended their messages' tries


def reply_gist(reply: str) -> str:
    """A reply without whom it was about, to count the reasons of a tick's failures."""
    text = _ADDRESS.sub("<address>", reply).replace("<<address>>", "<address>")
    return " ".join(text.split())[:160]


def reply_key(reply: str, recipient: str) -> str:
    """What two refusals must share to count as "the same": ``550 5.1.1 <rcpt>: user
    unknown in relay recipient table`` for every recipient."""
    code, status = codes_in(reply)
    domain = recipient.rpartition("@")[2].lower()
    text = _ADDRESS.sub("<address>", reply.lower())
    if domain:
        text = text.replace(domain, "<domain>")
    text = " ".join(_HAS_DIGIT.sub("#", text).split())
    return f"{code} {status} {text[:200]}"


class RefusalRuns:
    """Runs of identical permanent refusals, as the sender sees them arrive."""

    def __init__(self, domains: int) -> None:
        self.needed = domains
        self.current: Run | None = None
        # Replies that made a storm: the first one again trips at once (after a pause the
        # relay is asked again, not burned through), until a message is accepted.
        self._storm_keys: set[str] = set()
        self._runs: dict[int, tuple[DeliveryError, Run]] = {}  # by id(error)
        self._send_accepted = False  # this send: a message went through
        self._send_runs = 0  # this send: runs begun

    def begin_send(self) -> None:
        self._send_accepted, self._send_runs = False, 0

    def accepted(self) -> None:
        self.end()
        self._storm_keys.clear()
        self._send_accepted = True

    def refused(self, error: DeliveryError, recipient: str) -> bool:
        """Note a final refusal; True when its run is a storm (pause sending)."""
        key = reply_key(str(error), recipient)
        run = self.current
        if run is None or run.key != key:
            self.end()
            temporary = not isinstance(error, PermanentDeliveryError)
            run = self.current = Run(key, storm=key in self._storm_keys, temporary=temporary)
            self._send_runs += 1
        run.domains.add(recipient.rpartition("@")[2].lower())
        run.messages += 1
        self._runs[id(error)] = (error, run)  # kept until forget(): the id stays unique
        if not run.storm and len(run.domains) >= self.needed:
            run.storm = True
            self._storm_keys.add(key)
        return run.storm

    def verdict(self, error: DeliveryError) -> Verdict:
        found = self._runs.get(id(error))
        if found is None or found[0] is not error:
            return Verdict.CLEAR
        run = found[1]
        if run.storm:
            return Verdict.STORM
        return Verdict.HOLD if run.open else Verdict.CLEAR

    def forget(self, error: DeliveryError) -> None:
        self._runs.pop(id(error), None)

    def end(self) -> None:
        """The current run is over (a success, another refusal, or a pause)."""
        if self.current is not None:
            self.current.open = False
            self.current = None

    def end_send(self) -> Run | None:
        """No more refusals in this send. Its one run, when it is the whole send and long
        enough, becomes a storm, which is returned (the sender says so and pauses)."""
        run, whole = self.current, not self._send_accepted and self._send_runs == 1
        self.end()
        if run is None or run.storm or not whole or run.messages < ALL_REFUSED:
            return None
        if run.temporary and len(run.domains) < 2:
            return None
        run.storm = True
        self._storm_keys.add(run.key)
        return run

    def sort_out(
        self, entries: Iterable[tuple[J, R]]
    ) -> tuple[list[tuple[J, R, bool]], list[tuple[J, R]]]:
        """``(job, result)`` entries → those whose outcome can be written now, each with
        whether its refusal was part of a storm, and those to hold until their run is
        decided (a refusal in a run still going may turn out to be the relay's)."""
        ready: list[tuple[J, R, bool]] = []
        held: list[tuple[J, R]] = []
        for job, result in entries:
            if not isinstance(result, DeliveryError):
                ready.append((job, result, False))
                continue
            verdict = self.verdict(result)
            if verdict is Verdict.HOLD:
                held.append((job, result))
                continue
            self.forget(result)
            ready.append((job, result, verdict is Verdict.STORM))
        return ready, held
