"""Progress bars for long CLI operations, on stderr and only when stderr is a terminal:
pipes, files and cron logs stay quiet, and stdout (an export's CSV) is never touched."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Bar:
    """``bar(n)``: n more done. ``bar.expect(n)``: n more to come, once that is known (the
    queue of a tick is known only after planning)."""

    def __call__(self, done: int) -> None:
        return None

    def expect(self, remaining: int) -> None:
        return None


class _Drawn(Bar):
    def __init__(self, bar: Any, task: Any) -> None:
        self.bar, self.task = bar, task

    def __call__(self, done: int) -> None:
        self.bar.advance(self.task, done)

    def expect(self, remaining: int) -> None:
        completed = next(t.completed for t in self.bar.tasks if t.id == self.task)
        self.bar.update(self.task, total=completed + remaining)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Bar]:
    """A :class:`Bar`, drawn with rich on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    # rich redirects stdout through its console by default, so that prints land above the
    # bar: on a terminal that sent an export's CSV to stderr and left `> file.csv` empty.
    with Progress(
        *columns,
        console=Console(stderr=True),
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as bar:
        yield _Drawn(bar, bar.add_task(description, total=total))
