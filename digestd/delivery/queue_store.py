"""The queue store for the database digestd runs on (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from digestd.delivery.queue import QueueStore
from digestd.delivery.queue_postgres import PostgresQueue
from digestd.delivery.queue_sqlite import SqliteQueue
from digestd.delivery.worker import Worker


def queue_store(
    sessions: sessionmaker[Session],
    worker: Worker,
    *,
    max_attempts: int = 8,
    clock: Callable[[], datetime] | None = None,
) -> QueueStore:
    with sessions() as session:
        dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return PostgresQueue(sessions, worker, max_attempts=max_attempts, clock=clock)
    return SqliteQueue(sessions, worker, max_attempts=max_attempts, clock=clock)
