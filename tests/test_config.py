"""Settings: defaults, every variable's bad value named, TOML file with the environment winning."""

from __future__ import annotations

import re
import subprocess
from datetime import time
from pathlib import Path

import pytest

from digestd.config import DeliveryTuning, check_lease_budget, load_settings, parse_smtp_url
from digestd.errors import ConfigError
from tests.helpers import run_cli


def test_defaults_run_without_any_configuration(tmp_path: Path) -> None:
    settings = load_settings({"DIGESTD_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path}/digestd.db"
    assert settings.smtp is None  # the mail catcher
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 8080)
    assert settings.base_url == "http://127.0.0.1:8080"
    assert settings.daily_time == time(7, 0) and settings.weekly_time == time(8, 0)
    assert settings.default_timezone == "UTC" and settings.catchup_hours == 6
    assert settings.generated_secret
    # the generated development key is kept, so links survive a restart
    again = load_settings({"DIGESTD_DATA_DIR": str(tmp_path)})
    assert again.secret_keys == settings.secret_keys


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "starttls", "user", "password"),
    [
        (
            "smtp://user:p%40ss@mail.example.com:587?starttls=true",
            "mail.example.com",
            587,
            False,
            True,
            "user",
            "p@ss",
        ),
        ("smtps://relay.example.com:465", "relay.example.com", 465, True, False, None, None),
        ("smtps://relay.example.com", "relay.example.com", 465, True, False, None, None),
        # STARTTLS when the server offers it (None), unless the URL says otherwise
        ("smtp://127.0.0.1:2525", "127.0.0.1", 2525, False, None, None, None),
        ("smtp://127.0.0.1:2525?starttls=false", "127.0.0.1", 2525, False, False, None, None),
    ],
)
def test_smtp_urls_are_understood(
    url: str,
    host: str,
    port: int,
    tls: bool,
    starttls: bool | None,
    user: str | None,
    password: str | None,
) -> None:
    smtp = parse_smtp_url(url)
    assert (smtp.host, smtp.port, smtp.use_tls, smtp.start_tls) == (host, port, tls, starttls)
    assert (smtp.username, smtp.password) == (user, password)


BAD_SECONDS = ("0", "-1", "nan", "inf", "-inf", "soon", "")


def test_smtp_url_options_have_safe_defaults_and_are_understood() -> None:
    plain = parse_smtp_url("smtp://relay.example.com")
    assert (plain.timeout, plain.data_timeout) == (30, 600)
    assert (plain.pipelining, plain.insecure_auth, plain.ehlo) == (True, False, None)
    tuned = parse_smtp_url(
        "smtp://u:p@relay.example.com?timeout=5&data_timeout=120.5&pipelining=false"
        "&insecure_auth=true&starttls=false&ehlo=mailer.example.com"
    )
    assert (tuned.timeout, tuned.data_timeout) == (5, 120.5)
    assert (tuned.pipelining, tuned.insecure_auth, tuned.start_tls) == (False, True, False)
    assert tuned.ehlo == "mailer.example.com"
    for literal in ("[192.0.2.1]", "[IPv6:2001:db8::1]"):
        assert parse_smtp_url(f"smtp://relay.example.com?ehlo={literal}").ehlo == literal


@pytest.mark.parametrize(
    "query",
    [
        *(f"{name}={bad}" for name in ("timeout", "data_timeout") for bad in BAD_SECONDS),
        "pipelining=sometimes",
        "insecure_auth=2",
        "ehlo=",
        "ehlo=two%20words",
        "ehlo=mailer.example.com%0D%0AMAIL%20FROM:<x@y>",
        "ehlo=-mailer.example.com",
        "ehlo=under_score.example.com",
        "ehlo=[192.0.2.300]",
        "ehlo=[2001:db8::1]",  # an IPv6 literal needs its "IPv6:" tag
        "starttls=false&cafile=/etc/hosts",  # a CA for a session that never uses TLS
    ],
)
def test_a_bad_smtp_url_option_names_the_variable(tmp_path: Path, query: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "DIGESTD_DATA_DIR": str(tmp_path),
                "DIGESTD_SMTP_URL": f"smtp://relay.example.com?{query}",
            }
        )
    assert caught.value.variable == "DIGESTD_SMTP_URL"
    assert str(caught.value).startswith("DIGESTD_SMTP_URL: ")


def test_a_password_with_starttls_false_is_refused_unless_insecure_auth() -> None:
    with pytest.raises(ConfigError, match="clear text") as caught:
        parse_smtp_url("smtp://user:pw@relay.example.com?starttls=false")
    assert caught.value.variable == "DIGESTD_SMTP_URL"
    assert parse_smtp_url("smtp://user:pw@relay.example.com?starttls=false&insecure_auth=true")
    assert parse_smtp_url("smtp://user:pw@relay.example.com")  # STARTTLS or no AUTH: decided live


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        # An SES-style generated password (base64: '/' and '+'), written as it was given
        ("smtp://AKIAEXAMPLE:BHx/ab+cdEF@email-smtp.eu-west-1.amazonaws.com:587", "percent-enc"),
        ("smtp://user:pa#ss@relay.example.com:587", "percent-enc"),
        ("smtp://user:pa?ss@relay.example.com:587", "percent-enc"),
        ("smtp://apikey@relay.example.com:587", "no password"),
        ("smtp://user:@relay.example.com:587", "no password"),
        ("smtp://:secret@relay.example.com:587", "no user name"),
    ],
)
def test_smtp_credentials_the_url_cannot_carry_are_named(url: str, problem: str) -> None:
    """Not 'the port must be a number' for a URL whose port reads 587, nor a session that
    silently sends no AUTH (the relay then refuses every message, retried until failed)."""
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_smtp_url(url)
    assert caught.value.variable == "DIGESTD_SMTP_URL"
    assert "port" not in str(caught.value)
    encoded = parse_smtp_url("smtp://AKIAEXAMPLE:BHx%2Fab+cdEF@relay.example.com:587")
    assert (encoded.username, encoded.password) == ("AKIAEXAMPLE", "BHx/ab+cdEF")


def test_the_lease_must_outlast_a_message_started_at_the_last_moment(tmp_path: Path) -> None:
    """A batch starts messages until 80 % of its lease; the last fifth holds the slowest
    message: 4 command timeouts (open, MAIL, RCPT, DATA) and the data timeout."""
    smtp = parse_smtp_url("smtp://relay.example.com?timeout=5&data_timeout=40")  # 60 s
    check_lease_budget(smtp, DeliveryTuning(lease_seconds=300))
    with pytest.raises(ConfigError, match="at least 300 ") as caught:
        check_lease_budget(smtp, DeliveryTuning(lease_seconds=299))
    assert caught.value.variable == "DIGESTD_SEND_LEASE_SECONDS"
    check_lease_budget(None, DeliveryTuning(lease_seconds=1))  # the mail catcher

    env = {"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_SMTP_URL": "smtp://relay.example.com"}
    assert load_settings(env).delivery.lease_seconds == 3600  # the defaults fit each other
    with pytest.raises(ConfigError, match=r"at least 3600 .*data_timeout=600") as caught:
        load_settings({**env, "DIGESTD_SEND_LEASE_SECONDS": "300"})
    assert caught.value.variable == "DIGESTD_SEND_LEASE_SECONDS"
    load_settings({"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_SEND_LEASE_SECONDS": "300"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGESTD_SMTP_URL", "http://mail.example.com"),
        ("DIGESTD_SMTP_URL", "smtp://mail.example.com:notaport"),
        ("DIGESTD_SMTP_URL", "smtp://:25"),
        ("DIGESTD_SMTP_URL", "smtp://[::1:25"),  # an unclosed IPv6 bracket
        ("DIGESTD_SMTP_URL", "smtp://mail.example.com?starttls=maybe"),
        ("DIGESTD_SMTP_URL", "smtp://mail.example.com?tls=1"),
        ("DIGESTD_SMTP_URL", "smtps://mail.example.com?starttls=true"),
        ("DIGESTD_DAILY_HOUR", "seven"),
        ("DIGESTD_DAILY_HOUR", "25"),
        ("DIGESTD_WEEKLY_HOUR", "8:75"),
        ("DIGESTD_DEFAULT_TIMEZONE", "Mars/Olympus_Mons"),
        ("DIGESTD_CATCHUP_HOURS", "-1"),
        ("DIGESTD_CATCHUP_HOURS", "soon"),
        ("DIGESTD_LISTEN", "8080"),
        ("DIGESTD_LISTEN", "localhost:99999"),
        ("DIGESTD_BASE_URL", "digest.example.com"),
        ("DIGESTD_FROM", "not an address"),
        ("DIGESTD_FROM", "Digest <a@example.com>\r\nBcc: victim@example.com"),
        ("DIGESTD_SECRET_KEYS", "short"),
        ("DIGESTD_DATABASE_URL", "digestd.db"),
        ("DIGESTD_DAILY_LIMIT", "0"),
        ("DIGESTD_HELPER_PROCESSES", "-1"),
        ("DIGESTD_HELPER_PROCESSES", "two"),
        ("DIGESTD_HELPER_PROCESSES", "1000"),
        ("DIGESTD_INBOUND_LISTEN", "2525"),
        ("DIGESTD_INBOUND_LISTEN", "127.0.0.1:lmtp"),
        ("DIGESTD_INBOUND_LISTEN", "127.0.0.1:0"),
        ("DIGESTD_SMTP_STORM_DOMAINS", "1"),
        ("DIGESTD_SMTP_STORM_DOMAINS", "many"),
        ("DIGESTD_SMTP_URL", "smtp://mail.example.com:0"),  # not "the default port"
        ("DIGESTD_SMTP_URL", "smtp://mail.example.com:99999"),
        ("DIGESTD_SMTP_URL", "smtp://mail.example.com:\u0665\u0668\u0667"),  # Arabic-Indic 587
        ("DIGESTD_BASE_URL", "https://digest.example.com:0"),
        ("DIGESTD_DAILY_HOUR", "\u0667"),  # Arabic-Indic 7: int() reads it
        ("DIGESTD_FROM", "a@example.com, b@example.com"),
        ("DIGESTD_FROM", "Tech Pulse <digest@example.com"),
        ("DIGESTD_FROM", "Tech Pulse <ü@example.com>"),  # passed, then every send crashed
        # The driver read these at the first connection: a traceback, or a warning quoting
        # source code and the argument ignored.
        ("DIGESTD_DATABASE_URL", "sqlite:////tmp/digestd.db?timeout=abc"),
        ("DIGESTD_DATABASE_URL", "sqlite:////tmp/digestd.db?check_same_thread=maybe"),
        ("DIGESTD_DATABASE_URL", "sqlite:////tmp/digestd.db?foo=bar"),
        # libpq reads these only when it connects: exit 1 from the first command, not 2.
        ("DIGESTD_DATABASE_URL", "postgresql://u:secret@db.example/digest?sslmode=requre"),
        ("DIGESTD_DATABASE_URL", "postgresql://u:secret@db.example/digest?sslmod=require"),
        ("DIGESTD_DATABASE_URL", "postgresql://u:secret@db.example/digest?connect_timeout=5s"),
        ("DIGESTD_DATABASE_URL", "postgresql://db.example/digest?target_session_attrs=rw"),
    ],
)
def test_a_bad_value_names_its_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(tmp_path), variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable)
    assert "secret" not in str(caught.value)


def test_postgresql_options_libpq_takes_pass(tmp_path: Path) -> None:
    url = (
        "postgresql://u:secret@db.example/digest?sslmode=verify-full&connect_timeout=5"
        "&application_name=digestd&target_session_attrs=read-write"
    )
    settings = load_settings({"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_DATABASE_URL": url})
    assert settings.database_url.endswith(
        "sslmode=verify-full&connect_timeout=5"
        "&application_name=digestd&target_session_attrs=read-write"
    )


def test_an_internationalised_sender_domain_is_written_as_its_a_label(tmp_path: Path) -> None:
    """It passed validation, then run, tick, preview and send-test died composing (an
    address that could not be ASCII)."""
    from digestd.mail.composer import Composer
    from digestd.tokens import Tokens

    settings = load_settings(
        {"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_FROM": "Tech Pülse <digest@exämple.com>"}
    )
    assert settings.from_address == "digest@xn--exmple-cua.com"
    assert settings.from_domain == "xn--exmple-cua.com"
    composer = Composer(settings, Tokens(settings.secret_keys))
    assert composer.from_header.isascii() and "digest@xn--exmple-cua.com" in composer.from_header


@pytest.mark.parametrize(
    "values",
    [
        {"DIGESTD_CATCHUP_HOURS": "0"},  # the README said 0-168: it skipped every edition
        {"DIGESTD_CATCHUP_HOURS": "0.01"},
        {"DIGESTD_TICK_SECONDS": "86400"},  # ticks a day apart, a 6-hour window
    ],
    ids=["zero", "36-seconds", "daily-ticks"],
)
def test_a_catch_up_window_shorter_than_two_ticks_is_refused(
    tmp_path: Path, values: dict[str, str]
) -> None:
    """An edition is planned at the first tick after its send time: with a window shorter
    than that, every reader was skipped as late, exit 0 and no word."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(tmp_path), **values})
    assert caught.value.variable == "DIGESTD_CATCHUP_HOURS"
    assert "at least two ticks" in str(caught.value)
    fine = {"DIGESTD_CATCHUP_HOURS": "0.05", "DIGESTD_TICK_SECONDS": "60"}
    assert load_settings({"DIGESTD_DATA_DIR": str(tmp_path), **fine}).catchup_hours == 0.05


@pytest.mark.parametrize(
    "url",
    [
        "smtp://relay:hunter2-secret@mail.example.com:notaport",
        "smtp://relay:hunter2-secret@mail.example.com:0",
        "smtpx://relay:hunter2-secret@mail.example.com",
        "smtp://relay:hunter2-secret@:25",
        "smtp://relay:hunter2-secret@mail.example.com?tls=1",
        "smtp://postmaster@mg.example.net:hunter2-secret@smtp.example.org:2525x",
        "smtp://user:hun/ter2@mail.example.com:99999",
        "smtp://user:hun#ter2@mail.example.com:99999",
        "smtp://user:hun?ter2@mail.example.com:99999",
        "smtp://user:hun@ter2@mail.example.com:99999",
        "smtp://user@x:hunter2@mail.example.com:\uff15\uff18\uff17",  # fullwidth 587
    ],
)
def test_a_bad_smtp_url_is_shown_without_its_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_SMTP_URL": url})
    assert caught.value.variable == "DIGESTD_SMTP_URL"
    assert "ter2" not in str(caught.value)  # no part of any password


def test_a_comma_inside_a_quoted_display_name_is_one_sender(tmp_path: Path) -> None:
    settings = load_settings(
        {"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_FROM": '"Pulse, Tech" <d@news.example.org>'}
    )
    assert (settings.from_name, settings.from_address) == ("Pulse, Tech", "d@news.example.org")


def test_toml_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "digestd.toml"
    config.write_text(
        'daily_hour = "6:30"\nsite_name = "AI Pulse"\nDIGESTD_DEFAULT_TIMEZONE = "Europe/Paris"\n'
    )
    settings = load_settings(
        {"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_DEFAULT_TIMEZONE": "Asia/Tokyo"}, config
    )
    assert settings.daily_time == time(6, 30)
    assert settings.site_name == "AI Pulse"
    assert settings.default_timezone == "Asia/Tokyo"


def test_an_empty_variable_leaves_the_files_value(tmp_path: Path) -> None:
    config = tmp_path / "digestd.toml"
    config.write_text('base_url = "https://news.example.net"\nsite_name = "AI Pulse"\n')
    settings = load_settings(
        {"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_BASE_URL": "", "DIGESTD_SITE_NAME": " "},
        config,
    )
    assert settings.base_url == "https://news.example.net"
    assert settings.site_name == "AI Pulse"


def test_a_broken_toml_file_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "digestd.toml"
    config.write_text("daily_hour = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, config)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("digestd = 1\n", "digestd must be a table"),
        ("digestd = [1, 2]\n", "digestd must be a table"),
        ('[smtp]\nurl = "smtp://relay.example.com"\n', "smtp is a table"),
        ('[digestd.smtp]\nurl = "smtp://relay.example.com"\n', "smtp is a table"),
    ],
)
def test_a_toml_file_of_another_shape_is_a_config_error(
    tmp_path: Path, text: str, problem: str
) -> None:
    config = tmp_path / "digestd.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=problem) as refused:
        load_settings({}, config)
    assert refused.value.variable == "--config"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            'smtp_ulr = "smtp://relay.example.com"\n',
            "smtp_ulr is no setting: did you mean smtp_url?",
        ),
        ('DIGESTD_DAILY_HOURS = "6"\n', "daily_hours is no setting: did you mean daily_hour?"),
        ("colour = 3\n", "colour is no setting"),
    ],
)
def test_a_key_no_setting_has_is_refused_and_writes_no_key_file(
    tmp_path: Path, line: str, problem: str
) -> None:
    config = tmp_path / "digestd.toml"
    config.write_text('site_name = "AI Pulse"\n' + line)
    data = tmp_path / "var"
    with pytest.raises(ConfigError) as refused:
        load_settings({"DIGESTD_DATA_DIR": str(data)}, config)
    assert refused.value.variable == "--config"
    assert str(refused.value).endswith(problem)
    assert not data.exists()  # no development key left behind


def _documented_settings() -> set[str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| (`DIGESTD_.*?) \|", readme, re.MULTILINE)
    return {name for row in rows for name in re.findall(r"`DIGESTD_([A-Z_]+)`", row)}


def test_a_file_may_set_every_documented_setting(tmp_path: Path) -> None:
    """Each setting the README's table lists is one a config file may hold: none of them is
    refused as unknown, whatever else is (or is not) configured."""
    key = tmp_path / "dkim.pem"  # a key digestd can sign with: it is read with the settings
    generate = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]
    subprocess.run([*generate, "-out", str(key)], check=True, capture_output=True)
    every = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/d.db",
        "SMTP_URL": "smtp://127.0.0.1:2525",
        "BASE_URL": "https://digest.example.com",
        "LISTEN": "127.0.0.1:8081",
        "FROM": "Tech Pulse <digest@news.example.com>",
        "SECRET_KEYS": "k" * 32,
        "ADMIN_TOKEN": "admin-test-token-4fK9q2Lm7Rz8",
        "POSTAL_ADDRESS": "1 Market Street",
        "SITE_NAME": "AI Pulse",
        "DAILY_HOUR": "6:30",
        "WEEKLY_HOUR": "9",
        "DEFAULT_TIMEZONE": "Europe/Paris",
        "CATCHUP_HOURS": "3",
        "DAILY_LIMIT": "8",
        "WEEKLY_LIMIT": "12",
        "PER_SOURCE_LIMIT": "2",
        "DATA_DIR": str(tmp_path / "var"),
        "DKIM_SELECTOR": "s1",
        "DKIM_KEY_FILE": str(key),
        "DKIM_DOMAIN": "news.example.com",
        "LOG_FORMAT": "json",
        "TRUSTED_PROXIES": "10.0.0.0/8",
        "METRICS_TOKEN": "m" * 20,
        "SITE_ORIGINS": "https://news.example.com",
        "DEV_MAILBOX": "false",
        "SUNDAY_DAILY": "true",
        "RETENTION_DAYS": "30",
        "TRACK_CLICKS": "off",
        "SUNSET_WEEKS": "8",
        "INBOUND_LISTEN": "127.0.0.1:2526",
        "SMTP_POOL_SIZE": "4",
        "SMTP_MAX_PER_CONNECTION": "50",
        "SMTP_RATE": "10",
        "SMTP_DOMAIN_CONCURRENCY": "2",
        "SMTP_DOMAIN_RATE": "5",
        "SMTP_FAILURE_BURST": "5",
        "SMTP_PAUSE_SECONDS": "60",
        "SMTP_STORM_DOMAINS": "3",
        "SEND_BATCH": "50",
        "SEND_LEASE_SECONDS": "7200",
        "TICK_SECONDS": "30",
        "HELPER_PROCESSES": "1",
        "MAX_ATTEMPTS": "4",
    }
    assert set(every) == _documented_settings()
    config = tmp_path / "digestd.toml"
    config.write_text("".join(f"{name.lower()} = {value!r}\n" for name, value in every.items()))
    settings = load_settings({}, config)
    assert settings.site_name == "AI Pulse" and settings.dkim is not None
    # With DKIM off, its domain is still a setting (not "no setting").
    config.write_text(f'dkim_domain = "news.example.com"\ndata_dir = {str(tmp_path)!r}\n')
    assert load_settings({}, config).dkim is None


def test_cli_stops_with_exit_2_and_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    bad = {**env, "DIGESTD_SMTP_URL": "smtp//mail.example.com"}
    assert run_cli(monkeypatch, bad, "tick", "--now", "2026-11-30T07:00:00Z") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "DIGESTD_SMTP_URL" in err[0]
    assert not (tmp_path / "var" / "mail").exists()  # nothing was sent or written


@pytest.mark.parametrize(
    ("listen", "host", "port", "base_url"),
    [
        ("[::1]:8080", "::1", 8080, "http://[::1]:8080"),
        ("[2001:db8::5]:80", "2001:db8::5", 80, "http://[2001:db8::5]:80"),
        ("0.0.0.0:8081", "0.0.0.0", 8081, "http://0.0.0.0:8081"),
        ("localhost:9000", "localhost", 9000, "http://localhost:9000"),
    ],
)
def test_listen_takes_ipv4_names_and_bracketed_ipv6(
    tmp_path: Path, listen: str, host: str, port: int, base_url: str
) -> None:
    settings = load_settings({"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_LISTEN": listen})
    assert (settings.listen_host, settings.listen_port) == (host, port)
    assert settings.base_url == settings.listen_url == base_url


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("DIGESTD_LISTEN", "::1:8080", "in brackets"),
        ("DIGESTD_LISTEN", "2001:db8::5:80", "in brackets"),
        ("DIGESTD_LISTEN", "[::1]", "[IPV6]:PORT"),
        ("DIGESTD_LISTEN", "[127.0.0.1]:80", "[IPV6]:PORT"),
        ("DIGESTD_LISTEN", "[::1]:0", "HOST:PORT"),
        ("DIGESTD_TRUSTED_PROXIES", "10.0.0.0/8, proxy.example.com", "proxy.example.com"),
        ("DIGESTD_TRUSTED_PROXIES", "10.0.0.1/8", "host bits set"),
        ("DIGESTD_TRUSTED_PROXIES", "*", "'*'"),
        ("DIGESTD_METRICS_TOKEN", "short", "at least 16"),
        ("DIGESTD_SITE_ORIGINS", "*", "expected origins"),
        ("DIGESTD_SITE_ORIGINS", "https://news.example.com/signup", "no path"),
        ("DIGESTD_SITE_ORIGINS", "news.example.com", "'news.example.com'"),
        ("DIGESTD_SITE_ORIGINS", "ftp://news.example.com", "expected origins"),
        ("DIGESTD_SITE_ORIGINS", "https://news.example.com:99999", "not a valid origin"),
    ],
)
def test_bad_http_settings_name_their_variable(
    tmp_path: Path, variable: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(tmp_path), variable: value})
    assert caught.value.variable == variable
    assert says in str(caught.value)


def test_trusted_proxies_and_metrics_token_are_read(tmp_path: Path) -> None:
    plain = load_settings({"DIGESTD_DATA_DIR": str(tmp_path)})
    assert plain.http.trusted_proxies == () and plain.http.metrics_token is None
    settings = load_settings(
        {
            "DIGESTD_DATA_DIR": str(tmp_path),
            "DIGESTD_TRUSTED_PROXIES": " 10.0.0.0/8,,192.0.2.7 , fd00::/8 ",
            "DIGESTD_METRICS_TOKEN": "m" * 16,
        }
    )
    assert [str(n) for n in settings.http.trusted_proxies] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "fd00::/8",
    ]
    assert settings.http.metrics_token == "m" * 16
    assert "m" * 16 not in repr(settings)


def test_site_origins_are_read_as_browsers_send_them(tmp_path: Path) -> None:
    base = {"DIGESTD_DATA_DIR": str(tmp_path)}
    assert load_settings(base).http.site_origins == ()
    raw = " https://News.Example.com/ ,http://localhost:3000,https://www.example.com:443,,"
    settings = load_settings({**base, "DIGESTD_SITE_ORIGINS": raw})
    assert settings.http.site_origins == (
        "https://news.example.com",
        "http://localhost:3000",
        "https://www.example.com",
    )


def test_the_inbound_listener_is_off_unless_set(tmp_path: Path) -> None:
    base = {"DIGESTD_DATA_DIR": str(tmp_path)}
    assert load_settings(base).inbound_listen is None
    on = load_settings({**base, "DIGESTD_INBOUND_LISTEN": "127.0.0.1:2525"})
    assert on.inbound_listen == ("127.0.0.1", 2525)
    assert load_settings({**base, "DIGESTD_INBOUND_LISTEN": "[::1]:2525"}).inbound_listen == (
        "::1",
        2525,
    )
