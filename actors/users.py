"""Users actor: user profiles, Redis cache-aside over PostgreSQL.

Takes:   ResolveUsers  → answers UsersResolved (the sender: the Gateway)
         SendBatch of CreateUser, UpdateUser, DeleteUser, AddPushToken, RemovePushToken
                       → answers Replies, one Reply per item, to the batch's `reply_to`
         its tick      → removes the push tokens the delivery actors handed over as
                         unregistered (`push_token_removals`, written from any host)

This actor is the only writer of the user cache: every write invalidates the users it changed,
once per batch and before the batch is answered, so a read after a write (an API read or the
Gateway's lookup) never sees the old profile. Cache hits and misses are counted in Redis
(`clarion:stats`, `cache:user:hit` / `cache:user:miss`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import redis

from clarion.actors.base import ClarionActor
from clarion.actors.messages import (
    AddPushToken,
    CreateUser,
    DeleteUser,
    RemovePushToken,
    Replies,
    Reply,
    ResolveUsers,
    SendBatch,
    UpdateUser,
    UsersResolved,
)
from clarion.persistence import cache as cache_mod
from clarion.persistence.near_cache import publish_invalidations
from clarion.persistence import users as user_repo
from clarion.persistence.records import User

# What a management command answers, and the users whose cache entries it made stale.
Outcome = tuple[Reply, tuple[str, ...]]


def _not_found(correlation_id: str, user_id: str) -> Reply:
    return Reply(correlation_id, 404, error_code="user_not_found", message=f"no user '{user_id}'")


def _duplicate(correlation_id: str) -> Reply:
    return Reply(correlation_id, 409, error_code="user_exists",
                 message="a user with this user_id or email_address already exists")


class Users(ClarionActor):
    def setup(self) -> None:
        self._cache = cache_mod.RecordCache[User](
            cache_mod.connect(self.settings.redis_url),
            cache_mod.USER_PREFIX,
            cache_mod.USER_TTL,
            User.to_json,
            User.from_json,
            stats="user",
        )
        self._commands: dict[type, Callable[[Any], Outcome]] = {
            CreateUser: self.create,
            UpdateUser: self.update,
            DeleteUser: self.delete,
            AddPushToken: self.add_push_token,
            RemovePushToken: self.remove_push_token,
        }

    def on_tick(self) -> None:
        try:
            changed = self.deps.stored(user_repo.apply_token_removals)
        except psycopg.Error as exc:
            self.log.warning("removing unregistered push tokens failed",
                             extra={"error": str(exc)})
            return
        if changed:
            self._invalidate(changed)
            self.log.info("unregistered push tokens removed", extra={"users": len(changed)})

    # -- the Gateway's lookups ----------------------------------------------------------------

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
        found: dict[str, User] = self.deps.cached(lambda: self._cache.get_many(user_ids), {})
        missing = [u for u in user_ids if u not in found]
        if missing:
            loaded = self.deps.stored(lambda conn: user_repo.fetch_users(conn, missing))
            found.update(loaded)
            self.deps.cached(lambda: self._cache.set_many(loaded), None)
        return found

    # -- management ---------------------------------------------------------------------------

    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        replies: list[Reply] = []
        stale: set[str] = set()
        for item in message.items:
            handler = self._commands.get(type(item))
            if handler is None:
                self.log.warning("unknown users command", extra={"item_type": type(item).__name__})
                replies.append(Reply(getattr(item, "correlation_id", ""), 500,
                                     error_code="internal_error",
                                     message="the users actor does not know this command"))
                continue
            try:
                reply, changed = handler(item)
            except psycopg.Error as exc:
                self.log.error("user write failed", extra={"error": str(exc)})
                reply, changed = Reply(item.correlation_id, 503, error_code="storage_unavailable",
                                       message="user storage is unavailable, try again"), ()
            replies.append(reply)
            stale.update(changed)
        self._invalidate(stale)
        self.send(message.reply_to, Replies(message.batch_id, tuple(replies)))

    def _invalidate(self, user_ids: set[str]) -> None:
        try:
            self._cache.invalidate(user_ids)
            # Every Gateway's process-local copy too (persistence/near_cache.py).
            publish_invalidations(self._cache.client, "user", user_ids)
        except redis.RedisError as exc:
            # The cache remembers them and deletes them before its next read.
            self.log.warning("user cache invalidation deferred", extra={"error": str(exc)})

    def create(self, command: CreateUser) -> Outcome:
        try:
            user = user_repo.create_user(self.deps.conn(), command.user)
        except user_repo.DuplicateUser:
            return _duplicate(command.correlation_id), ()
        return Reply(command.correlation_id, 201, data=user.to_json(),
                     message="user created"), (user.user_id,)

    def update(self, command: UpdateUser) -> Outcome:
        try:
            user = user_repo.update_user(self.deps.conn(), command.user_id, command.changes)
        except user_repo.DuplicateUser:
            return _duplicate(command.correlation_id), ()
        if user is None:
            return _not_found(command.correlation_id, command.user_id), ()
        return Reply(command.correlation_id, 200, data=user.to_json(),
                     message="user updated"), (user.user_id,)

    def delete(self, command: DeleteUser) -> Outcome:
        if not user_repo.delete_user(self.deps.conn(), command.user_id):
            return _not_found(command.correlation_id, command.user_id), ()
        return Reply(command.correlation_id, 200,
                     data={"user_id": command.user_id, "deleted": True},
                     message="user deleted; notifications sent to them keep their history"), (
            command.user_id,)

    def add_push_token(self, command: AddPushToken) -> Outcome:
        try:
            found = user_repo.add_push_token(self.deps.conn(), command.user_id, command.token)
        except user_repo.TooManyPushTokens as exc:
            return Reply(command.correlation_id, 422, error_code="push_token_limit_reached",
                         message=str(exc)), ()
        if found is None:
            return _not_found(command.correlation_id, command.user_id), ()
        user, added = found
        if not added:
            return Reply(command.correlation_id, 200, data=user.to_json(),
                         message="push token already registered"), ()
        return Reply(command.correlation_id, 201, data=user.to_json(),
                     message="push token added"), (user.user_id,)

    def remove_push_token(self, command: RemovePushToken) -> Outcome:
        found = user_repo.remove_push_token(self.deps.conn(), command.user_id, command.token)
        if found is None:
            return _not_found(command.correlation_id, command.user_id), ()
        user, removed = found
        if not removed:
            return Reply(command.correlation_id, 404, error_code="push_token_not_found",
                         message=f"user '{command.user_id}' has no such push token"), ()
        return Reply(command.correlation_id, 200, data=user.to_json(),
                     message="push token removed"), (user.user_id,)
