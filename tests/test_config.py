"""Settings: defaults, every variable's bad value named, TOML file with the environment winning."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from digestd.config import load_settings, parse_smtp_url
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
        ("smtp://127.0.0.1:2525", "127.0.0.1", 2525, False, False, None, None),
    ],
)
def test_smtp_urls_are_understood(
    url: str,
    host: str,
    port: int,
    tls: bool,
    starttls: bool,
    user: str | None,
    password: str | None,
) -> None:
    smtp = parse_smtp_url(url)
    assert (smtp.host, smtp.port, smtp.use_tls, smtp.start_tls) == (host, port, tls, starttls)
    assert (smtp.username, smtp.password) == (user, password)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGESTD_SMTP_URL", "http://mail.example.com"),
        ("DIGESTD_SMTP_URL", "smtp://mail.example.com:notaport"),
        ("DIGESTD_SMTP_URL", "smtp://:25"),
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
    ],
)
def test_a_bad_value_names_its_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(tmp_path), variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable)


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


def test_a_broken_toml_file_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "digestd.toml"
    config.write_text("daily_hour = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, config)


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
