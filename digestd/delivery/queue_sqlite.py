"""The send queue on SQLite: one writer at a time, so no row locks; ``executemany`` writes.

SQLite runs in this process, so "the database's clock" is this host's clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, select, update
from sqlalchemy.orm import Session

from digestd.bulk import among
from digestd.db import sqlite_value
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


class SqliteQueue(QueueStore):
    def database_clock(self, session: Session) -> datetime:
        return datetime.now(UTC)

    def _claim(
        self, session: Session, ids: list[int], expired: ColumnElement[bool], until: datetime
    ) -> list[Job]:
        # Guarded again: another process may have claimed between our SELECT and this
        # UPDATE; only rows still claimable move, and only they carry our lease. The status
        # is read as ``status || ''``, which no index holds: given the status itself, SQLite
        # (no statistics) read every queued row through the claim index to find these ids,
        # 30-60 ms a batch with 100 000 queued, where a thousand rowid lookups take 2 ms.
        # So is the read-back's, for the same reason (every row being sent).
        d = DELIVERIES.c
        chosen = among(session, d.id, ids)  # the same ids in both statements: encoded once
        connection = session.connection()
        connection.execute(
            update(DELIVERIES)
            .where(chosen, claimable(expired, status=d.status + ""))
            .values(claimed_values(self.worker, until))
        )
        rows = connection.execute(
            select(*JOB_COLUMNS)
            .join_from(DELIVERIES, SUBSCRIBERS, SUBSCRIBERS.c.id == d.subscriber_id)
            .join(EDITIONS, EDITIONS.c.id == d.edition_id)
            .where(
                chosen,
                d.status + "" == DeliveryStatus.SENDING,
                d.lease_expires_at == until,
                d.claimed_by == self.worker.label,
            )
        ).all()
        return [Job(*cast(tuple[Any, ...], row)) for row in rows]

    def _write(self, session: Session, rows: list[dict[str, Any]]) -> int:
        # The DB-API's own executemany: SQLAlchemy would process each row's parameters in
        # Python, a good share of the sending process's time. Instants are written as the
        # column type stores them (digestd.models.UTCDateTime on SQLite).
        result = session.connection().exec_driver_sql(
            _OUTCOME_UPDATE,
            [
                (
                    row["b_status"],
                    row["b_attempt"],
                    sqlite_value(row["b_next_attempt_at"]),
                    sqlite_value(row["b_sent_at"]),
                    row["b_smtp_reply"],
                    row["b_message_id"],
                    row["b_last_error"],
                    row["b_id"],
                    sqlite_value(row["b_lease"]),
                    row["b_worker"],
                )
                for row in rows
            ],
        )
        return int(result.rowcount)  # sqlite3 sums an executemany's rows


_OUTCOME_UPDATE = (
    "UPDATE deliveries SET status = ?, lease_expires_at = NULL, attempts = attempts + ?, "
    "next_attempt_at = ?, sent_at = ?, smtp_reply = ?, message_id = ?, last_error = ? "
    f"WHERE id = ? AND status = '{DeliveryStatus.SENDING}' AND lease_expires_at = ? "
    "AND claimed_by = ?"
)
