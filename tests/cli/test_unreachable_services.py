"""Every `clarion` command that reaches PostgreSQL, RabbitMQ or Redis, run as an operator runs it
(a subprocess), with that service's URL pointing at a closed port: it says so in one line on
stderr (service, address, the setting to check), exits with the service's code, prints no
traceback and never the password in the URL.

The first group needs no service at all (every URL points at the closed port; a command stops at
the first service it reaches). The second gives a command the real services but one, to reach
the ones it only meets later (RabbitMQ after PostgreSQL in `migrate`, Redis before the actors
start)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from clarion.config.settings import Settings, settings_to_env
from clarion.supervision.actor_system import admin_running
from tests.stack import free_port

PASSWORD = f"pw-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Closed:
    """A service whose URL points at a closed port, and what `clarion` must say about it."""

    name: str
    setting: str
    exit_code: int
    url: str  # with {port}, user and password
    address: str  # with {port}


POSTGRESQL = Closed("PostgreSQL", "CLARION_DATABASE_URL", 4,
                    f"postgresql://clarion:{PASSWORD}@127.0.0.1:{{port}}/clarion",
                    "127.0.0.1:{port}/clarion")
RABBITMQ = Closed("RabbitMQ", "CLARION_AMQP_URL", 5,
                  f"amqp://clarion:{PASSWORD}@127.0.0.1:{{port}}/%2F", "127.0.0.1:{port}/%2F")
REDIS = Closed("Redis", "CLARION_REDIS_URL", 6,
               f"redis://clarion:{PASSWORD}@127.0.0.1:{{port}}/0", "127.0.0.1:{port}/0")
EVERY = (POSTGRESQL, RABBITMQ, REDIS)


def clarion(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # Only the variables given: none of the developer's CLARION_*, and a folder without a .env.
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("CLARION_")}
    return subprocess.run([sys.executable, "-m", "clarion.cli", *args], env={**base, **env},
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def isolated(tmp_path: Path) -> dict[str, str]:
    """Ports and a state folder of the test's own, should a command get as far as starting."""
    return {"CLARION_STATE_DIR": str(tmp_path / "state"),
            "CLARION_ACTOR_PORT": str(free_port()), "CLARION_HTTP_PORT": str(free_port())}


def assert_says_it_in_one_line(result: subprocess.CompletedProcess[str], closed: Closed,
                               port: int) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert PASSWORD not in output, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"clarion: cannot connect to {closed.name} at"
                               f" {closed.address.format(port=port)}: "), lines[0]
    assert lines[0].endswith(f"; check {closed.setting}"), lines[0]
    assert "connection refused" in lines[0]
    assert result.returncode == closed.exit_code, (result.returncode, output)


# The first service each command reaches.
FIRST = [
    (["migrate"], POSTGRESQL),
    (["seed"], POSTGRESQL),
    (["apikey", "create", "ops", "--scope", "send"], POSTGRESQL),
    (["apikey", "revoke", "ops"], POSTGRESQL),
    (["apikey", "list"], POSTGRESQL),
    (["run"], POSTGRESQL),
    (["run", "--demo"], POSTGRESQL),
    (["node"], POSTGRESQL),
    (["node", "--role", "gateway"], POSTGRESQL),
    (["node", "--role", "delivery"], RABBITMQ),  # declares its queues first
    (["actors", "start"], POSTGRESQL),
    (["serve"], POSTGRESQL),
]


@pytest.mark.parametrize(("args", "first"), FIRST, ids=[" ".join(a) for a, _ in FIRST])
def test_a_command_with_no_service_to_reach_names_the_first_one_it_tried(
        args: list[str], first: Closed, tmp_path: Path) -> None:
    port = free_port()  # bound, read and released: nothing listens there
    env = {c.setting: c.url.format(port=port) for c in EVERY} | isolated(tmp_path)

    result = clarion(args, env, tmp_path)

    assert_says_it_in_one_line(result, first, port)


# The services each command reaches after the first one, the others being up.
LATER = [
    (["migrate"], RABBITMQ),
    (["run"], RABBITMQ),
    (["run"], REDIS),
    (["node", "--role", "gateway"], RABBITMQ),
    (["node", "--role", "gateway"], REDIS),
    (["node", "--role", "delivery"], POSTGRESQL),
    (["node", "--role", "delivery"], REDIS),
    (["actors", "start"], RABBITMQ),
    (["actors", "start"], REDIS),
    (["serve"], RABBITMQ),
    (["serve"], REDIS),
]


@pytest.mark.integration
@pytest.mark.parametrize(("args", "closed"), LATER,
                         ids=[f"{' '.join(a)} without {c.name}" for a, c in LATER])
def test_a_command_names_the_one_service_it_cannot_reach_and_starts_nothing(
        args: list[str], closed: Closed, test_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = settings_to_env(test_settings) | isolated(tmp_path)
    env[closed.setting] = closed.url.format(port=port)

    result = clarion(args, env, tmp_path)

    assert_says_it_in_one_line(result, closed, port)
    assert not admin_running(int(env["CLARION_ACTOR_PORT"]), "127.0.0.1")


@pytest.mark.integration
def test_a_database_that_does_not_exist_is_named(test_settings: Settings,
                                                 tmp_path: Path) -> None:
    missing = f"clarion_missing_{uuid.uuid4().hex[:8]}"
    env = settings_to_env(test_settings) | isolated(tmp_path)
    env["CLARION_DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{missing}"

    result = clarion(["apikey", "list"], env, tmp_path)

    assert result.returncode == 4, result.stderr
    assert result.stderr == (f"clarion: cannot connect to PostgreSQL at 127.0.0.1:5432/{missing}:"
                             f' unknown database "{missing}"; check CLARION_DATABASE_URL\n')


@pytest.mark.integration
@pytest.mark.parametrize(("url", "reason"), [
    (f"amqp://guest:{PASSWORD}@127.0.0.1:5672/%2F", "authentication failed"),
    (f"amqp://guest:guest@127.0.0.1:5672/clarion_missing_{uuid.uuid4().hex[:8]}",
     "unknown vhost, or the user may not use it"),
], ids=["wrong password", "unknown vhost"])
def test_rabbitmq_refusing_the_login_or_the_vhost_says_which(
        url: str, reason: str, test_settings: Settings, tmp_path: Path) -> None:
    env = settings_to_env(test_settings) | isolated(tmp_path)
    env["CLARION_AMQP_URL"] = url

    result = clarion(["node", "--role", "delivery"], env, tmp_path)  # declares its queues first

    assert result.returncode == 5, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f": {reason}; check CLARION_AMQP_URL" in lines[0], result.stderr
    assert PASSWORD not in result.stdout + result.stderr
