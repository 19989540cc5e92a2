"""scripts/ensure-services.sh decides what a machine lacks, and how to get it: as root on Debian
or Ubuntu, one apt-get command for exactly the missing services; otherwise the one command to
run. The real install cannot run here (all three are installed), so these run it with
`--dry-run`, its programs looked for in a folder of stubs and its ports pointed at ports of the
test's own: closed, or answered by a listening socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-services.sh"
INSTALL = "apt-get install -y --no-install-recommends"


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    """A folder for stub programs; each stub notes in calls.log that it ran."""
    (tmp_path / "bin").mkdir()
    return tmp_path


def stub(machine: Path, *programs: str) -> None:
    for name in programs:
        path = machine / "bin" / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{machine}/calls.log"\n')
        path.chmod(0o755)


@pytest.fixture
def answering() -> Iterator[list[int]]:
    """Three ports something listens on (as a running service would)."""
    sockets = []
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        sockets.append(s)
    yield [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()


def ensure(machine: Path, ports: list[int], os_id: str = "debian", uid: int = 0,
           os_like: str = "") -> subprocess.CompletedProcess[str]:
    release = machine / "os-release"
    release.write_text(f'ID={os_id}\nID_LIKE="{os_like}"\n')
    env = {**os.environ, "CLARION_ENSURE_PATH": str(machine / "bin"),
           "CLARION_ENSURE_OS_RELEASE": str(release), "CLARION_ENSURE_UID": str(uid),
           "CLARION_ENSURE_POSTGRES_PORT": str(ports[0]),
           "CLARION_ENSURE_REDIS_PORT": str(ports[1]),
           "CLARION_ENSURE_RABBITMQ_PORT": str(ports[2])}
    return subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


def closed_ports() -> list[int]:
    return [free_port() for _ in range(3)]


def test_as_root_on_debian_it_would_install_only_the_missing_services_with_apt_get(
        machine: Path) -> None:
    stub(machine, "apt-get", "redis-server")  # Redis installed but stopped

    result = ensure(machine, closed_ports())

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"ensure-services: would run: apt-get update && {INSTALL} postgresql rabbitmq-server",
        "ensure-services: would start Redis",
        "ensure-services: would set up and start PostgreSQL and RabbitMQ",
    ]
    assert not (machine / "calls.log").exists()  # a dry run runs nothing


def test_a_service_that_answers_is_never_installed_nor_started(
        machine: Path, answering: list[int]) -> None:
    stub(machine, "apt-get")  # and none of the services' programs

    result = ensure(machine, answering)

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "ensure-services: PostgreSQL, Redis and RabbitMQ are up\n"


def test_ubuntu_and_its_derivatives_count_as_debian(machine: Path) -> None:
    stub(machine, "apt-get")

    ubuntu = ensure(machine, closed_ports(), os_id="ubuntu")
    mint = ensure(machine, closed_ports(), os_id="linuxmint", os_like="ubuntu debian")

    for result in (ubuntu, mint):
        assert result.returncode == 0, result.stderr
        assert f"{INSTALL} postgresql redis-server rabbitmq-server" in result.stdout


def test_without_root_it_prints_the_one_command_to_run_and_changes_nothing(
        machine: Path) -> None:
    stub(machine, "apt-get", "rabbitmq-server")  # RabbitMQ installed, but stopped

    result = ensure(machine, closed_ports(), uid=1000)

    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"ensure-services: PostgreSQL and Redis are not installed; run: sudo bash {SCRIPT}"
        f"  (as root it runs {INSTALL} postgresql redis-server, then sets them up and starts"
        " them)\n")
    assert not (machine / "calls.log").exists()


def test_on_another_system_it_names_what_to_install(machine: Path) -> None:
    result = ensure(machine, closed_ports(), os_id="fedora", os_like="rhel centos")

    assert result.returncode == 1 and result.stdout == ""
    assert "PostgreSQL, Redis and RabbitMQ are not installed" in result.stderr
    assert "apt-get install" not in result.stderr


def test_the_script_parses_and_passes_shellcheck() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian's shellcheck package)")
    checked = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout
