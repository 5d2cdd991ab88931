"""A real Postfix hands digestd's LMTP listener (in ``digestd run``) the DSN it wrote for a
digest it could not deliver, and a reader's mail to their personal unsubscribe address,
routed by ``transport_maps`` as deploy/README.md shows.

Postfix runs as its own instance on loopback (``postfix -c DIR``: configuration, queue and
log in a temporary directory, no SMTP listener); needs root and Debian's postfix package
(scripts/system-deps.sh installs it), and is skipped without them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from digestd.config import load_settings
from digestd.models import BounceEvent, Delivery, Subscriber, SubscriberStatus, Suppression
from digestd.readers.subscribers import email_hash
from digestd.service import Service
from tests.helpers import daemon_taking_mail, free_port
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("postfix", path="/usr/sbin:/usr/bin") is None,
        reason="needs root and Postfix (scripts/system-deps.sh)",
    ),
]

GONE = "no-such-reader@local.example.test"  # no such user on the Postfix host
READER = "reader@local.example.test"
SENT = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
WAIT_S = 60.0


@contextmanager
def postfix(lmtp_port: int) -> Iterator[Path]:
    """A Postfix instance delivering ``local.example.test`` locally and handing
    ``news.example.com`` (digestd's From domain) to ``lmtp:inet:127.0.0.1:PORT``; yields
    its configuration directory (its log is ``../maillog``)."""
    # Not under pytest's tmp_path: Postfix's own users must be able to reach the queue.
    work = Path(tempfile.mkdtemp(prefix="digestd-postfix-"))
    work.chmod(0o755)
    etc = work / "etc"
    for sub in ("etc", "spool", "data"):
        (work / sub).mkdir()
    master = (Path("/etc/postfix/master.cf")).read_text().splitlines()
    master = [
        "#" + line if line.startswith("smtp ") and " inet " in line else line for line in master
    ]
    master.append("postlog   unix-dgram n  -       n       -       1       postlogd")
    (etc / "master.cf").write_text("\n".join(master) + "\n")
    (etc / "main.cf").write_text(
        f"compatibility_level = 3.6\nqueue_directory = {work}/spool\n"
        f"data_directory = {work}/data\ninet_interfaces = loopback-only\ninet_protocols = ipv4\n"
        "myhostname = mta.example.test\nmydomain = example.test\n"
        "mydestination = local.example.test\nalias_maps =\nalias_database =\nbiff = no\n"
        f"transport_maps = inline:{{ news.example.com=lmtp:inet:127.0.0.1:{lmtp_port} }}\n"
        f"maillog_file = {work}/maillog\nmaillog_file_prefixes = {work}\nnotify_classes =\n"
    )
    shutil.chown(work / "data", "postfix")
    subprocess.run(["postfix", "-c", str(etc), "start"], check=True, capture_output=True)
    try:
        yield etc
    finally:
        subprocess.run(["postfix", "-c", str(etc), "stop"], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _sendmail(etc: Path, sender: str, recipient: str, message: bytes) -> None:
    command = ["sendmail", "-C", str(etc), "-f", sender, recipient]
    subprocess.run(command, input=message, check=True)


def _digest_as_sent(service: Service, data_dir: Path, recipient: str) -> tuple[str, bytes]:
    """(VERP envelope sender, message) of the digest the mail catcher kept for ``recipient``."""
    for path in sorted((data_dir / "mail").glob("*.eml")):
        head, _, message = path.read_bytes().partition(b"\r\nDelivered-To: ")
        to, _, message = message.partition(b"\r\n")
        if to.decode() == recipient:
            return head.removeprefix(b"Return-Path: <").rstrip(b">").decode(), message
    raise AssertionError(f"no digest for {recipient} in the mail catcher")


def _until(done: Callable[[], bool], etc: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, "Postfix did not hand the mail over in time"
        subprocess.run(["postqueue", "-c", str(etc), "-f"], check=False, capture_output=True)
        time.sleep(0.2)


def test_postfix_hands_a_real_dsn_and_an_unsubscribe_mail_to_digestd_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    lmtp_port = free_port()
    env = {**env, "DIGESTD_INBOUND_LISTEN": f"127.0.0.1:{lmtp_port}"}
    service = Service.build(load_settings(env))
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(SENT - timedelta(days=1), SENT))
        ids = add_readers(session, [Reader(GONE), Reader(READER)], SENT - timedelta(hours=1))
    assert asyncio.run(service.tick(SENT + timedelta(minutes=1))).delivered.sent == 2
    verp, digest = _digest_as_sent(service, Path(env["DIGESTD_DATA_DIR"]), GONE)
    with service.sessions() as session:
        reader_id = session.scalar(select(Subscriber.public_id).where(Subscriber.id == ids[READER]))
        gone_delivery = session.scalar(
            select(Delivery.id).where(Delivery.subscriber_id == ids[GONE])
        )
    assert reader_id is not None
    unsubscribe = service.composer.links.mailto(reader_id).partition("?")[0]
    asyncio.run(service.close())

    with daemon_taking_mail(env, tmp_path, WAIT_S) as daemon, postfix(lmtp_port) as etc:
        _sendmail(etc, verp, GONE, digest)
        _sendmail(etc, READER, unsubscribe, b"Subject: unsubscribe\n\nplease\n")
        _until(lambda: _settled(service, ids[GONE], ids[READER]), etc)
        maillog = (etc.parent / "maillog").read_text()
    assert daemon.process.returncode == 0, daemon.log

    with service.sessions() as session:
        event = session.scalars(select(BounceEvent)).one()
        statuses = dict(session.execute(select(Subscriber.id, Subscriber.status)).all())
        suppressed = set(session.scalars(select(Suppression.email_hash)))
    assert (event.kind, event.status, event.source, event.channel) == (
        "hard",
        "5.1.1",
        "dsn",
        "lmtp",
    )
    assert (event.delivery_id, event.subscriber_id) == (gone_delivery, ids[GONE])
    assert event.reporting_mta == "mta.example.test"
    assert statuses == {
        ids[GONE]: SubscriberStatus.BOUNCED,
        ids[READER]: SubscriberStatus.UNSUBSCRIBED,
    }
    assert suppressed == {email_hash(GONE)}
    # Postfix logged digestd's answers: 250 for both, after they were recorded.
    assert f"relay=127.0.0.1[127.0.0.1]:{lmtp_port}" in maillog
    assert "250 2.0.0 <bounces+" in maillog and ">: hard-bounce)" in maillog
    assert f"250 2.0.0 <{unsubscribe}>: unsubscribed" in maillog


def _settled(service: Service, gone: int, reader: int) -> bool:
    with service.sessions() as session:
        statuses = dict(session.execute(select(Subscriber.id, Subscriber.status)).all())
    return statuses[gone] == SubscriberStatus.BOUNCED and statuses[reader] == "unsubscribed"
