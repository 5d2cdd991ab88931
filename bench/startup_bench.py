"""How long `digestd --version` and `digestd stats` take to start and finish, as an
operator runs them: each a fresh process, on a migrated database (SPEC §10: < 0.5 s).

Reports the median and the fastest of N runs (wall clock), and the median CPU seconds
(user + system) of the process: on a shared machine the CPU time is what the command
costs, the wall time what someone waited.

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

COMMANDS = (["--version"], ["stats"], ["feeds", "list"], ["subscribers", "export"])
TARGET = 0.5


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``digestd COMMAND``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "digestd", *command],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digestd-startup-") as tmp:
        env = {
            **os.environ,
            "DIGESTD_DATA_DIR": tmp,
            "DIGESTD_SECRET_KEYS": "bench-key-0123456789abcdef",
        }
        if args.database_url:
            env["DIGESTD_DATABASE_URL"] = args.database_url
        subprocess.run([sys.executable, "-m", "digestd", "migrate"], env=env, check=True)
        print(f"{'command':<22} {'median':>8} {'fastest':>8} {'CPU':>8}   ({args.runs} runs)")
        slow = []
        for command in COMMANDS:
            timed(command, env)  # warm the page cache and the bytecode cache
            runs = [timed(command, env) for _ in range(args.runs)]
            wall = statistics.median(w for w, _ in runs)
            fastest = min(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            name = "digestd " + " ".join(command)
            print(f"{name:<22} {wall:>7.3f}s {fastest:>7.3f}s {cpu:>7.3f}s")
            if wall >= TARGET:
                slow.append(name)
    sys.exit(1 if slow else 0)


if __name__ == "__main__":
    main()
