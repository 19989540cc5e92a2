"""Fixtures for the storage tests: throwaway databases, async queries, a clean broker and a
Redis client that counts its commands.

Everything here runs against the real services of the top-level conftest (`test_settings`):
throwaway databases (`clarion_mig_<random>`) and vhosts (`clarion_tmp_<random>`) are created for
a test and removed afterwards, and the broker fixtures purge the session vhost's work queues and
DLQ before and after each test, never deleting them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pika
import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from clarion.config.settings import Settings
from clarion.persistence import broker, database
from tests.stack import rabbitmqctl

T = TypeVar("T")

BROKER_QUEUES = (*broker.WORK_QUEUES.values(), broker.FAILED_QUEUE)


@pytest.fixture
def fresh_database_url(test_settings: Settings) -> Iterator[str]:
    """The URL of a brand-new, empty database (`clarion_mig_<random>`), dropped afterwards."""
    name = f"clarion_mig_{uuid.uuid4().hex[:12]}"
    url = make_conninfo(test_settings.database_url, dbname=name)
    assert database.ensure_database(url) is True
    try:
        yield url
    finally:
        admin_url = make_conninfo(test_settings.database_url, dbname="postgres")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def run_async(test_settings: Settings) -> Callable[..., Any]:
    """Call `fn(conn, *args)` on a fresh autocommit AsyncConnection to the test database."""

    def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def main() -> T:
            conn = await psycopg.AsyncConnection.connect(
                test_settings.database_url, autocommit=True
            )
            async with conn:
                return await fn(conn, *args)

        return asyncio.run(main())

    return run


def _purge(url: str) -> None:
    conn = broker.connect(url, "clarion-tests-purge")
    try:
        channel = conn.channel()
        for queue in BROKER_QUEUES:
            channel.queue_purge(queue)
    finally:
        conn.close()


@pytest.fixture
def amqp(test_settings: Settings) -> Iterator[pika.BlockingConnection]:
    """A connection to the test vhost; the work queues and the DLQ are empty before and after."""
    _purge(test_settings.amqp_url)
    conn = broker.connect(test_settings.amqp_url, "clarion-tests-broker")
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()
        _purge(test_settings.amqp_url)


@pytest.fixture
def publisher(test_settings: Settings, amqp: pika.BlockingConnection) -> Iterator[Any]:
    """A BatchPublisher on the test vhost (after `amqp`, so its queues start and end empty)."""
    pub = broker.BatchPublisher(test_settings.amqp_url, "clarion-tests-publisher")
    try:
        yield pub
    finally:
        pub.close()


@pytest.fixture(scope="module")
def fresh_vhost_url(test_settings: Settings) -> Iterator[str]:
    """The AMQP URL of a brand-new, empty vhost (`clarion_tmp_<random>`), deleted afterwards."""
    vhost = f"clarion_tmp_{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        base, _, _ = test_settings.amqp_url.rpartition("/")
        yield f"{base}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


class CountingRedis(redis.Redis):
    """A Redis client that records every command it sends and the size of every pipeline it
    executes; with `fail_deletes` set, its DELs fail as if Redis went away."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []
        self.pipelines: list[int] = []  # the number of commands in each executed pipeline
        self.fail_deletes = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]).upper())
        if self.fail_deletes and str(args[0]).upper() == "DEL":
            raise redis.ConnectionError("Redis went away")
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted_execute(*args: Any, **kwargs: Any) -> Any:
            self.pipelines.append(len(pipe.command_stack))
            return execute(*args, **kwargs)

        pipe.execute = counted_execute  # type: ignore[method-assign]
        return pipe


@pytest.fixture
def client(test_settings: Settings) -> Iterator[CountingRedis]:
    """A CountingRedis on the test Redis database."""
    conn = CountingRedis.from_url(test_settings.redis_url, socket_timeout=2)
    try:
        yield conn
    finally:
        conn.close()
