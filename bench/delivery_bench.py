"""End to end: a personalised daily edition for N subscribers into Postfix's smtp-sink.

What one run does (see bench/README.md for how to run it and what it measured):

1. a fresh database (SQLite file, or a new database on the PostgreSQL server named by
   ``DIGESTD_BENCH_DATABASE_URL`` / ``DIGESTD_TEST_DATABASE_URL``), migrated;
2. 156 articles (6 in each of the 26 categories) and N active readers whose daily is due,
   each with 1-3 categories of Zipf-like popularity (so digests are personalised and
   shared by readers whose selection comes out the same); a steady state, not a first
   day: yesterday's daily was sent to every reader (one queue row each), so the check
   that a daily repeats no article from an earlier one runs as it would in production;
3. ``smtp-sink -u nobody -c 127.0.0.1:PORT 1000`` (as root) as the SMTP server;
4. ``digestd tick --now T`` in a subprocess, timed: enqueue (selection, digests, queue rows),
   render each distinct digest once, compose, send through the pool, record outcomes.
   Peak RSS of that process comes from wait4();
5. ``smtp-source -s 20 -d -l SIZE -m N`` into the same sink, SIZE the average size of the
   messages digestd sent: what the sink and loopback can take on this machine right now
   (with the CPU smtp-source, the sink and the machine used meanwhile);
6. composing alone (no database, no SMTP): the messages of one digest made for
   N readers by substitution, links signed, in-process.

Run:  .venv/bin/python bench/delivery_bench.py --db sqlite --subscribers 100000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from fresh_database import database, free_port
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from digestd.config import load_settings
from digestd.content.articles import ingest
from digestd.content.categories import CATEGORIES
from digestd.db import make_engine, make_sessions, migrate
from digestd.mail.composer import Composer
from digestd.mail.template import MessageTemplate
from digestd.models import Delivery, Digest, Edition, Subscriber, SubscriberCategory
from digestd.tokens import Tokens

SLUGS = list(CATEGORIES)
NOW = datetime(2026, 11, 30, 7, 0, 30, tzinfo=UTC)  # 30 s after the readers' 07:00 UTC
TODAY, YESTERDAY = "2026-11-30", "2026-11-29"  # the daily editions' periods (UTC readers)
KEY = "bench-secret-key-0123456789abcdef"
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


def seed(url: str, subscribers: int, rng: random.Random) -> None:
    engine = make_engine(url)
    migrate(engine)
    sessions = make_sessions(engine)
    articles = todays_articles(rng)
    weights = [1 / (rank + 1) for rank in range(len(SLUGS))]  # Zipf-like popularity
    due = NOW - timedelta(seconds=30)
    yesterday = yesterdays_articles(articles)
    with sessions.begin() as session:
        report = ingest(session, enumerate(articles + yesterday, start=1))
        assert not report.errors
        daily = yesterdays_daily(session, yesterday)
    for start in range(0, subscribers, 10_000):
        numbers = range(start, min(subscribers, start + 10_000))
        rows, cats, sent = reader_rows(numbers, rng, weights, due, daily)
        with sessions.begin() as session:
            session.execute(insert(Subscriber), rows)
            session.execute(insert(SubscriberCategory), cats)
            session.execute(insert(Delivery), sent)
    if url.startswith("postgresql"):
        with engine.connect() as conn:
            conn.execute(text("SELECT setval('subscribers_id_seq', :n)"), {"n": subscribers})
            conn.commit()
            conn.execute(text("ANALYZE"))
            conn.commit()
    engine.dispose()


def todays_articles(rng: random.Random) -> list[dict[str, object]]:
    """6 articles in each category, published within the last day."""
    articles = []
    for i in range(6 * len(SLUGS)):
        slug = SLUGS[i % len(SLUGS)]
        articles.append(
            {
                "id": f"a{i}",
                "url": f"https://news.example.com/{slug}/{i}",
                "title": f"Story {i} about {CATEGORIES[slug]}: what changed this week and why",
                "source": f"Outlet {rng.randrange(40)}",
                "published_at": (NOW - timedelta(minutes=rng.randrange(1, 24 * 60))).isoformat(),
                "categories": [slug],
                "why_it_matters": "A realistic two-sentence explanation of why it matters. " * 3,
                "key_takeaways": ["First takeaway", "Second takeaway, a bit longer", "Third"],
                "companies": [{"name": "Acme", "ticker": "ACME"}, {"name": "Globex"}],
                "score": rng.random() * 20,
            }
        )
    return articles


def yesterdays_articles(articles: list[dict[str, object]]) -> list[dict[str, object]]:
    """A copy of each of today's articles, published the day before."""
    return [
        {
            **article,
            "id": f"y{i}",
            "url": f"https://news.example.com/yesterday/{i}",
            "title": f"Earlier report {i}: a different headline from the day before",
            "published_at": (NOW - timedelta(hours=30, minutes=i)).isoformat(),
        }
        for i, article in enumerate(articles)
    ]


@dataclass(frozen=True)
class YesterdaysDaily:
    edition_id: int | None
    digest_ids: dict[str, int | None]  # by category


def yesterdays_daily(session: Session, yesterday: list[dict[str, object]]) -> YesterdaysDaily:
    # Yesterday's edition, one digest per category (what it held matters little: its
    # articles are outside today's window; what matters is that its rows are there).
    edition_id = session.scalar(
        insert(Edition).values(kind="daily", period=YESTERDAY, created_at=NOW).returning(Edition.id)
    )
    digest_ids = {}
    for n, slug in enumerate(SLUGS):
        picks = [a["id"] for a in yesterday if a["categories"] == [slug]]
        layout = {
            "categories": [slug],
            "sections": [{"category": None, "articles": [[a, slug] for a in picks]}],
        }
        digest_ids[slug] = session.scalar(
            insert(Digest)
            .values(
                edition_id=edition_id,
                content_key=f"yesterday-{n}",
                layout=layout,
                created_at=NOW,
            )
            .returning(Digest.id)
        )
    return YesterdaysDaily(edition_id, digest_ids)


def reader_rows(
    numbers: range,
    rng: random.Random,
    weights: list[float],
    due: datetime,
    daily: YesterdaysDaily,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Readers ``numbers``: their subscriber, category and yesterday's queue rows."""
    rows, cats, sent = [], [], []
    for n in numbers:
        picked: set[str] = set()
        k = rng.choice([1, 1, 1, 2, 2, 3])
        while len(picked) < k:
            picked.add(rng.choices(SLUGS, weights)[0])
        rows.append(
            {
                "id": n + 1,
                "public_id": secrets.token_urlsafe(16),
                "email": f"reader{n:07d}@d{n % 50:02d}.example.com",
                "status": "active",
                "timezone": "UTC",
                "wants_daily": True,
                "wants_weekly": False,
                "next_daily_at": due,
                "created_at": due,
                "consent_source": "bench",
                "soft_bounces": 0,
            }
        )
        cats += [{"subscriber_id": n + 1, "category": c} for c in picked]
        sent.append(
            {
                "subscriber_id": n + 1,
                "edition_id": daily.edition_id,
                "digest_id": daily.digest_ids[min(picked, key=SLUGS.index)],
                "status": "sent",
                "due_at": due - timedelta(days=1),
                "next_attempt_at": due - timedelta(days=1),
                "attempts": 1,
                "created_at": due - timedelta(days=1),
            }
        )
    return rows, cats, sent


def run_tick(
    url: str,
    port: int,
    workdir: Path,
    pool: int,
    batch: int,
    workers: int,
    helper_processes: int,
    profile: Path | None = None,
    track_clicks: str = "aggregate",
) -> dict[str, float]:
    """``workers`` processes run ``digestd tick`` at once (as several ``digestd run`` would
    share an edition); timed until the last one exits."""
    env = tick_env(url, port, workdir, pool, batch, helper_processes, track_clicks)
    python = [sys.executable]
    if profile is not None:  # cProfile slows the run: its numbers are shares, not speed
        python += ["-m", "cProfile", "-o", str(profile)]
    started = time.perf_counter()
    # Output to files, not pipes: wait4() reads no pipe, and a tick that logs more than a
    # pipe holds (a traceback per digest that failed to render) would block on it.
    files = contextlib.ExitStack()
    outputs = [(_scratch(files), _scratch(files)) for _ in range(workers)]
    processes = [
        subprocess.Popen(
            [*python, "-m", "digestd", "tick", "--now", NOW.isoformat()],
            env=env,
            stdout=out,
            stderr=err,
        )
        for out, err in outputs
    ]
    # The helper processes (enqueue, render) count too: the whole tree, sampled.
    tree_peak = [0.0]
    finished = threading.Event()
    sampler = sample_tree_peak(processes, tree_peak, finished)
    with files:
        peak, cpu, rendered = wait_for_ticks(processes, outputs)
    seconds = time.perf_counter() - started
    finished.set()
    sampler.join()
    return {
        "seconds": seconds,
        "peak_rss_mb": peak,
        "peak_tree_rss_mb": tree_peak[0],
        "cpu_seconds": cpu,
        "rendered": rendered,
    }


def tick_env(
    url: str,
    port: int,
    workdir: Path,
    pool: int,
    batch: int,
    helper_processes: int,
    track_clicks: str,
) -> dict[str, str]:
    return {
        **os.environ,
        "DIGESTD_DATA_DIR": str(workdir / "var"),
        "DIGESTD_DATABASE_URL": url,
        "DIGESTD_SECRET_KEYS": KEY,
        "DIGESTD_BASE_URL": "https://digest.example.com",
        "DIGESTD_FROM": "Tech Pulse <digest@news.example.com>",
        "DIGESTD_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "DIGESTD_SMTP_POOL_SIZE": str(pool),
        "DIGESTD_SEND_BATCH": str(batch),
        "DIGESTD_HELPER_PROCESSES": str(helper_processes),
        "DIGESTD_LOG_FORMAT": "text",
        "DIGESTD_TRACK_CLICKS": track_clicks,
    }


def sample_tree_peak(
    processes: list[subprocess.Popen[bytes]], tree_peak: list[float], finished: threading.Event
) -> threading.Thread:
    """A thread keeping in ``tree_peak[0]`` the largest RSS of the processes' trees, every
    0.1 s until ``finished`` is set."""

    def sample() -> None:
        while not finished.wait(0.1):
            total = sum(tree_rss_mb(p.pid) for p in processes)
            tree_peak[0] = max(tree_peak[0], total)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    return sampler


def wait_for_ticks(
    processes: list[subprocess.Popen[bytes]], outputs: list[tuple[IO[bytes], IO[bytes]]]
) -> tuple[float, float, int]:
    """Peak RSS (MB) of the largest, CPU seconds of all, and digests rendered; exits if
    one failed."""
    peak = 0.0
    cpu = 0.0
    rendered = 0
    for process, files in zip(processes, outputs, strict=True):
        # The usage of a waited child includes its own waited children: the helpers.
        _, status, usage = os.wait4(process.pid, 0)
        peak = max(peak, usage.ru_maxrss / 1024)
        cpu += usage.ru_utime + usage.ru_stime
        out, err = _output(files)
        sys.stderr.write(err[-600:])
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"digestd tick failed:\n{out}\n{err}")
        print("  " + out.strip())
        rendered += sum(int(n) for n in re.findall(r"rendered (\d+) digests?", out))
    return peak, cpu, rendered


def _scratch(files: contextlib.ExitStack) -> IO[bytes]:
    return files.enter_context(tempfile.TemporaryFile())


def _output(files: tuple[IO[bytes], IO[bytes]]) -> tuple[str, str]:
    """What a finished tick wrote to its stdout and stderr files."""
    texts = []
    for file in files:
        file.seek(0)
        texts.append(file.read().decode(errors="replace"))
    return texts[0], texts[1]


TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU of a process (and of its exited, waited-for children), /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + (cutime + cstime if with_children else 0)) / TICKS


def postgres_cpu_seconds() -> float:
    """Every ``postgres`` process on the machine: live backends and, through the
    postmaster's children counters, the ones that have exited (the bench's server is the
    only one running)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name == "postgres":
                total += process_cpu_seconds(int(entry.name), with_children=True)
    return total


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle, since boot (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / TICKS


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, from /proc (Linux)."""
    total_kb, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack += [int(child) for child in children.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended while we looked
    return total_kb / 1024


def outcome(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    with make_sessions(engine)() as session:
        edition = session.scalar(select(Edition.id).where(Edition.period == TODAY))
        statuses = dict(
            session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.edition_id == edition)
                .group_by(Delivery.status)
            ).all()
        )
        digests = (
            session.scalar(
                select(func.count()).select_from(Digest).where(Digest.edition_id == edition)
            )
            or 0
        )
    engine.dispose()
    return {"statuses": statuses, "digests": digests, "edition": edition}


def compose_alone(url: str, count: int, track_clicks: str = "aggregate") -> dict[str, float]:
    """Messages per second for composing alone: one digest, ``count`` readers."""
    settings = load_settings(
        {
            "DIGESTD_TRACK_CLICKS": track_clicks,
            "DIGESTD_DATABASE_URL": url,
            "DIGESTD_SECRET_KEYS": KEY,
            "DIGESTD_BASE_URL": "https://digest.example.com",
            "DIGESTD_FROM": "Tech Pulse <digest@news.example.com>",
        }
    )
    engine = make_engine(url)
    composer = Composer(settings, Tokens(settings.secret_keys))
    with make_sessions(engine)() as session:
        digest = session.execute(
            select(Digest.id, Digest.template, Edition.kind, Edition.period)
            .join(Edition, Edition.id == Digest.edition_id)
            .where(Edition.period == TODAY, Digest.template.is_not(None))
            .order_by(Digest.id)
            .limit(1)
        ).first()
        assert digest is not None and digest.template is not None
        template = MessageTemplate.load(digest.template)
    engine.dispose()
    public_ids = [secrets.token_urlsafe(16) for _ in range(1000)]
    size = 0
    started = time.perf_counter()
    for n in range(count):
        data = composer.compose(
            template,
            message_id=composer.message_id(digest.kind, digest.period, n),
            public_id=public_ids[n % 1000],
            email=f"reader{n:07d}@d{n % 50:02d}.example.com",
            delivery_id=n,
        )
        composer.envelope_from(n)
        size += len(data)
    seconds = time.perf_counter() - started
    return {"msg_per_s": count / seconds, "avg_bytes": size / count}


@dataclass(frozen=True)
class Reference:
    """smtp-source's run: its rate, and the CPU seconds it and the sink used meanwhile."""

    msg_per_s: float
    source_cpu: float
    sink_cpu: float
    machine_cpu: float


def smtp_source(port: int, count: int, size: int, sink: subprocess.Popen[bytes]) -> Reference:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    sink_before, machine_before = process_cpu_seconds(sink.pid, True), machine_busy_seconds()
    started = time.perf_counter()
    subprocess.run(
        [SOURCE, "-s", "20", "-d", "-l", str(size), "-m", str(count), f"127.0.0.1:{port}"],
        check=True,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Reference(
        msg_per_s=count / seconds,
        source_cpu=after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime,
        sink_cpu=process_cpu_seconds(sink.pid, True) - sink_before,
        machine_cpu=machine_busy_seconds() - machine_before,
    )


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="digestd-bench-"))
    url, drop = database(args.db, workdir, "bench")
    port = free_port()
    sink = start_sink(port)
    try:
        run = measure(args, url, port, workdir, sink)
    finally:
        sink.terminate()
        sink.wait()
        drop()
        shutil.rmtree(workdir, ignore_errors=True)

    results = results_of(args, run)
    for key, value in results.items():
        print(f"{key:>24}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--pool", type=int, default=8, help="DIGESTD_SMTP_POOL_SIZE")
    parser.add_argument("--batch", type=int, default=1000, help="DIGESTD_SEND_BATCH")
    parser.add_argument("--workers", type=int, default=1, help="digestd processes at once")
    parser.add_argument(
        "--helper-processes", type=int, default=1, help="DIGESTD_HELPER_PROCESSES (0: none)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", type=Path, help="cProfile the tick into this file")
    parser.add_argument(
        "--track-clicks",
        choices=["off", "aggregate", "reader"],
        default="aggregate",
        help="DIGESTD_TRACK_CLICKS (aggregate: each article link tracked)",
    )
    return parser.parse_args()


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink_cmd = [SINK, "-c", f"127.0.0.1:{port}", "1000"]
    if os.geteuid() == 0:
        sink_cmd[1:1] = ["-u", "nobody"]
    return subprocess.Popen(sink_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass(frozen=True)
class Run:
    """What one run measured, before it is reported."""

    tick: dict[str, float]
    cpu: dict[str, float]
    result: dict[str, Any]
    sent: int
    compose: dict[str, float]
    size: int
    reference: Reference


def measure(
    args: argparse.Namespace, url: str, port: int, workdir: Path, sink: subprocess.Popen[bytes]
) -> Run:
    print(f"seeding {args.subscribers:,} readers into {args.db} ...")
    seed(url, args.subscribers, random.Random(args.seed))
    print("digestd tick (enqueue, render, compose, send, record) ...")
    cpu_before = {
        "sink": process_cpu_seconds(sink.pid, with_children=True),
        "postgres": postgres_cpu_seconds(),
        "machine": machine_busy_seconds(),
    }
    tick = run_tick(
        url,
        port,
        workdir,
        args.pool,
        args.batch,
        args.workers,
        args.helper_processes,
        args.profile,
        args.track_clicks,
    )
    time.sleep(0.5)  # the database's backends exit once digestd has gone
    cpu = {
        "digestd": tick["cpu_seconds"],
        "smtp_sink": process_cpu_seconds(sink.pid, with_children=True) - cpu_before["sink"],
        "postgres": postgres_cpu_seconds() - cpu_before["postgres"],
        "machine": machine_busy_seconds() - cpu_before["machine"],
    }
    result = outcome(url)
    sent = int(result["statuses"].get("sent", 0))
    compose = compose_alone(url, args.subscribers, args.track_clicks)
    size = int(compose["avg_bytes"])
    print(f"smtp-source -s 20 -d -l {size} -m {sent} ...")
    reference = smtp_source(port, sent, size, sink)
    return Run(tick, cpu, result, sent, compose, size, reference)


def results_of(args: argparse.Namespace, run: Run) -> dict[str, object]:
    tick, cpu, sent, reference = run.tick, run.cpu, run.sent, run.reference
    digestd_rate = sent / tick["seconds"]
    reference_cpu = {
        "smtp_source": reference.source_cpu,
        "smtp_sink": reference.sink_cpu,
        "machine": reference.machine_cpu,
    }
    return {
        "db": args.db,
        "subscribers": args.subscribers,
        "pool": args.pool,
        "batch": args.batch,
        "workers": args.workers,
        "helper_processes": args.helper_processes,
        "track_clicks": args.track_clicks,
        "sent": sent,
        "statuses": run.result["statuses"],
        "distinct_digests": run.result["digests"],
        "renders": tick["rendered"],  # more than distinct_digests: re-rendered after eviction
        "seconds": round(tick["seconds"], 2),
        "msg_per_s": round(digestd_rate),
        "peak_rss_mb": round(tick["peak_rss_mb"], 1),  # of the largest process
        # digestd and its helper processes together, sampled every 0.1 s
        "peak_rss_with_helpers_mb": round(tick["peak_tree_rss_mb"], 1),
        "avg_message_bytes": run.size,
        "smtp_source_msg_per_s": round(reference.msg_per_s),
        "ratio_to_smtp_source": round(digestd_rate / reference.msg_per_s, 3),
        # CPU µs a message while smtp-source ran: its own, the sink's, the whole machine's
        "smtp_source_cpu_us_per_message": {
            key: round(value / sent * 1e6) for key, value in reference_cpu.items()
        },
        "compose_alone_msg_per_s": round(run.compose["msg_per_s"]),
        # CPU seconds during the tick: digestd with its helpers, the sink, the database
        # server, and every core of the machine (the rest is other load, and the kernel)
        "cpu_seconds": {key: round(value, 1) for key, value in cpu.items()},
        "cpu_us_per_message": {key: round(value / sent * 1e6) for key, value in cpu.items()},
        "cpu_count": os.cpu_count(),
    }


if __name__ == "__main__":
    main()
