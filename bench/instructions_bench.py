"""Instructions digestd executes per reader to plan an edition and per message to send it,
counted by Valgrind's callgrind: the same on a busy machine as on a quiet one.

On a shared 2-core machine the wall clock and even CPU seconds move by a fifth between runs
of the same code (other tenants, steal time, frequency), which hides any change smaller than
that. Instructions retired in user space do not move. What they leave out: the kernel
(socket writes), the SMTP sink, and the cost of two threads trading the GIL (Valgrind runs
one thread at a time); `delivery_bench.py` measures those, end to end.

```sh
.venv/bin/python bench/instructions_bench.py                # 3 000 readers, SQLite
.venv/bin/python bench/instructions_bench.py --readers 5000 --part plan
```

Each part is run twice under callgrind in a child process, once with the work and once on
a copy where nothing is due (the same imports and start-up); the difference divided by the
readers is what the work costs. ``--part send`` sends a planned queue in-process through the
SMTP pool into ``smtp-sink``, as ``digestd tick`` does in its sending process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

from delivery_bench import NOW, seed, start_sink, tick_env
from fresh_database import free_port

from digestd.config import load_settings
from digestd.planning.planner import enqueue_due
from digestd.service import Service

VALGRIND = shutil.which("valgrind") or "/usr/bin/valgrind"
_COLLECTED = re.compile(rb"Collected : (\d+)")


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child)
        return
    if not Path(VALGRIND).exists():
        sys.exit("instructions_bench.py needs Valgrind: apt-get install valgrind")
    workdir = Path(tempfile.mkdtemp(prefix="digestd-instructions-"))
    port = free_port()
    sink = start_sink(port)
    try:
        seeded = workdir / "seeded.db"
        seed(f"sqlite:///{seeded}", args.readers, random.Random(args.seed))
        results = {}
        if args.part in ("plan", "both"):
            results["plan"] = per_reader(seeded, workdir, port, "plan", args.readers)
        if args.part in ("send", "both"):
            planned = workdir / "planned.db"
            _copy(seeded, planned)
            subprocess.run(_child("plan"), env=_env(planned, workdir, port), check=True)
            results["send"] = per_reader(planned, workdir, port, "send", args.readers)
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    for part, count in results.items():
        unit = "reader" if part == "plan" else "message"
        print(f"{part:>5}  {count / 1e6:8.3f} M instructions a {unit}")


def per_reader(db: Path, workdir: Path, port: int, part: str, readers: int) -> float:
    """(instructions with the work - instructions with nothing due) / readers."""
    work, idle = workdir / "work.db", workdir / "idle.db"
    _copy(db, work)
    _copy(db, idle)
    with closing(sqlite3.connect(idle)) as connection, connection:
        # Nothing due: the same start-up and imports, no work.
        never = "'2100-01-01 00:00:00.000000'"
        connection.execute(
            f"UPDATE subscribers SET next_daily_at = {never}, next_weekly_at = {never}"
        )
        connection.execute("UPDATE deliveries SET status = 'sent' WHERE status = 'queued'")
    return (counted(work, workdir, port, part) - counted(idle, workdir, port, part)) / readers


def counted(db: Path, workdir: Path, port: int, part: str) -> int:
    """Instructions of ``part`` run on ``db`` in a child process under callgrind."""
    command = [VALGRIND, "--tool=callgrind", "--callgrind-out-file=/dev/null", *_child(part)]
    done = subprocess.run(command, env=_env(db, workdir, port), capture_output=True, check=True)
    found = _COLLECTED.search(done.stderr)
    if found is None:
        sys.exit(f"no instruction count from valgrind: {done.stderr[-500:]!r}")
    return int(found[1])


def _copy(source: Path, target: Path) -> None:
    """A consistent copy of a database in WAL mode (its last writes may be in the -wal file,
    which a file copy would leave behind)."""
    with closing(sqlite3.connect(source)) as origin, closing(sqlite3.connect(target)) as copy:
        origin.backup(copy)


def _child(part: str) -> list[str]:
    return [sys.executable, __file__, "--child", part]


def _env(db: Path, workdir: Path, port: int) -> dict[str, str]:
    return tick_env(f"sqlite:///{db}", port, workdir, 8, 1000, 0, "aggregate")


def child(part: str) -> None:
    """In the child: plan every edition due at NOW, or send the queue due at NOW."""
    service = Service.build(load_settings(os.environ))
    if part == "plan":
        enqueue_due(service.sessions, service.policy, service.renderer, NOW)
        return

    async def send() -> None:
        try:
            await service.sender.deliver_due(NOW)
        finally:
            await service.close()

    asyncio.run(send())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=3000)
    parser.add_argument("--part", choices=["plan", "send", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", choices=["plan", "send"], help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
