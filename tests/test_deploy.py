"""deploy/ checked as far as a machine without a Docker engine allows: the Dockerfile and
the install script linted by their own tools, the install script run into a scratch root and
the unit it places verified by systemd, the compose file's wiring, every variable
documented, and the container's entrypoint run for real outside Docker."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from digestd.config import load_settings
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _config_variables() -> set[str]:
    source = (ROOT / "digestd" / "config.py").read_text()
    # Every name config.py reads: get("NAME") and number("NAME", ...) calls.
    names = re.findall(r'\b(?:get|number)\("([A-Z_]+)"', source)
    assert len(names) > 25  # the pattern still matches how config.py reads variables
    return {"DIGESTD_" + name for name in names}


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_script_passes_shellcheck() -> None:
    result = subprocess.run(
        [str(BIN / "shellcheck"), str(DEPLOY / "install.sh")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith("0") and user[-1] != "root"
    assert "HEALTHCHECK" in text and "/healthz" in text


def _install(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    """deploy/install.sh staged under ``root``, offline: pip takes the wheel given and
    nothing else (the libraries come from this test run's environment when digestd runs)."""
    env = {
        **os.environ,
        "DESTDIR": str(root),
        "PYTHON": sys.executable,
        "PIP_NO_INDEX": "1",
        "PIP_NO_DEPS": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _unit_lines(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit, re.M)


@pytest.mark.slow
def test_install_script_places_a_unit_that_systemd_verifies(
    tmp_path: Path, env: dict[str, str]
) -> None:
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip_wheel, "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("digestd-*.whl")
    root = tmp_path / "root"
    installed = _install(root, wheel)
    assert installed.returncode == 0, installed.stderr

    unit_path = root / "etc/systemd/system/digestd.service"
    unit = unit_path.read_text()
    binary = "/opt/digestd/bin/digestd"
    assert _unit_lines(unit, "ExecStartPre") == [f"{binary} migrate"]
    assert _unit_lines(unit, "ExecStart") == [f"{binary} run --no-migrate"]
    assert os.access(root / binary.lstrip("/"), os.X_OK)
    settings = root / "etc/digestd/digestd.env"
    assert settings.stat().st_mode & 0o777 == 0o640
    assert settings.read_text() == (DEPLOY / "digestd.env.example").read_text()

    # systemd reads the unit in that root (the units it depends on copied in beside it):
    # a missing binary, an unknown option or a bad value would be reported.
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    verify = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "digestd.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (verify.returncode, verify.stderr) == (0, "")
    for option in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "User=digestd",
    ):
        assert option in unit

    # The installed digestd runs its unit's ExecStartPre: the migrations are in the wheel.
    purelib = sysconfig.get_paths()["purelib"]  # this run's libraries, not its digestd
    run_env = {**env, "PYTHONPATH": purelib, "DIGESTD_DATABASE_URL": f"sqlite:///{tmp_path}/new.db"}
    migrated = subprocess.run(
        [str(root / binary.lstrip("/")), "migrate"], env=run_env, capture_output=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr.decode()[-2000:]
    assert (tmp_path / "new.db").stat().st_size > 0

    # Again, as an upgrade: the operator's settings stay.
    settings.write_text("DIGESTD_BASE_URL=https://news.example.org\n")
    again = _install(root, wheel)
    assert again.returncode == 0, again.stderr
    assert settings.read_text() == "DIGESTD_BASE_URL=https://news.example.org\n"


def test_compose_wires_digestd_to_postgres_and_mailpit() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "mail", "digestd"}
    assert {service["restart"] for service in services.values()} == {"unless-stopped"}
    assert services["mail"]["image"].startswith("axllent/mailpit")
    digestd = services["digestd"]
    assert digestd["build"]["dockerfile"] == "deploy/Dockerfile"
    assert digestd["depends_on"]["db"]["condition"] == "service_healthy"
    env = digestd["environment"]
    assert env["DIGESTD_SMTP_URL"] == "smtp://mail:1025?catcher=true"
    assert env["DIGESTD_DATABASE_URL"].startswith("postgresql://")
    assert set(env) <= _config_variables()
    # ${NAME:-default} is compose's substitution from the shell; unset here, so the default.
    resolved = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
    assert resolved["DIGESTD_ADMIN_TOKEN"] == ""  # the admin API stays off until one is set
    load_settings(resolved)  # every value in it is valid
    health = digestd["healthcheck"]
    assert health["test"][0] == "CMD" and "/healthz?live" in health["test"][-1]


def _compose_healthcheck() -> list[str]:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    command: list[str] = compose["services"]["digestd"]["healthcheck"]["test"][1:]  # after CMD
    return command


def test_every_variable_is_documented_in_the_example_env_and_readme() -> None:
    example = (DEPLOY / "digestd.env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for variable in _config_variables():
        assert variable in example, variable
        assert variable in readme, variable


def _exec_form(pattern: str, dockerfile: str, flags: re.RegexFlag) -> list[str]:
    """The JSON argument list of a Dockerfile instruction (exec form)."""
    match = re.search(pattern, dockerfile, flags)
    assert match is not None, pattern
    argv: list[str] = json.loads(match.group(1))
    return argv


def test_the_container_entrypoint_runs_outside_docker(tmp_path: Path, env: dict[str, str]) -> None:
    """ENV + ENTRYPOINT + CMD of the image, run as a process; its HEALTHCHECK and the
    compose file's must pass."""
    text = (DEPLOY / "Dockerfile").read_text().split("\nFROM ")[-1]  # the runtime stage
    image_env = dict(re.findall(r"(DIGESTD_\w+)=(\S+)", text))
    entrypoint = _exec_form(r"^ENTRYPOINT (\[.*\])", text, re.M)
    cmd = _exec_form(r"^CMD (\[.*\])", text, re.M)
    health = _exec_form(r"HEALTHCHECK .*?CMD (\[[^\n]*\])", text, re.S)
    port = free_port()
    run_env = {
        **os.environ,
        **image_env,
        **env,
        "DIGESTD_DATA_DIR": str(tmp_path / "state"),
        "DIGESTD_LISTEN": f"0.0.0.0:{port}",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    process = subprocess.Popen(
        [*entrypoint, *cmd],
        env=run_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        healthy = False
        while time.monotonic() < deadline and not healthy:
            assert process.poll() is None
            check = subprocess.run(
                [sys.executable if health[0] == "python" else health[0], *health[1:]],
                env=run_env,
                capture_output=True,
                timeout=10,
            )
            healthy = check.returncode == 0
            if not healthy:
                time.sleep(0.3)  # waiting for another process to start listening
        assert healthy, "HEALTHCHECK never passed"
        assert "/healthz?live" in health[-1]  # liveness, as the compose file's
        compose_check = _compose_healthcheck()
        assert compose_check[0] == "python"
        live = subprocess.run(
            [sys.executable, *compose_check[1:]], env=run_env, capture_output=True, timeout=10
        )
        assert live.returncode == 0, live.stderr
        # No SMTP here, yet the caught mail (every confirmation link) is not served on 0.0.0.0.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/dev/mail", timeout=5)
        assert refused.value.code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    assert "/dev/mail is off" in output
    assert shlex.join(cmd) == "run"
