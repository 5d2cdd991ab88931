"""Tracked clicks through HTTP: how many ``GET /c/{token}`` a ``digestd run`` records per
second on loopback, and how long each takes.

1. a fresh database (SQLite file, or a new database on the PostgreSQL server named by
   ``DIGESTD_BENCH_DATABASE_URL`` / ``DIGESTD_TEST_DATABASE_URL``), migrated, holding one
   daily edition: ``--digests`` digests of 10 stories each (``digest_links``) sent to
   ``--emails`` readers (their queue rows ``sent``);
2. ``digestd run`` in a subprocess on a free loopback port (no SMTP: the mail catcher; a tick
   a day, so the scheduler stays out of the way);
3. ``--concurrency`` HTTP/1.1 keep-alive connections (a small asyncio client in this
   process) send ``--clicks`` requests between them, each a random story of a random
   email, signed as the emails carry them; every answer must be a 303 to the story;
4. the rate, the latency percentiles, and the rows in ``click_inbox`` (one per click);
5. settling them in this process (the tick's work: scanner bursts, unique clickers,
   ``clicks`` rows), timed.

Run:  .venv/bin/python bench/click_bench.py --db sqlite --clicks 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fresh_database import database, free_port
from sqlalchemy import Connection, func, insert, select

from digestd.db import make_engine, make_sessions, migrate
from digestd.models import (
    Article,
    Click,
    ClickInbox,
    Delivery,
    Digest,
    DigestLink,
    Edition,
    Subscriber,
)
from digestd.readers.clicks import Settled, settle
from digestd.tokens import Tokens

KEY = "bench-secret-key-0123456789abcdef"
STORIES = 10
NOW = datetime.now(UTC).replace(microsecond=0)
# CLICK_PROFILE=FILE: cProfile the server into FILE (its numbers are shares, not speed).
PROFILE = (
    ["-m", "cProfile", "-o", os.environ["CLICK_PROFILE"]] if "CLICK_PROFILE" in os.environ else []
)
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)


def seed(url: str, emails: int, digests: int, rng: random.Random) -> list[int]:
    """One sent daily edition; the queue row ids (what the links name)."""
    engine = make_engine(url)
    migrate(engine)
    articles = [
        {
            "id": f"a{i}",
            "url": f"https://news.example.com/story/{i}",
            "title": f"Story {i}",
            "source": f"Outlet {i % 40}",
            "published_at": NOW - timedelta(hours=2),
        }
        for i in range(digests * STORIES)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Article), articles)
        today = insert(Edition).values(kind="daily", period=NOW.date().isoformat())
        edition = conn.execute(today.returning(Edition.id)).scalar_one()
        digest_ids = insert_digests(conn, edition, digests)
        conn.execute(
            insert(Subscriber),
            [
                {"public_id": secrets.token_urlsafe(16), "email": f"r{i}@example.com"}
                for i in range(emails)
            ],
        )
        readers = list(conn.execute(select(Subscriber.id)).scalars())
        insert_sent(conn, edition, digest_ids, readers, rng)
        ids = list(conn.execute(select(Delivery.id)).scalars())
    engine.dispose()
    return ids


def insert_digests(conn: Connection, edition: int, digests: int) -> list[int]:
    """``digests`` digests of the edition, each linking its own ``STORIES`` stories."""
    digest_ids = [
        conn.execute(
            insert(Digest)
            .values(edition_id=edition, content_key=f"k{d}", layout={})
            .returning(Digest.id)
        ).scalar_one()
        for d in range(digests)
    ]
    conn.execute(
        insert(DigestLink),
        [
            {
                "digest_id": digest,
                "position": n,
                "article_id": f"a{d * STORIES + n - 1}",
                "category": "ai",
                "source": f"Outlet {(d * STORIES + n - 1) % 40}",
            }
            for d, digest in enumerate(digest_ids)
            for n in range(1, STORIES + 1)
        ],
    )
    return digest_ids


def insert_sent(
    conn: Connection, edition: int, digest_ids: list[int], readers: list[int], rng: random.Random
) -> None:
    """A queue row ``sent`` an hour ago for each reader, of a digest drawn at random."""
    conn.execute(
        insert(Delivery),
        [
            {
                "subscriber_id": reader,
                "edition_id": edition,
                "digest_id": rng.choice(digest_ids),
                "status": "sent",
                "due_at": NOW - timedelta(hours=1),
                "next_attempt_at": NOW - timedelta(hours=1),
                "sent_at": NOW - timedelta(hours=1),
                "attempts": 1,
            }
            for reader in readers
        ],
    )


def start(url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DIGESTD_DATA_DIR": str(workdir / "var"),
        "DIGESTD_DATABASE_URL": url,
        "DIGESTD_SECRET_KEYS": KEY,
        "DIGESTD_LISTEN": f"127.0.0.1:{port}",
        "DIGESTD_BASE_URL": f"http://127.0.0.1:{port}",
        "DIGESTD_TICK_SECONDS": "86400",  # no tick during the run
        "DIGESTD_CATCHUP_HOURS": "48",  # (a window of at least two ticks)
        "DIGESTD_HELPER_PROCESSES": "0",
        "DIGESTD_LOG_FORMAT": "text",
    }
    server = subprocess.Popen(
        [sys.executable, *PROFILE, "-m", "digestd", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?live", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)  # waiting for another process to listen
    server.kill()
    sys.exit("digestd run did not answer within 60 s")


async def connection(
    port: int, paths: list[str], latencies: list[float], failures: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for path in paths:
        began = time.perf_counter()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = _LENGTH.search(head)
        if length and int(length[1]):
            await reader.readexactly(int(length[1]))
        latencies.append(time.perf_counter() - began)
        if not head.startswith(b"HTTP/1.1 303") or b"news.example.com" not in head:
            failures.append(head.split(b"\r\n", 1)[0].decode())
    writer.close()
    await writer.wait_closed()


async def click(port: int, paths: list[str], concurrency: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    shares = [paths[i::concurrency] for i in range(concurrency)]
    await asyncio.gather(*(connection(port, share, latencies, failures) for share in shares))
    return latencies, failures


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="digestd-clicks-"))
    url, drop = database(args.db, workdir, "clicks")
    port = free_port()
    server = None
    try:
        print(f"seeding {args.emails:,} emails of {args.digests} digests into {args.db} ...")
        emails = seed(url, args.emails, args.digests, rng)
        paths = click_paths(emails, args.clicks, rng)
        server = start(url, port, workdir)
        print(f"{args.clicks:,} clicks over {args.concurrency} connections ...")
        began = time.perf_counter()
        latencies, failures = asyncio.run(click(port, paths, args.concurrency))
        seconds = time.perf_counter() - began
        server.terminate()
        server.wait(timeout=60)
        settling = settle_inbox(url)
    finally:
        if server is not None and server.poll() is None:
            server.kill()
        drop()
        shutil.rmtree(workdir, ignore_errors=True)

    results = results_of(args, seconds, latencies, failures, settling)
    for key, value in results.items():
        print(f"{key:>18}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--clicks", type=int, default=100_000)
    parser.add_argument("--emails", type=int, default=20_000)
    parser.add_argument("--digests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


def click_paths(emails: list[int], clicks: int, rng: random.Random) -> list[str]:
    """``clicks`` signed click URLs, each a random story of a random email."""
    tokens = Tokens([KEY])
    tags = {d: tokens.click_tags(d, STORIES) for d in emails}
    paths = []
    for _ in range(clicks):
        email, n = rng.choice(emails), rng.randrange(1, STORIES + 1)
        paths.append(f"/c/{email}.{n}.{tags[email][n - 1]}")
    return paths


@dataclass(frozen=True)
class Settling:
    inbox: int | None  # rows in click_inbox before settling
    seconds: float
    settled: Settled
    rows: int | None  # in clicks
    unique: int | None  # first of their article


def settle_inbox(url: str) -> Settling:
    """The clicks the server received, settled as the tick would, timed."""
    engine = make_engine(url)
    sessions = make_sessions(engine)
    with sessions() as session:
        inbox = session.scalar(select(func.count()).select_from(ClickInbox))
    settle_began = time.perf_counter()
    settled = settle(sessions, datetime.now(UTC) + timedelta(minutes=1), per_reader=False)
    settle_seconds = time.perf_counter() - settle_began
    with sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Click))
        unique = session.scalar(select(func.count()).where(Click.first_of_article))
    engine.dispose()
    return Settling(inbox, settle_seconds, settled, rows, unique)


def results_of(
    args: argparse.Namespace,
    seconds: float,
    latencies: list[float],
    failures: list[str],
    settling: Settling,
) -> dict[str, object]:
    settle_seconds, rows = settling.seconds, settling.rows
    return {
        "db": args.db,
        "clicks": args.clicks,
        "concurrency": args.concurrency,
        "emails": args.emails,
        "seconds": round(seconds, 2),
        "clicks_per_s": round(args.clicks / seconds),
        "latency_ms": {
            name: round(percentile(latencies, share) * 1000, 2)
            for name, share in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "failures": len(failures),
        "first_failures": failures[:3],
        "inbox_rows": settling.inbox,
        "settle_seconds": round(settle_seconds, 2),
        "settled_per_s": round((rows or 0) / settle_seconds) if settle_seconds else None,
        "clicks_rows": rows,
        "unique_per_story": settling.unique,
        "scanner": settling.settled.scanner,
        "cpu_count": os.cpu_count(),
    }


if __name__ == "__main__":
    main()
