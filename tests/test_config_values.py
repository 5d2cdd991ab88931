"""Settings read strictly: the admin token, every number, URLs, keys and text; the
development key file created private and once. Each bad value is one line naming its
variable, in-process and from the real command line."""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from digestd.config import load_settings
from digestd.dev_key import dev_secret
from digestd.errors import ConfigError
from tests.helpers import ROOT, one_line_error, run_cli, run_digestd

EXAMPLE_ADMIN_TOKEN = re.findall(
    r"^DIGESTD_ADMIN_TOKEN=(.*)$", (ROOT / "deploy" / "digestd.env.example").read_text(), re.M
)[0]

PLACEHOLDER_TOKENS = [
    EXAMPLE_ADMIN_TOKEN,  # what the example file says
    "CHANGE_ME",
    "a",
    "short-but-random-Q7x",
    "change-me-admin-token-2026-abcdef",
    "ChangeMe-please-0123456789abcdef",
    "my-example-admin-token-Kq82jdLa",
    "placeholder-for-the-real-one-93",
    "Replace_Me_With_A_Real_Token_Now",
    "your-token-here-0123456789abcdefgh",
    "admin-password-7391-ZzYyXxWwVv",
    "x" * 30,
    "admin-" + "x" * 24,
    "token-00000000-1234-5678-abcdef",
    "ab" * 16,  # long, but only two characters
]


@pytest.mark.parametrize("token", PLACEHOLDER_TOKENS)
def test_a_short_or_placeholder_admin_token_is_refused(tmp_path: Path, token: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_ADMIN_TOKEN": token})
    assert caught.value.variable == "DIGESTD_ADMIN_TOKEN"
    if len(token) > 3:
        assert token not in str(caught.value)  # a secret is never echoed
    assert not (tmp_path / "secret.key").exists()  # nothing written on the way out


@pytest.mark.parametrize(
    "token",
    [secrets.token_urlsafe(32) for _ in range(5)]
    + [secrets.token_hex(16), "admin-test-token-4fK9q2Lm7Rz8"],
)
def test_a_random_admin_token_is_accepted(tmp_path: Path, token: str) -> None:
    settings = load_settings({"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_ADMIN_TOKEN": token})
    assert settings.admin_token == token


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["migrate"],
        ["stats"],
        ["tick"],
        ["articles", "add", "-"],
        ["subscribers", "export"],
        ["preview", "daily", "--categories", "ai"],
    ],
)
def test_every_command_stops_on_a_placeholder_admin_token(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    command: list[str],
) -> None:
    assert run_cli(monkeypatch, {**env, "DIGESTD_ADMIN_TOKEN": "CHANGE_ME"}, *command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("digestd: configuration error: DIGESTD_ADMIN_TOKEN")


NUMERIC = [
    "CATCHUP_HOURS",
    "DAILY_LIMIT",
    "WEEKLY_LIMIT",
    "PER_SOURCE_LIMIT",
    "DAILY_HOUR",
    "WEEKLY_HOUR",
    "SMTP_POOL_SIZE",
    "SMTP_MAX_PER_CONNECTION",
    "SMTP_RATE",
    "SMTP_DOMAIN_CONCURRENCY",
    "SMTP_DOMAIN_RATE",
    "SMTP_FAILURE_BURST",
    "SMTP_PAUSE_SECONDS",
    "SEND_BATCH",
    "SEND_LEASE_SECONDS",
    "TICK_SECONDS",
    "HELPER_PROCESSES",
]
NOT_SANE = ["nan", "NaN", "inf", "-inf", "infinity", "-1", "-0.5", "1e400", "9" * 30, "9" * 5000]


@pytest.mark.parametrize("value", NOT_SANE)
@pytest.mark.parametrize("name", NUMERIC)
def test_every_number_refuses_nan_inf_negative_and_huge(
    tmp_path: Path, name: str, value: str
) -> None:
    variable = "DIGESTD_" + name
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(tmp_path), variable: value})
    assert caught.value.variable == variable
    assert len(str(caught.value)) < 300  # 5 000 digits are not echoed back


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGESTD_SECRET_KEYS", ",,,"),
        ("DIGESTD_SECRET_KEYS", " , , "),
        ("DIGESTD_DATABASE_URL", "mysql://digestd:hunter2@db.example.com/digestd"),
        ("DIGESTD_DATABASE_URL", "oracle://db.example.com/x"),
        ("DIGESTD_DATABASE_URL", "postgresql://digestd:hunter2@db:notaport/digestd"),
        ("DIGESTD_DATABASE_URL", "postgres://u:hunter2@[::1/db"),
        ("DIGESTD_BASE_URL", "https://digest.example.com\r\nX-Injected: 1"),
        ("DIGESTD_BASE_URL", "https://digest.example.com/\n"),
        ("DIGESTD_BASE_URL", "https://digest.example.com/my digest"),
        ("DIGESTD_BASE_URL", "https://digest.example.com/?utm_source=mail"),
        ("DIGESTD_BASE_URL", "https://digest.example.com/#top"),
        ("DIGESTD_BASE_URL", "https://admin:pw@digest.example.com"),
        ("DIGESTD_BASE_URL", "http://[::1"),
        ("DIGESTD_BASE_URL", "https://digest.example.com:99999"),
        ("DIGESTD_LISTEN", "127.0.0.1:²"),
        ("DIGESTD_LISTEN", "127.0.0.1:" + "8" * 5000),
        ("DIGESTD_LISTEN", "127.0.0.1:0"),
        ("DIGESTD_SITE_NAME", "Tech\r\nBcc: victim@example.com"),
        ("DIGESTD_POSTAL_ADDRESS", "1 Main St\x00"),
        ("DIGESTD_SITE_NAME", "Tech \udcff Pulse"),  # a non-UTF-8 byte in the environment
        ("DIGESTD_DEV_MAILBOX", "maybe"),
    ],
)
def test_a_bad_value_is_one_error_naming_its_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(tmp_path), variable: value})
    assert caught.value.variable == variable
    assert "hunter2" not in str(caught.value)
    assert not (tmp_path / "secret.key").exists()


def test_a_database_url_is_normalised_to_the_shipped_driver(tmp_path: Path) -> None:
    base = {"DIGESTD_DATA_DIR": str(tmp_path)}
    for given in ("postgres://u@db/x", "postgresql://u@db/x", "postgresql+psycopg://u@db/x"):
        settings = load_settings({**base, "DIGESTD_DATABASE_URL": given})
        assert settings.database_url == "postgresql+psycopg://u@db/x"
    assert load_settings(base).database_url == f"sqlite:///{tmp_path}/digestd.db"


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("https://bücher.example/digest/ü/", "https://xn--bcher-kva.example/digest/%C3%BC"),
        ("https://News.Example.com/a%20b", "https://news.example.com/a%20b"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
    ],
)
def test_the_base_url_is_made_ascii_for_the_headers_it_lands_in(
    tmp_path: Path, given: str, used: str
) -> None:
    settings = load_settings({"DIGESTD_DATA_DIR": str(tmp_path), "DIGESTD_BASE_URL": given})
    assert settings.base_url == used


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGESTD_CATCHUP_HOURS", "nan"),
        ("DIGESTD_CATCHUP_HOURS", "inf"),
        ("DIGESTD_SECRET_KEYS", ",,,"),
        ("DIGESTD_DATABASE_URL", "mysql://digestd:hunter2@db/digestd"),
        ("DIGESTD_BASE_URL", "https://digest.example.com\r\n"),
        ("DIGESTD_ADMIN_TOKEN", "CHANGE_ME"),
    ],
)
def test_the_command_line_says_one_line_and_exits_2(
    env: dict[str, str], tmp_path: Path, variable: str, value: str
) -> None:
    line = one_line_error(run_digestd({**env, variable: value}, "stats", cwd=tmp_path))
    assert line.startswith(f"digestd: configuration error: {variable}: ")
    assert "hunter2" not in line


# --- the development key ------------------------------------------------------------------


def test_the_dev_key_is_private_from_its_first_byte(tmp_path: Path) -> None:
    old = os.umask(0)  # the most permissive umask must not widen it
    try:
        key = dev_secret(tmp_path / "var")
    finally:
        os.umask(old)
    path = tmp_path / "var" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key and len(key) >= 32
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary left
    assert dev_secret(tmp_path / "var") == key  # kept across restarts


def test_racing_first_starts_in_threads_end_with_one_key(tmp_path: Path) -> None:
    for attempt in range(20):
        data_dir = tmp_path / f"var{attempt}"
        start = threading.Barrier(8)
        keys: list[str] = []

        def first_start(
            data_dir: Path = data_dir, start: threading.Barrier = start, keys: list[str] = keys
        ) -> None:
            start.wait()
            keys.append(dev_secret(data_dir))

        threads = [threading.Thread(target=first_start) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(keys) == 8 and len(set(keys)) == 1
        assert (data_dir / "secret.key").read_text().strip() == keys[0]
        assert [p.name for p in data_dir.iterdir()] == ["secret.key"]


def test_racing_first_starts_in_two_processes_end_with_one_key(tmp_path: Path) -> None:
    # Both processes import first, then wait for a go file, so their first writes collide.
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "from digestd.config import load_settings\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.001)\n"
        "print(load_settings({'DIGESTD_DATA_DIR': sys.argv[2]}).secret_keys[0])\n"
    )
    for attempt in range(3):
        data_dir = tmp_path / f"var{attempt}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(go), str(data_dir)],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        go.touch()
        keys = {p.communicate(timeout=60)[0].decode().strip() for p in processes}
        go.unlink()
        assert all(p.returncode == 0 for p in processes)
        assert keys == {(data_dir / "secret.key").read_text().strip()}
        assert stat.S_IMODE((data_dir / "secret.key").stat().st_mode) == 0o600


def test_an_unusable_data_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(blocker)})
    assert caught.value.variable == "DIGESTD_DATA_DIR"
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret.key").write_text("\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"DIGESTD_DATA_DIR": str(tmp_path / "var")})
    assert caught.value.variable == "DIGESTD_SECRET_KEYS"
