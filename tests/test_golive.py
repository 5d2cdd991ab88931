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
from digestd.errors import ConfigError
from digestd.ops.golive import dkim_public_key, dns_records, findings, mx_note, refusals
from tests.conftest import ADMIN_TOKEN, SmtpSink
from tests.helpers import ROOT, one_line_error, run_digestd

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
    # The test's relay is an address (127.0.0.1): the operator's own MTA, no include.
    assert 'example.com. IN TXT "v=spf1 ip4:<your MTA\'s public address> ~all"' in out
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


def _example_file() -> dict[str, str]:
    """deploy/digestd.env.example as an operator who filled in only the relay and the two
    secrets digestd checks for every command would run it."""
    lines = (ROOT / "deploy" / "digestd.env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {**values, "DIGESTD_ADMIN_TOKEN": ADMIN_TOKEN, "DIGESTD_DATABASE_URL": "sqlite://"}


def test_the_example_files_placeholders_are_refused_with_a_real_relay(tmp_path: Path) -> None:
    filled = {**_example_file(), "DIGESTD_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError):  # CHANGE_ME is too short to be a key at all
        load_settings(filled)
    filled["DIGESTD_SECRET_KEYS"] = "CHANGE-ME-to-random-keys-0123456789"
    refused = [finding.variable for finding in refusals(load_settings(filled))]
    assert refused == [*PLACEHOLDERS, "DIGESTD_SECRET_KEYS"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGESTD_FROM", "Digest <DIGEST@EXAMPLE.COM>"),
        ("DIGESTD_BASE_URL", "http://localhost:8080"),
        ("DIGESTD_BASE_URL", "http://LOCALHOST./"),
        ("DIGESTD_BASE_URL", "http://127.0.1.1:9000"),
        ("DIGESTD_BASE_URL", "http://[::1]:8080"),
        ("DIGESTD_BASE_URL", "http://0.0.0.0:8080"),
        ("DIGESTD_BASE_URL", "https://app.localhost"),
        ("DIGESTD_BASE_URL", "http://127.1/"),
        ("DIGESTD_BASE_URL", "http://2130706433:8080"),
        ("DIGESTD_BASE_URL", "http://0x7f000001/"),
        ("DIGESTD_BASE_URL", "http://[::ffff:127.0.0.1]/"),
        ("DIGESTD_POSTAL_ADDRESS", "tech pulse, 1 example street, springfield, usa"),
        ("DIGESTD_POSTAL_ADDRESS", "Replace me with the street address"),
        ("DIGESTD_SECRET_KEYS", "k" * 32 + ",change-me-to-a-long-random-string"),
    ],
)
def test_a_placeholder_spelt_another_way_is_still_refused(
    env: dict[str, str], smtp_server: SmtpSink, tmp_path: Path, variable: str, value: str
) -> None:
    result = run_digestd({**_live(env, smtp_server), variable: value}, "run", cwd=tmp_path)
    assert one_line_error(result).startswith(f"digestd: configuration error: {variable}: ")


def test_a_relay_that_is_a_mail_catcher_is_not_going_live(
    env: dict[str, str], smtp_server: SmtpSink
) -> None:
    """The compose stack's Mailpit keeps every message: its placeholders are no refusal,
    and check says that nobody receives the mail."""
    catcher = {**_live(env, smtp_server, *PLACEHOLDERS), "DIGESTD_SECRET_KEYS": "x" * 32}
    catcher["DIGESTD_SMTP_URL"] += "?catcher=true"
    settings = load_settings(catcher)
    assert settings.smtp is not None and settings.smtp.catcher
    assert refusals(settings) == []
    found = [str(finding) for finding in findings(settings)]
    assert found[0] == (
        "DIGESTD_SMTP_URL: is a mail catcher (?catcher=true): it keeps the mail and nobody "
        "receives it"
    )
    assert [line.split(":")[0] for line in found[1:]] == list(PLACEHOLDERS)
    del catcher["DIGESTD_SMTP_URL"]  # the same values with a relay that delivers
    catcher["DIGESTD_SMTP_URL"] = smtp_server.url
    assert [f.variable for f in refusals(load_settings(catcher))] == list(PLACEHOLDERS)


def test_a_misspelt_variable_is_a_finding_of_check(
    env: dict[str, str], smtp_server: SmtpSink
) -> None:
    """Settings come from the environment, where a typo is otherwise silently ignored: a
    misspelt relay leaves every email in the development catcher."""
    typo = {**_live(env, smtp_server), "DIGESTD_CATCHUP_HOUR": "3", "DIGESTD_SMTP_ULR": "x"}
    typo["DIGESTD_TEST_DATABASE_URL"] = "sqlite://"  # the test suite's own, not a setting
    settings = load_settings(typo)
    assert [str(f) for f in findings(settings)] == [
        "DIGESTD_CATCHUP_HOUR: is no setting (did you mean DIGESTD_CATCHUP_HOURS?); it is ignored",
        "DIGESTD_SMTP_ULR: is no setting (did you mean DIGESTD_SMTP_URL?); it is ignored",
    ]
    assert refusals(settings) == []  # not refused: the variable may be another program's
    assert findings(load_settings(_live(env, smtp_server))) == []


def _key(directory: Path, bits: int) -> Path:
    path = directory / f"rsa{bits}.pem"
    generate = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"]
    subprocess.run([*generate, "-out", str(path)], check=True, capture_output=True)
    return path


def test_a_dkim_key_that_cannot_sign_or_counts_for_nothing_is_refused_before_sending(
    env: dict[str, str], tmp_path: Path, dkim_key: tuple[Path, str]
) -> None:
    """In one line when the sender starts, not with a traceback at the first message
    signed; check lists it as a finding."""
    lines = dkim_key[0].read_text().splitlines()
    lines[5] = lines[5][:-1]  # a line of base64 one character short
    (tmp_path / "cut.pem").write_text("\n".join(lines) + "\n")
    problems = {
        str(tmp_path / "cut.pem"): "DIGESTD_DKIM_KEY_FILE: not an RSA private key (",
        str(_key(tmp_path, 512)): "DIGESTD_DKIM_KEY_FILE: a 512-bit key: receivers ignore DKIM",
    }
    assert run_digestd(env, "migrate", cwd=tmp_path).returncode == 0
    for path, problem in problems.items():
        signing = {**env, "DIGESTD_DKIM_SELECTOR": "s1", "DIGESTD_DKIM_KEY_FILE": path}
        line = one_line_error(run_digestd(signing, "tick", cwd=tmp_path))
        assert line.startswith(f"digestd: configuration error: {problem}")
        checked = run_digestd(signing, "check", cwd=tmp_path)
        assert checked.returncode == 1 and checked.stderr == b""
        assert any(row.startswith(problem) for row in checked.stdout.decode().splitlines())


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DIGESTD_DKIM_SELECTOR", "bad selector!"), ("DIGESTD_DKIM_DOMAIN", "a b")],
)
def test_a_dkim_name_that_is_no_dns_name_is_refused(
    tmp_path: Path, dkim_key: tuple[Path, str], variable: str, value: str
) -> None:
    signing = {"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_DKIM_SELECTOR": "s1"}
    signing |= {"DIGESTD_DKIM_KEY_FILE": str(dkim_key[0]), variable: value}
    with pytest.raises(ConfigError) as caught:
        load_settings(signing)
    assert caught.value.variable == variable


def test_a_dkim_domain_not_aligned_with_from_is_a_finding(
    env: dict[str, str], smtp_server: SmtpSink, dkim_key: tuple[Path, str]
) -> None:
    signing = {**_live(env, smtp_server), "DIGESTD_DKIM_SELECTOR": "s1"}
    signing["DIGESTD_DKIM_KEY_FILE"] = str(dkim_key[0])
    assert findings(load_settings({**signing, "DIGESTD_DKIM_DOMAIN": "example.com"})) == []
    # DMARC's relaxed alignment: another name in the From domain's organisation is aligned.
    assert findings(load_settings({**signing, "DIGESTD_DKIM_DOMAIN": "mail.example.com"})) == []
    (finding,) = findings(load_settings({**signing, "DIGESTD_DKIM_DOMAIN": "other.example.org"}))
    assert str(finding).startswith(
        "DIGESTD_DKIM_DOMAIN: other.example.org is not in the From domain news.example.com's"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("smtp://u:p@smtp.relay.example:465", "port 465 starts with TLS"),
        ("smtps://u:p@smtp.relay.example:587", "port 587 starts in plain text"),
        ("smtps://smtp.relay.example:25", "port 25 starts in plain text"),
    ],
)
def test_a_scheme_that_does_not_speak_the_relays_port_is_a_finding(
    env: dict[str, str], url: str, problem: str
) -> None:
    """Otherwise each message fails at sending with 'timed out opening the session' or
    '[SSL: WRONG_VERSION_NUMBER]', which names neither the scheme nor the port."""
    (finding,) = findings(load_settings({**env, "DIGESTD_SMTP_URL": url}))
    assert finding.variable == "DIGESTD_SMTP_URL" and problem in finding.problem
    for fine in ("smtps://smtp.relay.example", "smtp://smtp.relay.example:587"):
        assert findings(load_settings({**env, "DIGESTD_SMTP_URL": fine})) == []


def test_a_base_url_under_a_path_is_refused_with_a_real_relay(
    env: dict[str, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    """Emailed links would carry /digest, but the pages post and link from the host's root:
    a reader's Unsubscribe button behind a path-stripping proxy posts to the site."""
    under = {**_live(env, smtp_server), "DIGESTD_BASE_URL": "https://news.example.com/digest/"}
    (finding,) = findings(load_settings(under))
    assert str(finding).startswith("DIGESTD_BASE_URL: has a path (/digest): ")
    line = one_line_error(run_digestd(under, "run", cwd=tmp_path))
    assert line.startswith("digestd: configuration error: DIGESTD_BASE_URL: has a path")
    assert refusals(load_settings({**under, "DIGESTD_SMTP_URL": ""})) == []  # the catcher


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("DIGESTD_BASE_URL", "http://digest.example.com", "is http://"),
        ("DIGESTD_FROM", "News <news.team@gmail.com>", "gmail.com is a mailbox provider"),
        ("DIGESTD_FROM", "news@Yahoo.co.uk", "yahoo.co.uk is a mailbox provider"),
    ],
)
def test_what_mailbox_providers_refuse_of_bulk_mail_is_a_finding(
    env: dict[str, str], smtp_server: SmtpSink, variable: str, value: str, problem: str
) -> None:
    """Not 'ready to go live' with an http:// unsubscribe link (RFC 8058 wants HTTPS) or a
    From at a domain whose SPF, DKIM and DMARC only the provider can publish."""
    assert findings(load_settings(_live(env, smtp_server))) == []
    (finding,) = findings(load_settings({**_live(env, smtp_server), variable: value}))
    assert finding.variable == variable and problem in finding.problem
    # A development address is said once, as the placeholder it is.
    local = findings(load_settings({**_live(env, smtp_server, "DIGESTD_BASE_URL")}))
    assert [f.variable for f in local] == ["DIGESTD_BASE_URL"]


def test_the_spf_advice_follows_the_relay_and_an_inbound_listener_asks_for_an_mx(
    env: dict[str, str],
) -> None:
    named = load_settings({**env, "DIGESTD_SMTP_URL": "smtp://smtp.relay.example:587"})
    (spf, *_), _ = dns_records(named)
    assert spf.value == "v=spf1 include:<your relay's SPF domain> ~all"
    assert "use the include smtp.relay.example documents" in spf.note
    assert mx_note(named) is None
    own = load_settings(
        {**env, "DIGESTD_SMTP_URL": "smtp://192.0.2.25", "DIGESTD_INBOUND_LISTEN": "127.0.0.1:2525"}
    )
    (spf, *_), _ = dns_records(own)
    assert spf.value == "v=spf1 ip4:<your MTA's public address> ~all"
    assert "192.0.2.25" not in spf.note  # a private or relay-side address is no SPF advice
    mx = mx_note(own)
    assert mx is not None and mx.startswith("MX: bounces, complaints and mailto: unsubscribes")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGESTD_POSTAL_ADDRESS", "Acme Ltd, 12 Example Road, Leeds LS1 4AB"),
        ("DIGESTD_POSTAL_ADDRESS", "Acme Ltd, 1 Exchange Mews, London E1 6AN"),  # "changeme"
        ("DIGESTD_POSTAL_ADDRESS", "Acme, 5 Fireplace Meadow, Bath"),  # "replaceme"
        ("DIGESTD_BASE_URL", "https://digest.exchangemedia.com"),
        ("DIGESTD_FROM", "News <news@exchangemedia.com>"),
        ("DIGESTD_BASE_URL", "https://10.0.0.5"),  # an intranet's list
    ],
)
def test_a_real_value_with_a_placeholder_inside_a_word_is_not_refused(
    env: dict[str, str], smtp_server: SmtpSink, variable: str, value: str
) -> None:
    assert refusals(load_settings({**_live(env, smtp_server), variable: value})) == []


def test_dkim_settings_as_operators_write_them_are_read(
    env: dict[str, str], tmp_path: Path, dkim_key: tuple[Path, str]
) -> None:
    crlf = tmp_path / "crlf.pem"  # a key saved on Windows: openssl reads it, so must digestd
    crlf.write_bytes(dkim_key[0].read_bytes().replace(b"\n", b"\r\n"))
    signing = {
        **env,
        "DIGESTD_DKIM_SELECTOR": "mail_2026.",
        "DIGESTD_DKIM_DOMAIN": "news.example.com.",
        "DIGESTD_DKIM_KEY_FILE": str(crlf),
    }
    records, problems = dns_records(load_settings(signing))
    assert problems == []
    (dkim_record,) = [r for r in records if r.kind == "DKIM"]
    assert dkim_record.zone_line().startswith("mail_2026._domainkey.news.example.com. IN TXT")
    encrypted = tmp_path / "encrypted.pem"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(dkim_key[0]),
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            str(encrypted),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(ConfigError, match="is encrypted: digestd signs with a key that has no"):
        load_settings({**signing, "DIGESTD_DKIM_KEY_FILE": str(encrypted)})
