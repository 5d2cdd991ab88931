"""Import a 100 000-row subscriber CSV with 1 % bad rows through the real CLI.

Reports wall time, rows per second, the importer's CPU seconds (what the import costs,
whatever else the shared machine is doing) and its peak RSS, and checks that exactly the
bad rows were reported, each by its line number, and every good row was imported.

Run:  .venv/bin/python bench/import_bench.py [--rows 100000] [--database-url URL] [--update]
      (default: a fresh SQLite file in a temporary directory; --update times a second
      import of the same addresses with other preferences: every good row an update)
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


def run_import(path: Path, env: dict[str, str]) -> tuple[float, float, int, str, str, int]:
    """(seconds, CPU seconds, peak RSS KB, stdout, stderr, exit code) of one import."""
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
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, after.ru_maxrss, result.stdout, result.stderr, result.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--update",
        action="store_true",
        help="import the list once, then time importing it again with changed preferences",
    )
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
        if args.update:  # the same addresses (and bad lines), other preferences
            run_import(path, env)
            write_csv(path, args.rows, args.seed)
            _shuffle_preferences(path, args.seed + 1)
        elapsed, cpu, peak_kb, out, err, code = run_import(path, env)
    reported = {int(m) for m in re.findall(r"^rejected line (\d+):", err, re.M)}
    summary = out.strip()
    good = args.rows - len(bad_lines)
    print(f"rows                {args.rows:>10,}  ({len(bad_lines):,} bad)")
    print(f"database            {args.database_url or 'sqlite (fresh file)'}")
    print(f"import time         {elapsed:>10.1f} s  ({args.rows / elapsed:,.0f} rows/s)")
    print(f"CPU (digestd)       {cpu:>10.1f} s  ({args.rows / cpu:,.0f} rows per CPU second)")
    print(f"peak RSS            {peak_kb / 1024:>10.0f} MB")
    print(f"summary             {summary}")
    print(f"bad rows reported   {'all, by line' if reported == bad_lines else 'MISMATCH'}")
    expected = f"{good} updated" if args.update else f"{good} added"
    ok = reported == bad_lines and expected in summary and code == 1
    sys.exit(0 if ok else 1)


def _shuffle_preferences(path: Path, seed: int) -> None:
    """Each good row's categories, frequency and zone drawn again (its address kept)."""
    rng = random.Random(seed)
    slugs = list(CATEGORIES)
    lines = path.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        email = line.split(",", 1)[0]
        if not email.startswith("reader"):
            out.append(line)  # a bad row stays bad
            continue
        cats = ",".join(rng.sample(slugs, rng.choice([1, 2, 3])))
        freq = rng.choice(["daily", "weekly", "both"])
        out.append(f'{email},"{cats}",{freq},{rng.choice(ZONES)}')
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
