"""How long digestd's commands take to start and finish, as an operator runs them: each a
fresh process, on a migrated database with nothing due (SPEC §10: < 0.5 s).

Reports the median and the fastest of N runs (wall clock), and the median CPU seconds
(user + system) of the process: on a shared machine the CPU time is what the command
costs, the wall time what someone waited. A reference runs alternately with each command: a Python
process that imports SQLAlchemy's ORM and digestd's models and runs one query, none of
digestd's own code, the least any command that reads the database can cost here; each
command's ratio to it is what digestd adds.

Run:  .venv/bin/python bench/startup_bench.py [--runs 15] [--database-url URL]
      (default: a fresh SQLite file in a temporary directory)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = (
    ["--version"],
    ["stats"],
    ["feeds", "list"],
    ["subscribers", "export"],
    ["migrate"],  # nothing to upgrade: what every deploy script runs first
    ["tick"],  # nobody due: what cron runs each minute
)
TARGET = 0.5
REFERENCE = """
import os
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from digestd.models import Subscriber
with Session(create_engine(os.environ["DIGESTD_DATABASE_URL"])) as session:
    print(session.scalar(select(func.count()).select_from(Subscriber)))
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``python COMMAND``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *command],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def paired(
    reference: list[str],
    reference_env: dict[str, str],
    command: list[str],
    env: dict[str, str],
    runs: int,
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """``runs`` runs of the reference and of the command, alternating, so that both see the
    same load."""
    timed(reference, reference_env)  # warm the page cache and the bytecode cache
    timed(command, env)
    pairs = [(timed(reference, reference_env), timed(command, env)) for _ in range(runs)]
    return [r for r, _ in pairs], [c for _, c in pairs]


def summary(times: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Median wall, fastest wall and median CPU seconds."""
    wall = statistics.median(w for w, _ in times)
    return wall, min(w for w, _ in times), statistics.median(c for _, c in times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digestd-startup-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/digestd.db"
        env = {
            **os.environ,
            "DIGESTD_DATA_DIR": tmp,
            "DIGESTD_SECRET_KEYS": "bench-key-0123456789abcdef",
            "DIGESTD_DATABASE_URL": url,
        }
        subprocess.run(
            [sys.executable, "-m", "digestd", "migrate"], env=env, check=True, capture_output=True
        )
        reference_env = {**env, "DIGESTD_DATABASE_URL": url.replace("ql://", "ql+psycopg://", 1)}
        reference = ["-c", REFERENCE]
        header = f"{'command':<26} {'median':>8} {'fastest':>8} {'CPU':>8} {'ref.':>6}"
        print(f"{header}  ({args.runs} runs)")
        slow = []
        for command in COMMANDS:
            runs = paired(reference, reference_env, ["-m", "digestd", *command], env, args.runs)
            ref_wall, ref_fastest, ref_cpu = summary(runs[0])
            wall, fastest, cpu = summary(runs[1])
            print(f"{'  reference':<26} {ref_wall:>7.3f}s {ref_fastest:>7.3f}s {ref_cpu:>7.3f}s")
            name = "digestd " + " ".join(command)
            ratio = wall / ref_wall
            print(f"{name:<26} {wall:>7.3f}s {fastest:>7.3f}s {cpu:>7.3f}s {ratio:>5.2f}x")
            if wall >= TARGET:
                slow.append(name)
    sys.exit(1 if slow else 0)


if __name__ == "__main__":
    main()
