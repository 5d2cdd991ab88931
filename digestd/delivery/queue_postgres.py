"""The send queue on PostgreSQL: rows picked with ``FOR UPDATE SKIP LOCKED`` (workers never
wait on each other or take the same row), and a batch is one statement each way. Leases
are read against the server's clock, the same for every worker whatever its own says."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Integer, Table, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from digestd.bulk import among, rows_table
from digestd.delivery.queue import (
    DELIVERIES,
    EDITIONS,
    JOB_COLUMNS,
    SUBSCRIBERS,
    Job,
    QueueStore,
    claimable,
    claimed_values,
)
from digestd.models import Delivery, DeliveryStatus

_DELIVERIES = cast(Table, Delivery.__table__)
_columns = _DELIVERIES.c
# The types of an outcome's values (see Outcome.values), for the unnest arrays.
OUTCOME_TYPES: dict[str, TypeEngine[Any]] = {
    "b_id": _columns.id.type,
    "b_lease": _columns.lease_expires_at.type,
    "b_worker": _columns.claimed_by.type,
    "b_status": _columns.status.type,
    "b_attempt": Integer(),
    "b_next_attempt_at": _columns.next_attempt_at.type,
    "b_sent_at": _columns.sent_at.type,
    "b_smtp_reply": _columns.smtp_reply.type,
    "b_message_id": _columns.message_id.type,
    "b_last_error": _columns.last_error.type,
}


class PostgresQueue(QueueStore):
    locks = True

    def database_clock(self, session: Session) -> datetime:
        clock = session.scalar(select(func.now()))
        assert isinstance(clock, datetime)
        return clock

    def _claim(
        self, session: Session, ids: list[int], expired: ColumnElement[bool], until: datetime
    ) -> list[Job]:
        # One statement moves the rows and returns what sending needs; the ids go as one
        # array (an IN list is a bind parameter per id to compile and convert).
        d = DELIVERIES.c
        rows = (
            session.connection()
            .execute(
                update(DELIVERIES)
                .where(
                    among(session, d.id, ids),
                    claimable(expired),
                    SUBSCRIBERS.c.id == d.subscriber_id,
                    EDITIONS.c.id == d.edition_id,
                )
                .values(claimed_values(self.worker, until))
                .returning(*JOB_COLUMNS)
            )
            .all()
        )
        return [Job(*cast(tuple[Any, ...], row)) for row in rows]

    def _write(self, session: Session, rows: list[dict[str, Any]]) -> int:
        # One statement for the batch (an executemany is a statement per row here).
        table = _DELIVERIES
        outcome = rows_table(rows, OUTCOME_TYPES).c
        result = session.execute(
            update(table)
            .where(
                table.c.id == outcome["b_id"],
                table.c.status == DeliveryStatus.SENDING,
                table.c.lease_expires_at == outcome["b_lease"],
                table.c.claimed_by == outcome["b_worker"],
            )
            .values(
                status=outcome["b_status"],
                lease_expires_at=None,
                attempts=table.c.attempts + outcome["b_attempt"],
                next_attempt_at=outcome["b_next_attempt_at"],
                sent_at=outcome["b_sent_at"],
                smtp_reply=outcome["b_smtp_reply"],
                message_id=outcome["b_message_id"],
                last_error=outcome["b_last_error"],
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
