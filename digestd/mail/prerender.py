"""Rendering digests off the sending path: in worker processes, from plain data.

Rendering one digest (Jinja2, MJML, premailer, quoted-printable preparation) costs a few
milliseconds of pure CPU and needs no database; sending is the event loop's work. So while
one batch is on the wire, the sender has the next batch's new digests rendered by a
:class:`RenderPool` on another core and gets back finished
:class:`~digestd.mail.template.MessageTemplate` objects. A worker receives a
:class:`DigestSource` (picklable: the layout and the articles' fields), never a session.

Workers are started with ``spawn``: forking a process that holds an event loop, SMTP
sockets and database connections would copy all of them into the child. A worker that
dies (the OOM killer, a crash in a C extension) breaks the pool; its digests, and every
later one, are then rendered in the sender (logged once): slower, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from digestd.helper_process import leave_stopping_to_the_sender
from digestd.mail.presentation import Site, digest_context
from digestd.mail.render import Renderer
from digestd.mail.template import MessageTemplate
from digestd.models import EditionKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArticleFields:
    """What an email shows of one article (see :func:`digestd.mail.presentation.article_view`)."""

    url: str
    title: str
    source: str
    published_at: datetime
    image_url: str | None
    why_it_matters: str
    key_takeaways: list[str]
    companies: list[dict[str, str]]


@dataclass(frozen=True)
class DigestSource:
    """Everything needed to render one digest, as plain data that can cross processes."""

    digest_id: int
    kind: str
    period: str  # the edition's local ISO date
    layout: Mapping[str, Any]  # as digestd.planning.planner stored it
    articles: Mapping[str, ArticleFields]
    site: Site
    from_header: str
    headers: tuple[tuple[str, str], ...]  # further fixed headers (List-Id)


def build_template(renderer: Renderer, source: DigestSource) -> MessageTemplate:
    """The digest rendered once, ready for per-recipient substitution."""
    context = digest_context(
        EditionKind(source.kind),
        date.fromisoformat(source.period),
        source.layout,
        source.articles,
        source.site,
    )
    rendered = renderer.render(source.kind, context)
    return MessageTemplate(rendered, from_header=source.from_header, headers=source.headers)


_worker_renderer: Renderer | None = None


def _start_worker(directory: str) -> None:
    leave_stopping_to_the_sender()  # ends with the sender, never on a signal of its own
    global _worker_renderer
    _worker_renderer = Renderer(Path(directory))


def _ready() -> None:
    return None


def _render_in_worker(source: DigestSource) -> MessageTemplate:
    assert _worker_renderer is not None, "the pool starts its workers with _start_worker"
    return build_template(_worker_renderer, source)


@dataclass
class _Shared:
    """One render under way: digests queued for the workers, and those the sender did."""

    queued: list[tuple[Future[MessageTemplate], DigestSource]]
    inline: Callable[[DigestSource], MessageTemplate]
    done_here: dict[int, MessageTemplate | Exception] = field(default_factory=dict)


class RenderPool:
    """``processes`` worker processes, started at the first render they are asked for.

    With ``processes == 0`` (or after a worker died) :meth:`render` renders in the
    caller's process with the ``inline`` function it is given.
    """

    def __init__(self, processes: int, directory: Path) -> None:
        self.processes = processes
        self.directory = directory
        self.broken = False
        self.submitted = 0  # digests rendered by a worker (for tests and the curious)
        self.helped = 0  # digests of a render() that the sender rendered itself
        self._executor: ProcessPoolExecutor | None = None
        self._shared: list[_Shared] = []  # renders under way, which the sender may help with

    @property
    def active(self) -> bool:
        return self.processes > 0 and not self.broken

    async def render(
        self,
        sources: Sequence[DigestSource],
        inline: Callable[[DigestSource], MessageTemplate],
    ) -> list[MessageTemplate]:
        if not sources:
            return []
        if not self.active:
            return [inline(source) for source in sources]
        executor = self._start()
        try:
            futures = [executor.submit(_render_in_worker, source) for source in sources]
        except BrokenProcessPool as exc:  # already broken when submitting
            self._lost(exc)
            return [inline(source) for source in sources]
        self.submitted += len(sources)
        shared = _Shared(list(zip(futures, sources, strict=True)), inline)
        self._shared.append(shared)
        try:
            # One call per digest, so several workers (and the sender, see lend_a_hand) share
            # a batch; every result is collected (a broken pool fails them all, and none may
            # be left unretrieved).
            results = await asyncio.gather(
                *(asyncio.wrap_future(future) for future in futures), return_exceptions=True
            )
        finally:
            self._shared.remove(shared)
        templates: list[MessageTemplate] = []
        for source, result in zip(sources, results, strict=True):
            if source.digest_id in shared.done_here:
                done = shared.done_here[source.digest_id]
                if isinstance(done, Exception):
                    raise done  # rendering it here failed: the error inline rendering raises
                templates.append(done)
            elif isinstance(result, BrokenProcessPool):
                self._lost(result)
                templates.append(inline(source))
            elif isinstance(result, BaseException):
                raise result  # a rendering error, the same one rendering inline would raise
            else:
                templates.append(result)
        return templates

    def lend_a_hand(self) -> bool:
        """Render here one digest that no worker has started yet; False if there is none.

        For the sender when it has nothing to send: waiting for the next batch's digests.
        Claims come in digest order, so the last batches of an edition are its rarest
        digests, many per batch; with the sender rendering from the end of the list while
        a worker renders from the start, that tail takes half the time.
        """
        for shared in self._shared:
            while shared.queued:
                future, source = shared.queued.pop()
                if not future.cancel():
                    # Started or done: workers take digests in the order they were given,
                    # so every one before it has been started too.
                    shared.queued.clear()
                    break
                try:  # not started by a worker, and now it never will be
                    shared.done_here[source.digest_id] = shared.inline(source)
                except Exception as exc:  # raised by render(), where it is awaited
                    shared.done_here[source.digest_id] = exc
                self.submitted -= 1
                self.helped += 1
                return True
        return False

    def warm_up(self) -> None:
        """Start the workers now (they take a fraction of a second to import what rendering
        needs), so they are ready when the next batch has digests to render."""
        if self.active:
            self._start().submit(_ready)

    def _start(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(str(self.directory),),
            )
        return self._executor

    def _lost(self, exc: BaseException) -> None:
        if self.broken:
            return
        self.broken = True
        log.warning(
            "render worker process died (%s); rendering digests in the sender from now on "
            "(slower; restart digestd to use DIGESTD_HELPER_PROCESSES again)",
            exc,
        )
        self.close()

    def close(self) -> None:
        """Stop the workers (they finish the digest in hand); safe to call twice."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=not self.broken, cancel_futures=True)
