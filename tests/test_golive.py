"""Going live: with a real relay `digestd run` refuses the development placeholders in one
line naming the variable; `digestd check` lists every finding and the DNS records to
publish, and sends nothing."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import dkim
import pytest

from digestd.config import load_settings
from digestd.ops.golive import dkim_public_key, dns_records
from tests.conftest import ADMIN_TOKEN, SmtpSink
from tests.helpers import one_line_error, run_digestd

PLACEHOLDERS = ("DIGESTD_BASE_URL", "DIGESTD_FROM", "DIGESTD_POSTAL_ADDRESS")


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An RSA key made with openssl, and the p= openssl gives for its public half."""
    private = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    generate = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    subprocess.run(
        [*generate, "-out", str(private)],
        check=True,
        capture_output=True,
    )
    public_der = subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return private, base64.b64encode(public_der).decode()


def _live(env: dict[str, str], smtp: SmtpSink, *unset: str) -> dict[str, str]:
    """A real relay, with the given variables left at their development defaults."""
    live = {**env, "DIGESTD_SMTP_URL": smtp.url, "DIGESTD_ADMIN_TOKEN": ADMIN_TOKEN}
    return {k: v for k, v in live.items() if k not in unset}


@pytest.mark.parametrize("variable", PLACEHOLDERS)
def test_run_with_a_real_relay_refuses_each_placeholder_in_one_line(
    env: dict[str, str], smtp_server: SmtpSink, tmp_path: Path, variable: str
) -> None:
    result = run_digestd(_live(env, smtp_server, variable), "run", cwd=tmp_path)
    line = one_line_error(result)
    assert line.startswith(f"digestd: configuration error: {variable}: ")
    assert "more" not in line
    assert not Path(env["DIGESTD_DATA_DIR"]).exists()  # refused before touching anything


def test_run_names_the_first_placeholder_and_counts_the_rest(
    env: dict[str, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    line = one_line_error(run_digestd(_live(env, smtp_server, *PLACEHOLDERS), "run", cwd=tmp_path))
    assert line.startswith("digestd: configuration error: DIGESTD_BASE_URL: is the listen ")
    assert line.endswith("(and 2 more: see digestd check)")


def test_a_weak_admin_token_stops_every_command(env: dict[str, str], tmp_path: Path) -> None:
    weak = {**env, "DIGESTD_ADMIN_TOKEN": "CHANGE_ME_CHANGE_ME_CHANGE_ME"}
    for command in (["run"], ["check"]):
        line = one_line_error(run_digestd(weak, *command, cwd=tmp_path))
        assert line.startswith("digestd: configuration error: DIGESTD_ADMIN_TOKEN: looks like")


def test_check_lists_every_finding_and_the_records_and_sends_nothing(
    env: dict[str, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    result = run_digestd(_live(env, smtp_server, *PLACEHOLDERS), "check", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    out = result.stdout.decode().splitlines()
    findings = out[: out.index("3 findings")]
    assert [line.split(":")[0] for line in findings] == list(PLACEHOLDERS)
    assert "DNS records to publish for example.com (zone file lines):" in out
    assert 'example.com. IN TXT "v=spf1 include:<your relay\'s SPF domain> ~all"' in out
    assert (
        '_dmarc.example.com. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"' in out
    )
    assert smtp_server.messages == []
    assert result.stderr == b""


def test_check_without_a_relay_says_nothing_would_be_delivered(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = run_digestd(env, "check", cwd=tmp_path)
    assert result.returncode == 1
    (finding,) = [line for line in result.stdout.decode().splitlines() if "DIGESTD_" in line][:1]
    assert finding.startswith("DIGESTD_SMTP_URL: is not set: mail is caught in")


def test_check_is_clean_for_a_configured_installation_and_prints_the_dkim_record(
    env: dict[str, str],
    smtp_server: SmtpSink,
    tmp_path: Path,
    dkim_key: tuple[Path, str],
) -> None:
    private, public = dkim_key
    ready = {
        **_live(env, smtp_server),
        "DIGESTD_DKIM_SELECTOR": "mail2026",
        "DIGESTD_DKIM_KEY_FILE": str(private),
    }
    result = run_digestd(ready, "check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.decode()
    assert out.startswith("no findings: ready to go live\n")
    (record,) = [line for line in out.splitlines() if "_domainkey" in line]
    strings = re.findall(r'"([^"]*)"', record)
    assert record.startswith("mail2026._domainkey.news.example.com. IN TXT ( ")
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)  # DNS's string limit
    assert "".join(strings) == f"v=DKIM1; k=rsa; p={public}"


def test_the_dkim_record_verifies_what_digestd_signs(
    env: dict[str, str], dkim_key: tuple[Path, str]
) -> None:
    """The record check prints is the one receivers need: dkimpy verifies a signed message
    looking the key up in it."""
    from digestd.mail.dkim import DkimSigner

    private, _ = dkim_key
    settings = load_settings(
        {**env, "DIGESTD_DKIM_SELECTOR": "s1", "DIGESTD_DKIM_KEY_FILE": str(private)}
    )
    assert settings.dkim is not None
    records, problems = dns_records(settings)
    assert problems == []
    (record,) = [r for r in records if r.kind == "DKIM"]
    message = b"From: digest@news.example.com\r\nTo: r@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    signed = DkimSigner(settings.dkim).sign(message)
    txt = {f"{record.name}.".encode(): record.value.encode()}
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: txt.get(name))


def test_a_key_that_is_not_rsa_is_a_finding_not_a_traceback() -> None:
    with pytest.raises(ValueError, match="not an RSA private key"):
        dkim_public_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
