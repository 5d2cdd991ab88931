"""Import a 100 000-row subscriber CSV with 1 % bad rows through the real CLI.

Reports wall time, rows per second, the importer's CPU seconds (what the import costs,
whatever else the shared machine is doing) and its peak RSS, and checks that exactly the
bad rows were reported, each by its line number, and every good row was imported.

Run:  .venv/bin/python bench/import_bench.py [--rows 100000] [--database-url URL]
      (default: a fresh SQLite file in a temporary directory)
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digestd.content.categories import CATEGORIES

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Europe/London",
    "",
]
BAD = [
    ("not-an-address", "ai", "daily", "UTC"),
    ("{n}@example.com", "gardening", "daily", "UTC"),
    ("x{n}@example.com", "ai", "hourly", "UTC"),
    ("y{n}@example.com", "ai", "daily", "Mars/Olympus"),
]


def write_csv(path: Path, rows: int, seed: int) -> set[int]:
    """The file, and the line numbers of its bad rows."""
    rng = random.Random(seed)
    slugs = list(CATEGORIES)
    bad_lines: set[int] = set()
    with path.open("w") as f:
        f.write("email,categories,frequency,timezone\n")
        for i in range(rows):
            line = i + 2
            if rng.random() < 0.01:
                email, cats, freq, zone = rng.choice(BAD)
                email = email.format(n=f"bad{i}")
                bad_lines.add(line)
            else:
                email = f"reader{i}@example.com"
                cats = ",".join(rng.sample(slugs, rng.choice([1, 2, 2, 3])))
                freq = rng.choice(["daily", "daily", "weekly", "both"])
                zone = rng.choice(ZONES)
            f.write(f'{email},"{cats}",{freq},{zone}\n')
    return bad_lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digestd-import-") as tmp:
        path = Path(tmp) / "subscribers.csv"
        bad_lines = write_csv(path, args.rows, args.seed)
        env = {
            **os.environ,
            "DIGESTD_DATA_DIR": tmp,
            "DIGESTD_SECRET_KEYS": "bench-key-0123456789abcdef",
        }
        if args.database_url:
            env["DIGESTD_DATABASE_URL"] = args.database_url
        subprocess.run(
            [sys.executable, "-m", "digestd", "migrate"], env=env, check=True, capture_output=True
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "digestd", "subscribers", "import", str(path)],
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_kb = after.ru_maxrss
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    reported = {int(m) for m in re.findall(r"^rejected line (\d+):", result.stderr, re.M)}
    summary = result.stdout.strip()
    good = args.rows - len(bad_lines)
    print(f"rows                {args.rows:>10,}  ({len(bad_lines):,} bad)")
    print(f"database            {args.database_url or 'sqlite (fresh file)'}")
    print(f"import time         {elapsed:>10.1f} s  ({args.rows / elapsed:,.0f} rows/s)")
    print(f"CPU (digestd)       {cpu:>10.1f} s  ({args.rows / cpu:,.0f} rows per CPU second)")
    print(f"peak RSS            {peak_kb / 1024:>10.0f} MB")
    print(f"summary             {summary}")
    print(f"bad rows reported   {'all, by line' if reported == bad_lines else 'MISMATCH'}")
    ok = reported == bad_lines and f"{good} added" in summary and result.returncode == 1
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
