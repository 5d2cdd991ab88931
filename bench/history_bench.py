"""``digestd stats`` and a ``/metrics`` scrape as the history grows: 100 000 to 4 000 000
delivery rows.

What one run does (see bench/README.md): a fresh database (SQLite file, or a new database on
the PostgreSQL server named by ``DIGESTD_BENCH_DATABASE_URL``), migrated; 10 000 readers and
a history of daily editions, each with one sent row per reader, added in steps up to the
largest size asked for; at each size, ``digestd stats`` is timed as a subprocess (median
of runs) and a ``/metrics`` scrape through the app in-process (median of runs). Flat means
the time at the largest size stays within a small factor of the time at the smallest.

Run:  .venv/bin/python bench/history_bench.py --db sqlite [--sizes 100000,1000000,4000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fresh_database import database
from sqlalchemy import Engine, insert, text
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.db import make_engine, migrate
from digestd.models import Delivery, Edition, Subscriber
from digestd.ops.activity import snapshot
from digestd.ops.queue_stats import queue_stats
from digestd.service import Service
from digestd.web.app import create_app

READERS = 10_000
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
KEY = "bench-secret-key-0123456789abcdef"


def add_readers(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(Subscriber),
            [
                {
                    "public_id": f"p{n:08d}",
                    "email": f"reader{n}@example.com",
                    "status": "active",
                    "timezone": "UTC",
                    "wants_daily": True,
                    "wants_weekly": False,
                    "created_at": NOW - timedelta(days=800),
                    "consent_source": "bench",
                    "soft_bounces": 0,
                }
                for n in range(READERS)
            ],
        )


def add_history(engine: Engine, first_day: int, days: int) -> None:
    """``days`` daily editions (back from NOW by ``first_day``...), a sent row per reader."""
    with engine.begin() as conn:
        for back in range(first_day, first_day + days):
            due = NOW - timedelta(days=back, hours=2)
            edition = conn.execute(
                insert(Edition)
                .values(kind="daily", period=due.date().isoformat(), created_at=due)
                .returning(Edition.id)
            ).scalar_one()
            conn.execute(
                insert(Delivery),
                [
                    {
                        "subscriber_id": n + 1,
                        "edition_id": edition,
                        "status": "sent",
                        "due_at": due,
                        "next_attempt_at": due,
                        "attempts": 1,
                        "sent_at": due,
                        "created_at": due,
                    }
                    for n in range(READERS)
                ],
            )


def environment(url: str, directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DIGESTD_DATABASE_URL": url,
        "DIGESTD_SECRET_KEYS": KEY,
        "DIGESTD_DATA_DIR": str(directory / "var"),
        "DIGESTD_BASE_URL": "https://digest.example.com",
    }


def median_seconds(run: Any, times: int) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def measure(url: str, directory: Path, runs: int) -> dict[str, float]:
    env = environment(url, directory)

    def stats() -> None:
        subprocess.run(
            [sys.executable, "-m", "digestd", "stats"], env=env, check=True, capture_output=True
        )

    service = Service.build(load_settings(env))  # checks the schema, never migrates

    def stats_queries() -> None:  # what `digestd stats` reads, without starting Python
        with service.sessions() as session:
            snapshot(session)
            queue_stats(session, NOW)

    with TestClient(create_app(service), client=("127.0.0.1", 40000)) as client:

        def scrape() -> None:
            answer = client.get("/metrics")
            assert answer.status_code == 200 and "digestd_queue" in answer.text

        scrape_s = median_seconds(scrape, runs)
    queries_s = median_seconds(stats_queries, runs)
    service.engine.dispose()
    return {
        "stats_command_s": median_seconds(stats, runs),
        "stats_queries_s": queries_s,
        "metrics_s": scrape_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--sizes", default="100000,1000000,4000000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="digestd-history-") as tmp:
        directory = Path(tmp)
        url, drop = database(args.db, directory, "history")
        try:
            engine = make_engine(url)
            migrate(engine)
            add_readers(engine)
            days_done, results = 0, []
            for size in sizes:
                days = size // READERS
                print(f"history of {size:,} rows ({days} daily editions) ...", flush=True)
                add_history(engine, days_done, days - days_done)
                days_done = days
                if args.db == "postgresql":
                    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                        c.execute(text("VACUUM ANALYZE"))
                results.append({"rows": size, **measure(url, directory, args.runs)})
                print(json.dumps(results[-1]), flush=True)
            engine.dispose()
        finally:
            drop()
    first, last = results[0], results[-1]
    summary = {
        "db": args.db,
        "results": results,
        "ratio_largest_to_smallest": {
            name: round(last[name] / first[name], 2)
            for name in ("stats_command_s", "stats_queries_s", "metrics_s")
        },
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
