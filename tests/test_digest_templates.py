"""Digests are rendered when they are planned, once each, and stored: the sender only
loads, substitutes and sends. Real database, real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from digestd.config import load_settings
from digestd.content.categories import CATEGORIES
from digestd.mail.digests import DigestRenderer, Unrendered, render_digests, shown_template
from digestd.mail.layout import Layout
from digestd.mail.render import RenderedEmail, Renderer
from digestd.mail.template import MessageTemplate, TemplateFormatError
from digestd.models import Article, Delivery, DeliveryStatus, Digest, Edition, EditionKind
from digestd.service import Service, TickReport
from tests.conftest import SmtpSink
from tests.email_samples import SAMPLE_LINKS, sample_template
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

SENT_AT = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
TOPICS = list(CATEGORIES)[:12]


class CountingRenderer(Renderer):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def render(self, kind: str, context: dict[str, Any]) -> RenderedEmail:
        self.calls += 1
        return super().render(kind, context)


def _service(env: dict[str, str], smtp: SmtpSink, **tuning: Any) -> Service:
    settings = load_settings({**env, "DIGESTD_SMTP_URL": smtp.url})
    return Service.build(replace(settings, delivery=replace(settings.delivery, **tuning)))


def _seed(service: Service, count: int) -> list[str]:
    readers = [Reader(f"r{i:03d}@example.com", categories=(TOPICS[i % 12],)) for i in range(count)]
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(SENT_AT - timedelta(hours=20), SENT_AT, TOPICS))
        add_readers(session, readers, SENT_AT - timedelta(days=1))
    return [reader.email for reader in readers]


def _tick(service: Service, now: datetime = SENT_AT) -> TickReport:
    async def run() -> TickReport:
        try:
            return await service.tick(now)
        finally:
            await service.close()

    return asyncio.run(run())


def _plan_then_send(service: Service, between: Any = None) -> Any:
    """Plan the edition, run ``between`` (changes to the stored digests), then send it."""

    async def run() -> Any:
        try:
            await service.enqueuer.enqueue(service.policy, SENT_AT)
            if between is not None:
                between()
            return await service.sender.deliver_due(SENT_AT)
        finally:
            await service.close()

    return asyncio.run(run())


def _digests(service: Service) -> list[tuple[bytes | None, str | None]]:
    with service.sessions() as session:
        rows = session.execute(select(Digest.template, Digest.render_error))
        return [(template, error) for template, error in rows]


@pytest.mark.parametrize("helper_processes", [0, 1])
def test_each_digest_is_rendered_once_when_planned_and_stored(
    env: dict[str, str], smtp_server: SmtpSink, helper_processes: int
) -> None:
    service = _service(env, smtp_server, batch=5, helper_processes=helper_processes)
    counting = CountingRenderer()
    service.renderer.renderer = counting  # the planner's, when it plans in this process
    readers = _seed(service, 48)  # 12 digests of 4 readers, sent over 10 batches
    report = _tick(service)
    assert report.delivered.sent == 48
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == readers
    assert report.enqueued.rendered == len(TOPICS)
    assert report.summary().endswith(f"rendered {len(TOPICS)} digests")
    # The archive, published after the tick's sending in this process, shares the readers'
    # digests for each topic and renders one more: All Technology's.
    assert counting.calls == (len(TOPICS) if helper_processes == 0 else 0) + 1
    stored = _digests(service)
    assert len(stored) == len(TOPICS) + 1
    assert all(template is not None and error is None for template, error in stored)


def test_the_sender_sends_the_stored_template_and_never_renders(
    env: dict[str, str], smtp_server: SmtpSink
) -> None:
    service = _service(env, smtp_server)
    _seed(service, 12)
    counting = CountingRenderer()
    service.sender.templates.renderer = DigestRenderer(service.renderer.masthead)
    service.sender.templates.renderer.renderer = counting
    report = _tick(service)
    assert report.delivered.sent == 12 and counting.calls == 0
    # What arrived is the stored template, each reader's links filled in.
    with service.sessions() as session:
        stored = session.scalars(select(Digest.template)).first()
    assert stored is not None
    subject = MessageTemplate.load(stored).subject
    assert any(f"Subject: {subject}".encode() in m.data for m in smtp_server.messages)


def test_a_digest_that_fails_to_render_fails_its_deliveries_and_the_edition_goes_on(
    env: dict[str, str], smtp_server: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(env, smtp_server)
    readers = _seed(service, 24)
    render = DigestRenderer.render
    broken = TOPICS[3]

    def render_or_break(
        self: DigestRenderer, kind: EditionKind, period: str, layout: Layout, articles: Any
    ) -> MessageTemplate:
        if layout.categories == (broken,):
            raise ValueError("a template error")
        return render(self, kind, period, layout, articles)

    monkeypatch.setattr(DigestRenderer, "render", render_or_break)
    report = _tick(service)
    assert report.delivered.sent == 22  # two readers follow the broken topic
    assert report.enqueued.unrenderable == 2 and report.enqueued.rendered == len(TOPICS)
    with service.sessions() as session:
        failed = session.execute(
            select(Delivery.status, Delivery.last_error).where(
                Delivery.status != DeliveryStatus.SENT
            )
        ).all()
    assert [status for status, _ in failed] == [DeliveryStatus.FAILED] * 2
    assert all(
        "could not render the digest: ValueError: a template error" in (e or "") for _, e in failed
    )
    errors = [error for _, error in _digests(service) if error is not None]
    assert len(errors) == 1
    delivered = {r for m in smtp_server.messages for r in m.recipients}
    assert len(delivered) == 22 and delivered < set(readers)


def test_a_render_error_logs_its_traceback_once_and_the_tick_counts_the_rest(
    env: dict[str, str],
    smtp_server: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken template fails every digest: one traceback in the process's log, not one a
    digest; the tick's line says how many deliveries it stopped."""
    service = _service(env, smtp_server)
    _seed(service, 24)

    def broken(self: DigestRenderer, *args: Any) -> MessageTemplate:
        raise ValueError("a template error")

    monkeypatch.setattr(DigestRenderer, "render", broken)
    with caplog.at_level(logging.WARNING, logger="digestd.mail.digests"):
        report = _tick(service)
    assert report.enqueued.unrenderable == 24 and report.delivered.sent == 0
    assert [r.exc_info is not None for r in _render_logs(caplog)] == [True]
    assert report.summary().endswith("; 24 not sent: their digest could not be rendered")
    # A later batch of the same process: the same error is not logged again.
    caplog.clear()
    with service.sessions() as session:
        rows = session.execute(
            select(Digest.id, Edition.kind, Edition.period, Digest.layout).join(Edition)
        ).all()
        digests = {i: Unrendered(EditionKind(k), p, Layout.from_json(lay)) for i, k, p, lay in rows}
        with caplog.at_level(logging.WARNING, logger="digestd.mail.digests"):
            results = render_digests(session, service.renderer, digests)
    assert len(results) == len(rows) > 1
    assert all("ValueError: a template error" in (r.error or "") for r in results.values())
    assert _render_logs(caplog) == []

    # Another error is new: its traceback is logged.
    def missing_article(self: DigestRenderer, *args: Any) -> MessageTemplate:
        raise KeyError("gone")

    monkeypatch.setattr(DigestRenderer, "render", missing_article)
    with service.sessions() as session, caplog.at_level(logging.WARNING):
        render_digests(session, service.renderer, digests)
    assert [r.exc_info is not None for r in _render_logs(caplog)] == [True]


def _render_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "digestd.mail.digests"]


def test_a_digest_planned_before_templates_were_stored_is_rendered_once_by_the_sender(
    env: dict[str, str], smtp_server: SmtpSink
) -> None:
    """A queue that spans the upgrade to stored templates is still sent."""
    service = _service(env, smtp_server)
    _seed(service, 24)
    counting = CountingRenderer()
    service.sender.templates.renderer = DigestRenderer(service.renderer.masthead)
    service.sender.templates.renderer.renderer = counting

    def forget_templates() -> None:
        with service.sessions.begin() as session:
            session.execute(update(Digest).values(template=None, render_error=None))

    delivered = _plan_then_send(service, forget_templates)
    assert delivered.sent == 24
    assert counting.calls == len(TOPICS)
    assert all(template is not None for template, _ in _digests(service))


def test_an_unreadable_stored_template_fails_its_deliveries_with_the_reason(
    env: dict[str, str], smtp_server: SmtpSink
) -> None:
    service = _service(env, smtp_server)
    _seed(service, 12)

    def spoil_one() -> None:
        with service.sessions.begin() as session:
            first = session.scalars(select(Digest.id).order_by(Digest.id)).first()
            session.execute(update(Digest).where(Digest.id == first).values(template=b"garbage"))

    delivered = _plan_then_send(service, spoil_one)
    assert (delivered.sent, delivered.failed) == (11, 1)
    with service.sessions() as session:
        (error,) = session.scalars(
            select(Delivery.last_error).where(Delivery.status == DeliveryStatus.FAILED)
        )
        count = session.scalar(select(func.count()).select_from(Delivery))
    assert error is not None and "stored template is unreadable" in error and count == 12


def test_a_stored_template_reads_back_as_the_same_message() -> None:
    template = sample_template(EditionKind.WEEKLY, 15)
    stored = template.dump()
    assert len(stored) < len(template.html(SAMPLE_LINKS).encode()) // 3  # compressed
    assert MessageTemplate.load(stored) == template
    with pytest.raises(TemplateFormatError):
        MessageTemplate.load(b"not zlib")
    with pytest.raises(TemplateFormatError):
        MessageTemplate.load(stored[:-4])  # cut short


def test_a_page_shows_a_digest_planned_before_templates_were_stored_without_storing_it(
    env: dict[str, str], smtp_server: SmtpSink
) -> None:
    """`/view` and the admin's digest page: rendered for the page, nothing written; a digest
    whose article was removed since, or that failed to render, is not shown at all."""
    service = _service(env, smtp_server)
    _seed(service, 12)
    asyncio.run(service.enqueuer.enqueue(service.policy, SENT_AT))
    with service.sessions.begin() as session:
        first, second, third = session.scalars(select(Digest.id).order_by(Digest.id).limit(3))
        session.execute(update(Digest).values(template=None, render_error=None))
        session.execute(update(Digest).where(Digest.id == third).values(render_error="broken"))
    with service.sessions() as session:
        shown = shown_template(session, service.renderer, first)
        layout = Layout.from_json(
            session.scalars(select(Digest.layout).where(Digest.id == second)).one()
        )
    assert shown is not None and "Tech Pulse" in shown.html({}, personal="")
    assert _digests(service).count((None, None)) == 11  # nothing stored by showing it
    with service.sessions.begin() as session:
        session.execute(delete(Article).where(Article.id == layout.article_ids()[0]))
    with service.sessions() as session:
        assert shown_template(session, service.renderer, second) is None
        assert shown_template(session, service.renderer, third) is None
        assert shown_template(session, service.renderer, 10**9) is None
