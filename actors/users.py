"""Users actor: user profiles, Redis cache-aside over PostgreSQL.

Takes:   ResolveUsers  → answers UsersResolved (the sender: the Gateway)
         SendBatch of CreateUser → answers Replies to the batch's `reply_to`
"""

from __future__ import annotations

from typing import Any

import psycopg
import redis

from clarion.actors.base import ClarionActor
from clarion.actors.messages import CreateUser, Replies, Reply, ResolveUsers, SendBatch, UsersResolved
from clarion.persistence import cache as cache_mod
from clarion.persistence import database
from clarion.persistence import users as user_repo
from clarion.persistence.records import User


class Users(ClarionActor):
    def setup(self) -> None:
        assert self.settings is not None
        self._db: psycopg.Connection | None = None
        self._cache = cache_mod.RecordCache[User](
            cache_mod.connect(self.settings.redis_url),
            "clarion:user",
            cache_mod.USER_TTL,
            User.to_json,
            User.from_json,
        )

    def teardown(self) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()

    def _conn(self) -> psycopg.Connection:
        assert self.settings is not None
        if self._db is None or self._db.closed or self._db.broken:
            self._db = database.connect(self.settings.database_url, autocommit=True)
        return self._db

    def receiveMsg_ResolveUsers(self, message: ResolveUsers, sender: Any) -> None:
        try:
            found = self.lookup(message.user_ids)
        except (psycopg.Error, OSError) as exc:
            self.log.error("user lookup failed", extra={"error": str(exc)})
            self.send(sender, UsersResolved(message.batch_id, {}, error="storage_unavailable"))
            return
        self.send(sender, UsersResolved(message.batch_id, found))

    def lookup(self, user_ids: tuple[str, ...]) -> dict[str, User]:
        """Cache first; the misses in one query; then fill the cache with what was found."""
        try:
            found = self._cache.get_many(user_ids)
        except redis.RedisError as exc:
            # The cache is an optimisation: without Redis, PostgreSQL still answers.
            self.log.warning("user cache unavailable", extra={"error": str(exc)})
            found = {}
        missing = [u for u in user_ids if u not in found]
        if missing:
            loaded = user_repo.fetch_users(self._conn(), missing)
            found.update(loaded)
            try:
                self._cache.set_many(loaded)
            except redis.RedisError:
                pass
        return found

    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        replies = [self.create(item) for item in message.items if isinstance(item, CreateUser)]
        self.send(message.reply_to, Replies(message.batch_id, tuple(replies)))

    def create(self, command: CreateUser) -> Reply:
        try:
            user = user_repo.create_user(self._conn(), command.user)
        except user_repo.DuplicateUser:
            return Reply(command.correlation_id, 409, error_code="user_exists",
                         message="a user with this user_id or email_address already exists")
        except psycopg.Error as exc:
            self.log.error("user create failed", extra={"error": str(exc)})
            return Reply(command.correlation_id, 503, error_code="storage_unavailable",
                         message="user storage is unavailable, try again")
        try:
            self._cache.invalidate([user.user_id])
        except redis.RedisError:
            pass
        return Reply(command.correlation_id, 201, data=user.to_json(), message="user created")
