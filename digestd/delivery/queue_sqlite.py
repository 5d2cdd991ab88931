"""The send queue on SQLite: one writer at a time, so no row locks; ``executemany`` writes.

SQLite runs in this process, so "the database's clock" is this host's clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, select, update
from sqlalchemy.orm import Session

from digestd.delivery.queue import JOB_COLUMNS, Job, QueueStore, claimable, claimed_values
from digestd.models import Delivery, DeliveryStatus, Edition, Subscriber

_DELIVERIES = cast(Table, Delivery.__table__)


class SqliteQueue(QueueStore):
    def database_clock(self, session: Session) -> datetime:
        return datetime.now(UTC)

    def _claim(
        self, session: Session, ids: list[int], expired: ColumnElement[bool], until: datetime
    ) -> list[Job]:
        # Guarded again: another process may have claimed between our SELECT and this
        # UPDATE; only rows still claimable move, and only they carry our lease.
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), claimable(expired))
            .values(claimed_values(self.worker, until))
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(
            select(*JOB_COLUMNS)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .join(Edition, Edition.id == Delivery.edition_id)
            .where(
                Delivery.id.in_(ids),
                Delivery.status == DeliveryStatus.SENDING,
                Delivery.lease_expires_at == until,
                Delivery.claimed_by == self.worker.label,
            )
        ).all()
        return [Job(*cast(tuple[Any, ...], row)) for row in rows]

    def _write(self, session: Session, rows: list[dict[str, Any]]) -> None:
        table = _DELIVERIES
        session.execute(
            update(table)
            .where(
                table.c.id == bindparam("b_id"),
                table.c.status == DeliveryStatus.SENDING,
                table.c.lease_expires_at == bindparam("b_lease"),
                table.c.claimed_by == bindparam("b_worker"),
            )
            .values(
                status=bindparam("b_status"),
                lease_expires_at=None,
                attempts=table.c.attempts + bindparam("b_attempt"),
                next_attempt_at=bindparam("b_next_attempt_at"),
                sent_at=bindparam("b_sent_at"),
                smtp_reply=bindparam("b_smtp_reply"),
                message_id=bindparam("b_message_id"),
                last_error=bindparam("b_last_error"),
            ),
            rows,
        )
