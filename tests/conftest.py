"""Shared fixtures: real PostgreSQL, Redis and RabbitMQ, isolated from a running Clarion.

Each test session makes its own database and RabbitMQ vhost (`clarion_test_<run>`, removed at the
end), so two runs on one machine (a developer's and CI's) never meet; Redis database 15 is shared,
and tests use unique ids in it. A service that is not running fails the tests that need it (never
a silent skip): `make test` starts them first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from clarion.config.settings import Settings, load_settings
from tests.stack import free_port, port_open, rabbitmqctl

RUN = uuid.uuid4().hex[:8]
TEST_DB = f"clarion_test_{RUN}"
TEST_VHOST = f"clarion_test_{RUN}"
TEST_REDIS_DB = 15


def _require_services() -> None:
    missing = [name for name, port in (("PostgreSQL", 5432), ("Redis", 6379),
                                       ("RabbitMQ", 5672)) if not port_open(port)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not running on 127.0.0.1: run"
                    " `bash scripts/ensure-services.sh` (make test does)", pytrace=False)


def _declare_queues(amqp_url: str) -> None:
    from clarion.persistence import broker

    conn = broker.connect(amqp_url, "clarion-tests")
    try:
        broker.declare_topology(conn.channel())
    finally:
        conn.close()


@pytest.fixture(scope="session")
def test_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at this run's database, vhost and Redis db; the schema is migrated."""
    _require_services()
    import psycopg

    from clarion.persistence import database

    rabbitmqctl("add_vhost", TEST_VHOST)
    rabbitmqctl("set_permissions", "-p", TEST_VHOST, "guest", ".*", ".*", ".*")
    settings = load_settings(
        database_url=f"postgresql://postgres@127.0.0.1:5432/{TEST_DB}",
        redis_url=f"redis://127.0.0.1:6379/{TEST_REDIS_DB}",
        amqp_url=f"amqp://guest:guest@127.0.0.1:5672/{TEST_VHOST}",
        state_dir=tmp_path_factory.mktemp("clarion-state"),
        actor_port=free_port(),
        http_port=free_port(),
        sendgrid_api_key=None,
        fcm_credentials_file=None,
        fcm_endpoint=None,
        internal_secret=None,
    )
    database.ensure_database(settings.database_url)
    database.migrate(settings.database_url)
    _declare_queues(settings.amqp_url)
    yield settings
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")
    rabbitmqctl("delete_vhost", TEST_VHOST)


@pytest.fixture
def db(test_settings: Settings) -> Iterator[Any]:
    from clarion.persistence import database

    with database.connect(test_settings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def simulator() -> Iterator[Any]:
    from clarion.simulator.server import SimulatorServer

    with SimulatorServer() as server:
        yield server


@pytest.fixture(scope="session")
def provider_settings(test_settings: Settings, simulator: Any,
                      tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Test settings with the real SendGrid, Firebase and Twilio clients aimed at the simulator."""
    from clarion.simulator.credentials import write_service_account

    credentials = write_service_account(
        tmp_path_factory.mktemp("fcm") / "service-account.json",
        token_uri=simulator.base_url + "/token",
    )
    return test_settings.model_copy(update={
        "sendgrid_api_key": load_settings(sendgrid_api_key="SG.test-key").sendgrid_api_key,
        "sendgrid_host": simulator.base_url,
        "fcm_credentials_file": credentials,
        "fcm_endpoint": simulator.base_url,
        "twilio_account_sid": "AC" + "5" * 32,
        "twilio_auth_token": SecretStr("twilio-test-token"),
        "twilio_from_number": "+15005550006",
        "twilio_host": simulator.base_url,
    })


@pytest.fixture(scope="module")
def anonymous(stack: Any) -> Iterator[Any]:
    """An HTTP client without credentials for the module's running Clarion (its `stack`)."""
    import httpx

    with httpx.Client(base_url=stack.base_url, timeout=15) as client:
        yield client


@pytest.fixture
def clean_simulator(simulator: Any) -> Iterator[None]:
    """The simulator without records or injected faults, before and after the test."""
    simulator.state.reset()
    yield
    simulator.state.reset()


@pytest.fixture
def no_clarion_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`load_settings()` sees none of a developer's CLARION_* variables (pydantic-settings
    matches names case-insensitively, so `clarion_http_port` counts too) and no `.env` but the
    ones a test writes in its own folder."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("CLARION_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
