"""One line, not a traceback, when a command cannot reach PostgreSQL, RabbitMQ or Redis.

`explain(exc, settings)` recognises a client library's connection failure (psycopg, pika,
redis-py) and words it for the operator: which service, where (host:port and database or vhost;
never the user or password), what failed, and which setting to check. Each service has its own
exit code, after those `clarion` already used:

    0  done            1  any other failure      2  usage or settings error
    3  uvicorn's: the HTTP server did not start (port taken, application start-up failed)
    4  PostgreSQL (CLARION_DATABASE_URL)
    5  RabbitMQ (CLARION_AMQP_URL)
    6  Redis (CLARION_REDIS_URL)

`check_services(settings)` connects to all three before a command starts processes that need
them (the actor system, the HTTP server), so a dead service is this line at once rather than an
actor's timeout with a log tail.
"""

from __future__ import annotations

import logging
import re
import socket
import traceback
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import pika.exceptions
import psycopg
import redis
from pika.adapters.utils import connection_workflow
from psycopg.conninfo import conninfo_to_dict

from clarion.config.settings import Settings


@dataclass(frozen=True, slots=True)
class Service:
    """A service Clarion needs, the setting that says where it is, and the exit code naming it."""

    name: str
    setting: str
    exit_code: int


POSTGRESQL = Service("PostgreSQL", "CLARION_DATABASE_URL", 4)
RABBITMQ = Service("RabbitMQ", "CLARION_AMQP_URL", 5)
REDIS = Service("Redis", "CLARION_REDIS_URL", 6)


@dataclass(frozen=True, slots=True)
class Unreachable:
    """What the operator is told: one line, and the exit code of the service."""

    service: Service
    address: str
    reason: str

    @property
    def exit_code(self) -> int:
        return self.service.exit_code

    def line(self) -> str:
        return (f"clarion: cannot connect to {self.service.name} at {self.address}:"
                f" {self.reason}; check {self.service.setting}")


# --- where: the address without credentials ---------------------------------------------------

def postgres_address(url: str) -> str:
    """host:port/database (libpq's defaults filled in), never the user or password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:  # not a conninfo libpq can read: say what we can
        params = {}
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def amqp_address(url: str) -> str:
    """host:port/vhost, the vhost as written in the URL (pika's default, `/`, is %2F)."""
    parts = urlsplit(url)
    default_port = 5671 if parts.scheme == "amqps" else 5672
    return f"{_host_port(url, default_port)}/{parts.path[1:] or '%2F'}"


def redis_address(url: str) -> str:
    """host:port/db, or the socket's path for unix://."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{_host_port(url, 6379)}/{parts.path[1:] or '0'}"


def _host_port(url: str, default_port: int) -> str:
    parts = urlsplit(url)
    try:
        port = str(parts.port or default_port)
    except ValueError:  # not a number: say what we can without the credentials before it
        port = parts.netloc.rpartition("@")[2].rpartition(":")[2]
    return f"{parts.hostname or 'localhost'}:{port}"


# --- what failed ------------------------------------------------------------------------------

def _socket_reason(error: BaseException | None) -> str | None:
    """An OSError underneath a client's exception, in words (the same for every service)."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "unknown host"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return "connection lost"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return None


# libpq reports connection failures as text (psycopg gives them no SQLSTATE): the first phrase
# found wins, so the specific ones come first.
_POSTGRES_REASONS = tuple((re.compile(pattern, re.IGNORECASE), reason) for pattern, reason in (
    (r'database "([^"]*)" does not exist', 'unknown database "{0}"'),
    ((r'password authentication failed|no password supplied|authentication failed'
      r'|role "[^"]*" does not exist'), "authentication failed"),
    (r"no pg_hba\.conf entry", "connection not allowed by pg_hba.conf"),
    (r"connection refused", "connection refused"),
    (r"timeout expired|timed out", "timed out"),
    (r"failed to resolve host|could not translate host name|name or service not known",
     "unknown host"),
    (r"no route to host|network is unreachable", "host unreachable"),
    (r"the database system is (starting up|shutting down|in recovery mode)", "the server is {0}"),
    (r"too many clients|remaining connection slots", "too many connections"),
    (r"invalid response to ssl negotiation|expected authentication request",
     "not a PostgreSQL server"),
    (r"server closed the connection|connection is lost|consuming input failed",
     "connection lost"),
))
# SQLSTATEs of a server that refused or dropped us (as opposed to a statement that failed).
_POSTGRES_STATES = ("08", "28", "3D", "53300", "57P")


def _postgres_reason(exc: psycopg.OperationalError) -> str | None:
    if exc.sqlstate is not None and not exc.sqlstate.startswith(_POSTGRES_STATES):
        return None  # a statement failed (a lock timeout, a cancel): not a reachability problem
    for pattern, reason in _POSTGRES_REASONS:
        found = pattern.search(str(exc))
        if found:
            return reason.format(*found.groups())
    return _first_line(str(exc))


def _amqp_root(error: BaseException) -> BaseException:
    """The failure underneath pika's wrappers (a connection workflow, a connector phase)."""
    while True:
        if isinstance(error, connection_workflow.AMQPConnectionWorkflowFailed) and error.exceptions:
            error = error.exceptions[-1]
        elif isinstance(error, connection_workflow.AMQPConnectorPhaseErrorBase):
            error = error.exception
        elif (type(error) is pika.exceptions.AMQPConnectionError and error.args
              and isinstance(error.args[0], BaseException)):
            error = error.args[0]
        else:
            return error


def _amqp_reason(exc: BaseException) -> str:
    error = _amqp_root(exc)
    if isinstance(error, (pika.exceptions.AuthenticationError,
                          pika.exceptions.ProbableAuthenticationError)):
        return "authentication failed"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        return "unknown vhost, or the user may not use it"
    if isinstance(error, pika.exceptions.IncompatibleProtocolError):
        return "not an AMQP 0-9-1 server"
    if isinstance(error, pika.exceptions.ConnectionClosed):
        if error.reply_code == 403:
            return "authentication failed"
        if error.reply_code == 530:
            return "unknown vhost, or the user may not use it"
        return f"closed by the broker ({error.reply_code} {_first_line(error.reply_text)})"
    if isinstance(error, (pika.exceptions.StreamLostError, pika.exceptions.AMQPHeartbeatTimeout)):
        return "connection lost"
    if isinstance(error, connection_workflow.AMQPConnectorStackTimeout):
        return "timed out"
    return _socket_reason(error) or _first_line(repr(error))


def _redis_reason(exc: redis.RedisError) -> str | None:
    text = str(exc).lower()
    if isinstance(exc, redis.AuthenticationError) or (
            isinstance(exc, redis.ResponseError) and ("noauth" in text or "wrongpass" in text)):
        return "authentication failed"
    if isinstance(exc, redis.ResponseError) and "db index is out of range" in text:
        return "unknown database (index out of range)"
    if isinstance(exc, redis.TimeoutError):
        return "timed out"
    if isinstance(exc, redis.ConnectionError):
        return _socket_reason(exc.__context__) or _first_line(str(exc))
    return None  # a command failed: not a reachability problem


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].rstrip(".") if text.strip() else "failed"


def _raised_in(exc: BaseException, package: str) -> bool:
    """Whether a bare OSError came out of `package` (pika lets a DNS failure through as is)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return any(f"/{package}/" in frame.filename for frame in frames)


# --- the one entry point ----------------------------------------------------------------------

def explain(exc: BaseException, settings: Settings) -> Unreachable | None:
    """The line for a failure to reach one of Clarion's services; None for anything else."""
    if isinstance(exc, psycopg.OperationalError):
        service, url, reason = POSTGRESQL, settings.database_url, _postgres_reason(exc)
        address = postgres_address(url)
    elif isinstance(exc, (pika.exceptions.AMQPConnectionError,
                          connection_workflow.AMQPConnectorException)) or (
            isinstance(exc, OSError) and _raised_in(exc, "pika")):
        service, url, reason = RABBITMQ, settings.amqp_url, _amqp_reason(exc)
        address = amqp_address(url)
    elif isinstance(exc, redis.RedisError):
        service, url, reason = REDIS, settings.redis_url, _redis_reason(exc)
        address = redis_address(url)
    else:
        return None
    if reason is None:
        return None
    return Unreachable(service, address, _without_secrets(reason, url))


def _without_secrets(text: str, url: str) -> str:
    # A reason is our own words or a server's first line, which never carries the password;
    # the fallback is a library's text, so make sure.
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text


def check_services(settings: Settings) -> None:
    """Connect to PostgreSQL, RabbitMQ and Redis in turn; the first that fails raises (its
    client's own exception, which `explain` words)."""
    from clarion.persistence import broker, cache, database

    with database.connect(settings.database_url, autocommit=True):
        pass
    broker.connect(settings.amqp_url, "clarion-check").close()
    client = cache.connect(settings.redis_url)
    try:
        client.ping()
    finally:
        client.close()


def quiet_client_logs() -> None:
    """pika logs each failed connection attempt at ERROR, a traceback included: the command
    says it in one line instead. (Processes it starts configure their own logging.)"""
    logging.getLogger("pika").setLevel(logging.CRITICAL)
