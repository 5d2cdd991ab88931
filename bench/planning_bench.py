"""What planning one daily edition costs on SQLite at this schema and, as the reference, at
an older one (migration 0015 made queue ids ``AUTOINCREMENT``: SQLite then keeps the highest
id ever handed out in ``sqlite_sequence``, one more write per inserted row).

Each round builds a fresh database per schema (the same readers: three topic sets, so three
digests) and times ``enqueue_due`` at 07:00: selection, rendering, queue rows. Rounds
alternate the two, so a machine that slows down slows both.

Run:  .venv/bin/python bench/planning_bench.py [--readers 100000] [--rounds 3] [--vs 0014]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from digestd.config import load_settings
from digestd.content.articles import ingest
from digestd.db import SCHEMA_HEAD, alembic_config, make_engine, migrate
from digestd.models import Subscriber, SubscriberCategory
from digestd.planning.planner import enqueue_due
from digestd.service import Service

SEND = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
TOPICS = (("ai",), ("robotics",), ("ai", "robotics"))


def _seed(session: Session, readers: int) -> None:
    """A story an hour in each topic for two days; ``readers`` due at ``SEND``."""
    stories = [
        {
            "id": f"{topic}-{hour}",
            "title": f"Story {hour} about {topic}",
            "url": f"https://news.example.com/{topic}/{hour}",
            "source": f"Outlet {hour % 7}",
            "published_at": (SEND - timedelta(hours=hour + 1)).isoformat(),
            "categories": [topic],
            "score": hour % 5,
        }
        for topic in ("ai", "robotics")
        for hour in range(48)
    ]
    assert not ingest(session, enumerate(stories, start=1)).errors
    for start in range(0, readers, 10_000):
        numbers = range(start, min(readers, start + 10_000))
        session.execute(
            insert(Subscriber),
            [
                {
                    "id": n + 1,
                    "public_id": f"bench-{n}",
                    "email": f"r{n:07d}@d{n % 20:02d}.example.com",
                    "status": "active",
                    "timezone": "UTC",
                    "wants_daily": True,
                    "wants_weekly": False,
                    "next_daily_at": SEND,
                    "created_at": SEND - timedelta(days=1),
                    "consent_source": "bench",
                    "soft_bounces": 0,
                }
                for n in numbers
            ],
        )
        session.execute(
            insert(SubscriberCategory),
            [
                {"subscriber_id": n + 1, "category": topic}
                for n in numbers
                for topic in TOPICS[n % len(TOPICS)]
            ],
        )


def _database(directory: Path, revision: str) -> str:
    url = f"sqlite:///{directory}/bench.db"
    engine = make_engine(url)
    migrate(engine)
    if revision != SCHEMA_HEAD:
        command.downgrade(alembic_config(engine), revision)
        # The code is this digestd's: let it open the older tables as if current.
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE alembic_version SET version_num = :v"), {"v": SCHEMA_HEAD}
            )
    engine.dispose()
    return url


def plan_once(revision: str, readers: int) -> float:
    """Seconds of CPU ``enqueue_due`` took for ``readers`` at ``revision``'s tables."""
    with tempfile.TemporaryDirectory() as directory:
        url = _database(Path(directory), revision)
        service = Service.build(load_settings({"DIGESTD_DATABASE_URL": url}, dev_key="throwaway"))
        with service.sessions.begin() as session:
            _seed(session, readers)
        started = time.process_time()
        report = enqueue_due(service.sessions, service.policy, service.renderer, SEND)
        spent = time.process_time() - started
        service.engine.dispose()
        assert sum(report.queued.values()) == readers, report
        return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vs", default="0014", help="the older schema to compare with")
    args = parser.parse_args()
    times: dict[str, list[float]] = {SCHEMA_HEAD: [], args.vs: []}
    for round_number in range(1, args.rounds + 1):
        for revision in times:
            times[revision].append(plan_once(revision, args.readers))
            print(f"round {round_number}, schema {revision}: {times[revision][-1]:.2f} s CPU")
    now, then = (statistics.median(times[r]) for r in (SCHEMA_HEAD, args.vs))
    print(f"median CPU: {SCHEMA_HEAD} {now:.2f} s, {args.vs} {then:.2f} s, ratio {now / then:.3f}")


if __name__ == "__main__":
    main()
