"""The tick's helper process sends too, once it has planned.

While an edition is planned, the helper (:mod:`digestd.planning.enqueuer`) has one core and
the sending process the other. Once planning is over the helper would sit idle while the
sending process, one core at most (the GIL), sends the rest of the edition. So the helper
then sends beside it, a second worker on the same queue (claims never overlap: see
:mod:`digestd.delivery.queue`), with its share of the SMTP pool: the sending process
gives up as many connections (:meth:`SmtpPool.limit`) while the helper sends, so the
relay never sees more sessions than ``DIGESTD_SMTP_POOL_SIZE``.

It only does so when nothing else bounds the pace: with a rate or per-domain limit, which
each process would apply on its own, the relay's pace and not a core is what an edition
waits for, and the sending process sends alone.

What the helper counts (messages, SMTP errors, hand-over times) goes back to the sending
process with each batch (:class:`Settled`), so ``/metrics`` and the tick's progress and
report include the helper's share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from digestd.config import Settings
from digestd.db import make_engine, make_sessions
from digestd.delivery.sender import DeliveryReport, Sender
from digestd.delivery.transport import SmtpPool
from digestd.instruments import Metrics, Tally
from digestd.mail.composer import Composer
from digestd.mail.digests import DigestRenderer, Masthead
from digestd.tokens import Tokens


@dataclass(frozen=True)
class Settled:
    """A batch of the helper's outcomes written: how many, and what was counted."""

    count: int
    tally: Tally


@dataclass(frozen=True)
class Shared:
    """The helper's sending, done: its report and what it counted since its last batch."""

    report: DeliveryReport
    tally: Tally


@dataclass(frozen=True)
class SendingShare:
    """What the helper needs to send beside the sending process (plain data: it crosses
    to the helper process)."""

    settings: Settings
    connections: int  # the helper's pool; the sending process keeps the rest

    @classmethod
    def of(cls, settings: Settings) -> SendingShare | None:
        """The helper's share, or None when it should not send (see the module docstring)."""
        tuning = settings.delivery
        if settings.smtp is None or tuning.pool_size < 2:
            return None  # the development catcher, or a single connection to share
        if tuning.rate or tuning.domain_rate or tuning.domain_concurrency:
            return None
        return cls(settings, tuning.pool_size // 2)

    def run(
        self, now: datetime, tell: Callable[[Any], None], stopping: Callable[[], bool]
    ) -> Shared:
        """Send what is due at ``now`` until the queue is empty or ``stopping()``; ``tell``
        hears each batch settled (:class:`Settled`). Runs in the helper process."""
        return asyncio.run(self._send(now, tell, stopping))

    async def _send(
        self, now: datetime, tell: Callable[[Any], None], stopping: Callable[[], bool]
    ) -> Shared:
        settings = self.settings
        assert settings.smtp is not None
        tuning = replace(settings.delivery, pool_size=self.connections)
        engine = make_engine(settings.database_url)
        metrics = Metrics()
        metrics.tally = Tally()
        transport = SmtpPool(settings.smtp, self.connections, tuning.max_per_connection)
        sender = Sender.build(
            replace(settings, delivery=tuning),
            make_sessions(engine),
            DigestRenderer(Masthead.from_settings(settings)),
            Composer(settings, Tokens(settings.secret_keys)),
            transport,
            metrics=metrics,
        )

        def settled(count: int) -> None:
            tell(Settled(count, metrics.take_tally()))

        try:
            report = await sender.deliver_due(now, stopping, settled)
        finally:
            sender.close()
            await transport.close()
            engine.dispose()
        return Shared(report, metrics.take_tally())
