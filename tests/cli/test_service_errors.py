"""How `clarion` words a service it cannot reach (cli/service_errors.py): the address without
credentials, the reason in a few words, and nothing for a failure that is not about reaching it.
The exceptions are the client libraries' own: raised by them against a closed port, or made
the way they make them for the failures a closed port cannot show (a wrong password, a timeout)."""

from __future__ import annotations

import pika.exceptions
import psycopg
import pytest
import redis
from pika.adapters.utils import connection_workflow

from clarion.cli import service_errors
from clarion.cli.service_errors import POSTGRESQL, RABBITMQ, REDIS, explain
from clarion.config.settings import Settings, load_settings
from clarion.persistence import broker, cache
from tests.stack import free_port

PASSWORD = "pw-not-for-your-eyes"
REFUSED = "connection refused; check"
AT = 'connection failed: connection to server at "10.0.0.5", port 5432 failed:'  # libpq's words


@pytest.fixture
def settings(no_clarion_environment: None) -> Settings:
    port = free_port()  # nothing listens there
    return load_settings(
        database_url=f"postgresql://ops:{PASSWORD}@127.0.0.1:{port}/clarion_prod",
        amqp_url=f"amqp://ops:{PASSWORD}@127.0.0.1:{port}/notify",
        redis_url=f"redis://ops:{PASSWORD}@127.0.0.1:{port}/3",
    )


def _port(settings: Settings) -> int:
    return int(settings.database_url.rsplit(":", 1)[1].split("/")[0])


def test_addresses_keep_host_port_and_database_or_vhost_but_never_the_credentials() -> None:
    assert service_errors.postgres_address(
        f"postgresql://ops:{PASSWORD}@db.example:6543/clarion?sslmode=require"
    ) == "db.example:6543/clarion"
    assert service_errors.postgres_address("postgresql://db.example/clarion") == (
        "db.example:5432/clarion")
    assert service_errors.amqp_address(f"amqp://guest:{PASSWORD}@mq:5673/%2F") == "mq:5673/%2F"
    assert service_errors.amqp_address(f"amqps://u:{PASSWORD}@mq/clarion") == "mq:5671/clarion"
    assert service_errors.amqp_address("amqp://mq") == "mq:5672/%2F"
    assert service_errors.redis_address(f"redis://:{PASSWORD}@cache:6380/2") == "cache:6380/2"
    assert service_errors.redis_address("redis://cache") == "cache:6379/0"
    assert service_errors.redis_address("unix:///run/redis.sock?db=1") == "/run/redis.sock"


def test_each_client_refused_by_a_closed_port_names_its_service_address_and_setting(
        settings: Settings) -> None:
    port = _port(settings)
    with pytest.raises(psycopg.OperationalError) as pg:
        psycopg.connect(settings.database_url, connect_timeout=2)
    with pytest.raises(pika.exceptions.AMQPConnectionError) as amqp:
        broker.connect(settings.amqp_url, "clarion-test")
    with pytest.raises(redis.ConnectionError) as cached:
        cache.connect(settings.redis_url).ping()

    lines = [explain(exc.value, settings) for exc in (pg, amqp, cached)]
    where, pg_setting = f"127.0.0.1:{port}", "CLARION_DATABASE_URL"

    assert [(u.service, u.reason) if u else None for u in lines] == [
        (POSTGRESQL, "connection refused"), (RABBITMQ, "connection refused"),
        (REDIS, "connection refused")]
    assert [u.line() for u in lines if u] == [
        f"clarion: cannot connect to PostgreSQL at {where}/clarion_prod: {REFUSED} {pg_setting}",
        f"clarion: cannot connect to RabbitMQ at {where}/notify: {REFUSED} CLARION_AMQP_URL",
        f"clarion: cannot connect to Redis at {where}/3: {REFUSED} CLARION_REDIS_URL",
    ]
    assert [u.exit_code for u in lines if u] == [4, 5, 6]


def test_a_host_that_does_not_resolve_is_an_unknown_host_for_rabbitmq_too(
        settings: Settings) -> None:
    # pika lets the resolver's socket.gaierror through bare: only its traceback says pika.
    url = f"amqp://ops:{PASSWORD}@nowhere.invalid:5672/notify"
    with pytest.raises(OSError) as raised:
        broker.connect(url, "clarion-test")

    found = explain(raised.value, settings.model_copy(update={"amqp_url": url}))

    assert found is not None and (found.service, found.reason) == (RABBITMQ, "unknown host")
    assert "nowhere.invalid:5672/notify" in found.line()


@pytest.mark.parametrize(("message", "reason"), [
    (f'{AT} FATAL:  password authentication failed for user "ops"', "authentication failed"),
    (f"{AT} fe_sendauth: no password supplied", "authentication failed"),
    (f'{AT} FATAL:  database "Clarion_Prod" does not exist', 'unknown database "Clarion_Prod"'),
    (f"{AT} timeout expired", "timed out"),
    ("failed to resolve host 'db.invalid': [Errno -2] Name or service not known", "unknown host"),
    (f"{AT} FATAL:  the database system is starting up", "the server is starting up"),
    (f"{AT} received invalid response to SSL negotiation: H", "not a PostgreSQL server"),
])
def test_postgresql_failures_are_put_in_a_few_words_without_the_user(
        settings: Settings, message: str, reason: str) -> None:
    found = explain(psycopg.OperationalError(message), settings)

    assert found is not None and (found.service, found.reason) == (POSTGRESQL, reason)
    assert '"ops"' not in found.line()


@pytest.mark.parametrize(("error", "reason"), [
    (pika.exceptions.AMQPConnectionError(
        connection_workflow.AMQPConnectorSocketConnectError(TimeoutError("timed out"))),
     "timed out"),
    (connection_workflow.AMQPConnectorStackTimeout("stack timeout"), "timed out"),
    (pika.exceptions.ProbableAuthenticationError(
        "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused'"),
     "authentication failed"),
    (pika.exceptions.ProbableAccessDeniedError(
        "ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost notify not found'"),
     "unknown vhost, or the user may not use it"),
    (pika.exceptions.ConnectionClosedByBroker(530, "NOT_ALLOWED - vhost notify not found"),
     "unknown vhost, or the user may not use it"),
    (pika.exceptions.IncompatibleProtocolError("StreamLostError: EOF"),
     "not an AMQP 0-9-1 server"),
    (pika.exceptions.StreamLostError("Transport indicated EOF"), "connection lost"),
])
def test_rabbitmq_failures_are_put_in_a_few_words(
        settings: Settings, error: Exception, reason: str) -> None:
    found = explain(error, settings)

    assert found is not None and (found.service, found.reason) == (RABBITMQ, reason)


@pytest.mark.parametrize(("error", "reason"), [
    (redis.AuthenticationError("invalid username-password pair or user is disabled."),
     "authentication failed"),
    (redis.TimeoutError("Timeout connecting to server"), "timed out"),
    (redis.ResponseError("DB index is out of range"), "unknown database (index out of range)"),
])
def test_redis_failures_are_put_in_a_few_words(
        settings: Settings, error: Exception, reason: str) -> None:
    found = explain(error, settings)

    assert found is not None and (found.service, found.reason) == (REDIS, reason)


@pytest.mark.parametrize("error", [
    psycopg.errors.LockNotAvailable("could not obtain lock on relation"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg"),
    ValueError("a bug of ours"),
    OSError("not from a client library"),
])
def test_a_failure_that_is_not_about_reaching_a_service_is_left_alone(
        settings: Settings, error: Exception) -> None:
    assert explain(error, settings) is None


def test_a_library_message_that_repeats_the_password_is_masked(settings: Settings) -> None:
    found = explain(psycopg.OperationalError(f"invalid connection option ({PASSWORD})"), settings)

    assert found is not None and PASSWORD not in found.line() and "***" in found.line()
