"""``digestd articles add FILE|-``."""

from __future__ import annotations

import argparse
import sys

from digestd.commands.common import database, read_input
from digestd.config import Settings
from digestd.content.articles import ingest
from digestd.content.documents import decode_document


def add(settings: Settings, args: argparse.Namespace) -> int:
    text = read_input(args.file)
    with database(settings) as sessions, sessions.begin() as session:
        report = ingest(session, decode_document(text))
    for error in report.errors:
        print(f"rejected {error}", file=sys.stderr)
    print(
        f"articles: {report.added} added, {report.updated} updated, {len(report.errors)} rejected"
    )
    return 1 if report.errors else 0
