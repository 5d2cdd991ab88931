"""Optional DKIM signing: a message digestd sends verifies with dkimpy against the public
key, and the signature covers both List-Unsubscribe headers (RFC 8058 §4)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from datetime import timedelta
from pathlib import Path

import dkim
import pytest

from digestd.config import load_settings
from digestd.errors import ConfigError
from digestd.mail.render import Renderer
from digestd.models import EditionKind
from digestd.ops import test_send
from digestd.ops.sunset import Reader as SunsetReader
from digestd.readers.signups import Notice, SignupResult
from digestd.service import Service
from digestd.web.mailer import SignupMailer
from tests.faultsmtp import FaultySink, running
from tests.seeding import Reader, add_articles, add_readers, hourly_articles
from tests.test_delivery_faults import SENT_AT


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """An RSA key made with openssl, and its DNS TXT record."""
    directory = tmp_path_factory.mktemp("dkim")
    private = directory / "digest.pem"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(private),
        ],
        check=True,
        capture_output=True,
    )
    public_der = subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)


def test_a_signed_digest_verifies_and_h_covers_list_unsubscribe(
    env: dict[str, str], key_pair: tuple[Path, bytes]
) -> None:
    private, record = key_pair
    sink = FaultySink()
    with running(sink):
        settings = load_settings(
            {
                **env,
                "DIGESTD_SMTP_URL": sink.url,
                "DIGESTD_DKIM_SELECTOR": "mail2026",
                "DIGESTD_DKIM_KEY_FILE": str(private),
            }
        )
        service = Service.build(settings)
        with service.sessions.begin() as session:
            add_articles(session, hourly_articles(SENT_AT - timedelta(hours=10), SENT_AT))
            add_readers(session, [Reader("ann@example.com")], SENT_AT - timedelta(days=1))

        async def tick() -> None:
            await service.tick(SENT_AT)
            await service.close()

        asyncio.run(tick())
    (_, _, data) = sink.messages[0]
    assert data.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail2026._domainkey.news.example.com."
        return record

    verifier = dkim.DKIM(data)
    assert verifier.verify(dnsfunc=dns)
    signature = dkim.util.parse_tag_value(
        data.split(b"\r\n\r\n", 1)[0]
        .split(b"DKIM-Signature:", 1)[1]
        .split(b"\r\nFrom:")[0]
        .replace(b"\r\n", b"")
    )
    signed = {h.strip().lower() for h in signature[b"h"].split(b":")}
    assert {b"list-unsubscribe", b"list-unsubscribe-post", b"from", b"subject"} <= signed
    assert signature[b"d"] == b"news.example.com" and signature[b"s"] == b"mail2026"

    # Tampering with the unsubscribe link breaks the signature.
    tampered = data.replace(b"List-Unsubscribe: <https://", b"List-Unsubscribe: <http://")
    assert tampered != data
    assert not dkim.DKIM(tampered).verify(dnsfunc=dns)


def test_dkim_configuration_errors_name_the_variable(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DIGESTD_DKIM_KEY_FILE"):
        load_settings({**env, "DIGESTD_DKIM_SELECTOR": "s1"})
    (tmp_path / "not-a-key.pem").write_text("hello")
    with pytest.raises(ConfigError, match=r"DIGESTD_DKIM_KEY_FILE: .* is not a PEM private key"):
        load_settings(
            {
                **env,
                "DIGESTD_DKIM_SELECTOR": "s1",
                "DIGESTD_DKIM_KEY_FILE": str(tmp_path / "not-a-key.pem"),
            }
        )


def test_every_mail_that_is_no_digest_is_signed_too(
    env: dict[str, str], key_pair: tuple[Path, bytes]
) -> None:
    """A confirmation, a sunset notice and a test send leave signed like the digests: a
    domain with a strict DMARC policy would have its confirmations refused otherwise."""
    private, record = key_pair
    settings = load_settings(
        {**env, "DIGESTD_DKIM_SELECTOR": "mail2026", "DIGESTD_DKIM_KEY_FILE": str(private)}
    )
    service = Service.build(settings)
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(SENT_AT - timedelta(hours=10), SENT_AT))
    mailer = SignupMailer(settings, service.composer, service.transport, Renderer())
    confirmation = mailer.message(
        SignupResult(Notice.MANAGE_LINK, public_id="p1", email="ann@example.com"), SENT_AT
    )
    notice = service.sunset.message(
        SunsetReader(1, "ann@example.com", "p1", ["ai"], True), "asked", SENT_AT
    )
    made = test_send.test_message(service, EditionKind.DAILY, "me@example.com", ["ai"], SENT_AT)
    assert made is not None

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail2026._domainkey.news.example.com."
        return record

    for data in (confirmation, notice, made[1]):
        assert data.startswith(b"DKIM-Signature:")
        assert dkim.DKIM(data).verify(dnsfunc=dns)
        tampered = data.replace(b"Subject: ", b"Subject: Re: ", 1)
        assert tampered != data and not dkim.DKIM(tampered).verify(dnsfunc=dns)
