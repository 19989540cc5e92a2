"""Dependencies: what an actor reaches outside itself, made once its Configure arrives.

    settings   this host's settings (read from its own environment: no secret travels in a
               message)
    conn()     the actor's own PostgreSQL connection, opened again after it broke
    breaker()  one circuit breaker per dependency (PostgreSQL, Redis, RabbitMQ, a provider)
    stored()   a PostgreSQL call behind its breaker: fails fast (StorageUnavailable) while open
    cached()   a Redis call behind its breaker: the cache is an optimisation, so while Redis
               fails the answer is a default and PostgreSQL serves

Our own services' breakers wait `infra_breaker_reset_timeout` (1 s) before a trial call, so a
service back after a blip is used again within about a second; a provider's waits
`breaker_reset_timeout` (60 s), to spare someone else's service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import redis

from clarion.config.settings import Settings
from clarion.persistence import database
from clarion.supervision.breaker import CircuitBreaker

INFRASTRUCTURE = frozenset({"postgresql", "redis", "rabbitmq"})


class StorageUnavailable(psycopg.OperationalError):
    """PostgreSQL's breaker is open: not tried, fail fast."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"storage breaker open; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class Dependencies:
    def __init__(self, settings: Settings, log: logging.Logger,
                 on_breaker_change: Callable[[str, str, str], None]) -> None:
        self.settings = settings
        self._log = log
        self._on_breaker_change = on_breaker_change
        self._db: psycopg.Connection | None = None
        self._breakers: dict[str, CircuitBreaker] = {}

    def conn(self) -> psycopg.Connection:
        """The actor's own PostgreSQL connection, opened again if it broke (a restarted
        server, a network blip): the next call simply reconnects."""
        if self._db is None or self._db.closed or self._db.broken:
            self._db = database.connect(self.settings.database_url, autocommit=True)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def breaker(self, dependency: str) -> CircuitBreaker:
        """The breaker for one dependency (made on first use)."""
        if dependency not in self._breakers:
            reset = (self.settings.infra_breaker_reset_timeout if dependency in INFRASTRUCTURE
                     else self.settings.breaker_reset_timeout)
            self._breakers[dependency] = CircuitBreaker(
                dependency, self.settings.breaker_failure_threshold, reset,
                on_change=self._on_breaker_change)
        return self._breakers[dependency]

    def cached(self, read: Callable[[], Any], default: Any) -> Any:
        """`read()` behind the Redis breaker, or `default` while Redis fails."""
        breaker = self.breaker("redis")
        if not breaker.allow():
            return default
        try:
            value = read()
        except redis.RedisError as exc:
            breaker.failure()
            self._log.warning("cache unavailable", extra={"error": str(exc)})
            return default
        breaker.success()
        return value

    def stored(self, query: Callable[[psycopg.Connection], Any]) -> Any:
        """`query(conn)` behind the PostgreSQL breaker. Raises StorageUnavailable at once
        while the breaker is open, instead of making every caller wait for the same failure."""
        breaker = self.breaker("postgresql")
        if not breaker.allow():
            raise StorageUnavailable(breaker.retry_after())
        try:
            value = query(self.conn())
        except psycopg.OperationalError:
            breaker.failure()
            raise
        except BaseException:
            breaker.success()  # it answered: the error is ours, not the database being away
            raise
        breaker.success()
        return value
