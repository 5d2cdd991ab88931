"""The same permanent refusal from many domains in a row is about the relay, not the readers.

A relay answering every recipient ``554 5.7.1 Relay access denied``, or, misconfigured,
``550 5.1.1 User unknown in relay recipient table``, would otherwise fail or suppress the
whole list. The sender tells :class:`RefusalRuns` every permanent refusal in the order
they arrive: the same reply (codes and text with addresses, the recipient's domain and
anything holding a digit taken out) from ``domains`` distinct recipient domains, with no
accepted message or other refusal between, is a *storm*: sending pauses, and nobody is
suppressed for that reply.

Until its run is decided, a refusal that would suppress is *held*: its outcome is not
written yet, so nobody is suppressed before the breaker could trip. Its row stays leased;
after a crash it is sent again, which for a refused message repeats nothing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from digestd.errors import PermanentDeliveryError
from digestd.readers.bounce_policy import codes_in

J = TypeVar("J")
R = TypeVar("R")
_ADDRESS = re.compile(r"[^\s<>\"'():;,\[\]]+@[^\s<>\"'():;,\[\]]+")
_HAS_DIGIT = re.compile(r"\S*\d\S*")


class Verdict(enum.Enum):
    CLEAR = "clear"  # its run ended short of a storm: the refusal means what it says
    HOLD = "hold"  # its run is still going: wait
    STORM = "storm"  # its run reached the threshold: about the relay


@dataclass(eq=False)
class Run:
    key: str
    domains: set[str] = field(default_factory=set)
    open: bool = True
    storm: bool = False


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
        self._runs: dict[int, tuple[PermanentDeliveryError, Run]] = {}  # by id(error)

    def accepted(self) -> None:
        self.end()
        self._storm_keys.clear()

    def refused(self, error: PermanentDeliveryError, recipient: str) -> bool:
        """Note a permanent refusal; True when its run is a storm (pause sending)."""
        key = reply_key(str(error), recipient)
        run = self.current
        if run is None or run.key != key:
            self.end()
            run = self.current = Run(key, storm=key in self._storm_keys)
        run.domains.add(recipient.rpartition("@")[2].lower())
        self._runs[id(error)] = (error, run)  # kept until forget(): the id stays unique
        if not run.storm and len(run.domains) >= self.needed:
            run.storm = True
            self._storm_keys.add(key)
        return run.storm

    def verdict(self, error: PermanentDeliveryError) -> Verdict:
        found = self._runs.get(id(error))
        if found is None or found[0] is not error:
            return Verdict.CLEAR
        run = found[1]
        if run.storm:
            return Verdict.STORM
        return Verdict.HOLD if run.open else Verdict.CLEAR

    def forget(self, error: PermanentDeliveryError) -> None:
        self._runs.pop(id(error), None)

    def end(self) -> None:
        """The current run is over (a success, another refusal, or no more sending)."""
        if self.current is not None:
            self.current.open = False
            self.current = None

    def sort_out(
        self,
        entries: Iterable[tuple[J, R]],
        may_suppress: Callable[[PermanentDeliveryError], bool],
    ) -> tuple[list[tuple[J, R, bool]], list[tuple[J, R]]]:
        """``(job, result)`` entries → those whose outcome can be written now, each with
        whether its refusal was part of a storm, and those to hold until their run is
        decided (refusals that would count against the address)."""
        ready: list[tuple[J, R, bool]] = []
        held: list[tuple[J, R]] = []
        for job, result in entries:
            if not isinstance(result, PermanentDeliveryError):
                ready.append((job, result, False))
                continue
            verdict = self.verdict(result)
            if verdict is Verdict.HOLD and may_suppress(result):
                held.append((job, result))
                continue
            self.forget(result)
            ready.append((job, result, verdict is Verdict.STORM))
        return ready, held
