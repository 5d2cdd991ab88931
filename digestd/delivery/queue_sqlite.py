"""The send queue on SQLite: one writer at a time, so no row locks; ``executemany`` writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from digestd.delivery.queue import JOB_COLUMNS, Job, QueueStore, claimable, due_ids
from digestd.models import Delivery, DeliveryStatus, Edition, Subscriber

_DELIVERIES = cast(Table, Delivery.__table__)


class SqliteQueue(QueueStore):
    def _claim(self, session: Session, now: datetime, until: datetime, size: int) -> list[Job]:
        ids = due_ids(session, now, size, lock=False)
        if not ids:
            return []
        # Guarded again: another process may have claimed between our SELECT and this
        # UPDATE; only rows still claimable move, and only they carry our lease.
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), claimable(now))
            .values(status=DeliveryStatus.SENDING, lease_expires_at=until)
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
            )
            .values(
                status=bindparam("b_status"),
                lease_expires_at=None,
                attempts=table.c.attempts + bindparam("b_tried"),
                next_attempt_at=bindparam("b_next_attempt_at"),
                sent_at=bindparam("b_sent_at"),
                smtp_reply=bindparam("b_smtp_reply"),
                message_id=bindparam("b_message_id"),
                last_error=bindparam("b_last_error"),
            ),
            rows,
        )
