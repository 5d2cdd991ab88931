"""The subscriber CSV export, shared by ``digestd subscribers export`` and
``GET /api/subscribers/export`` so the two can never drift apart.

Rows are read in batches (``yield_per``) and handed out as CSV text chunks: memory stays
flat however long the list is, and the HTTP answer can start before the last row is read.
Cells a spreadsheet would run as formulas are neutralised (:mod:`.spreadsheet`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.content.categories import ALL, CATEGORIES
from digestd.models import Subscriber
from digestd.readers.spreadsheet import neutralise
from digestd.readers.subscribers import frequency_name

# The import columns first, so an export is itself importable.
EXPORT_COLUMNS = (
    "email",
    "categories",
    "frequency",
    "timezone",
    "status",
    "created_at",
    "confirmed_at",
)
BATCH = 1000


def export_row(s: Subscriber) -> list[str]:
    return [
        s.email,
        export_categories(s.category_slugs),
        frequency_name(s),
        s.timezone,
        s.status,
        s.created_at.isoformat(),
        s.confirmed_at.isoformat() if s.confirmed_at else "",
    ]


def export_categories(slugs: list[str]) -> str:
    """A reader of every category (how "All Technology" is stored) is written ``all``: the
    import reads that as every category it knows when it runs, so an export imported after
    the site gained a category gives it to them, where today's slugs would leave it out."""
    if set(slugs) >= set(CATEGORIES):
        return ALL
    return ",".join(slugs)


def export_csv(session: Session, batch: int = BATCH) -> Iterator[str]:
    """The header, then one chunk of CSV text per ``batch`` subscribers, oldest first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    rows = session.scalars(
        select(Subscriber).order_by(Subscriber.id).execution_options(yield_per=batch)
    )
    for count, subscriber in enumerate(rows, start=1):
        writer.writerow([neutralise(cell) for cell in export_row(subscriber)])
        if count % batch == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    chunk = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return chunk
