"""Templates actor: versions x languages, rendered in a Jinja2 sandbox, cached in Redis.

Takes:   RenderBatch → answers Rendered (the sender: the Gateway)
         SendBatch of CreateTemplate → answers Replies to the batch's `reply_to`
"""

from __future__ import annotations

from typing import Any

import psycopg
import redis

from clarion.actors.base import ClarionActor
from clarion.actors.messages import (
    CreateTemplate,
    RenderBatch,
    Rendered,
    Rendering,
    RenderItem,
    Replies,
    Reply,
    SendBatch,
)
from clarion.actors.rendering import Renderer, RenderError, check_syntax
from clarion.persistence import cache as cache_mod
from clarion.persistence import database
from clarion.persistence import templates as template_repo
from clarion.persistence.records import Template


def _pack(languages: dict[str, Template]) -> dict[str, Any]:
    return {lang: t.to_json() for lang, t in languages.items()}


def _unpack(data: dict[str, Any]) -> dict[str, Template]:
    return {lang: Template.from_json(t) for lang, t in data.items()}


class Templates(ClarionActor):
    def setup(self) -> None:
        assert self.settings is not None
        self._db: psycopg.Connection | None = None
        self._renderer = Renderer()
        # One cache entry per key: the latest version of each of its languages.
        self._cache = cache_mod.RecordCache[dict[str, Template]](
            cache_mod.connect(self.settings.redis_url),
            "clarion:template",
            cache_mod.TEMPLATE_TTL,
            _pack,
            _unpack,
        )

    def teardown(self) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()

    def _conn(self) -> psycopg.Connection:
        assert self.settings is not None
        if self._db is None or self._db.closed or self._db.broken:
            self._db = database.connect(self.settings.database_url, autocommit=True)
        return self._db

    # -- rendering ----------------------------------------------------------------------------

    def receiveMsg_RenderBatch(self, message: RenderBatch, sender: Any) -> None:
        try:
            latest = self._latest({item.template_key for item in message.items})
        except (psycopg.Error, OSError) as exc:
            self.log.error("template lookup failed", extra={"error": str(exc)})
            self.send(sender, Rendered(message.batch_id, (), error="storage_unavailable"))
            return
        results = tuple(self._render_item(item, latest) for item in message.items)
        self.send(sender, Rendered(message.batch_id, results))

    def _latest(self, keys: set[str]) -> dict[str, dict[str, Template]]:
        try:
            found = self._cache.get_many(keys)
        except redis.RedisError as exc:
            self.log.warning("template cache unavailable", extra={"error": str(exc)})
            found = {}
        missing = keys - found.keys()
        if missing:
            loaded: dict[str, dict[str, Template]] = {}
            for (key, language), template in template_repo.fetch_latest(
                self._conn(), missing
            ).items():
                loaded.setdefault(key, {})[language] = template
            found.update(loaded)
            try:
                self._cache.set_many(loaded)
            except redis.RedisError:
                pass
        return found

    def _render_item(self, item: RenderItem, latest: dict[str, dict[str, Template]]) -> Rendering:
        if item.version is None:
            languages = latest.get(item.template_key, {})
        else:
            languages = {
                lang: t
                for (_, lang), t in template_repo.fetch_version(
                    self._conn(), item.template_key, item.version
                ).items()
            }
        if not languages:
            what = f"version {item.version} of " if item.version else ""
            return Rendering(item.correlation_id, False, error_code="template_not_found",
                             error=f"no {what}template '{item.template_key}'")
        language = next((lang for lang in item.languages if lang in languages), None)
        if language is None:
            return Rendering(
                item.correlation_id, False, error_code="template_language_unavailable",
                error=f"template '{item.template_key}' exists in {sorted(languages)},"
                f" not in {list(item.languages)}",
            )
        template = languages[language]
        try:
            content = self._renderer.render(template, item.variables)
        except RenderError as exc:
            return Rendering(item.correlation_id, False, error_code=exc.code, error=exc.message)
        return Rendering(
            item.correlation_id, True, template.version, language, content.subject,
            content.body, content.html_body, content.push_title, content.push_body,
        )

    # -- management ---------------------------------------------------------------------------

    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        replies = [self.create(i) for i in message.items if isinstance(i, CreateTemplate)]
        self.send(message.reply_to, Replies(message.batch_id, tuple(replies)))

    def create(self, command: CreateTemplate) -> Reply:
        template = command.template
        for field, source, html in (
            ("subject", template.subject, False), ("body", template.body, False),
            ("html_body", template.html_body, True), ("push_title", template.push_title, False),
            ("push_body", template.push_body, False),
        ):
            problem = check_syntax(source, html)
            if problem:
                return Reply(command.correlation_id, 422, error_code="template_syntax_error",
                             message=f"{field}: {problem}", data={"field": field})
        try:
            conn = self._conn()
            if command.new_version:
                version = template_repo.next_version(conn, template.template_key,
                                                     template.language)
                template = Template(**{**template.to_json(), "version": version})
            stored = template_repo.create_template(conn, template)
        except template_repo.DuplicateTemplate:
            return Reply(command.correlation_id, 409, error_code="template_exists",
                         message=f"template '{template.template_key}' already exists in"
                         f" '{template.language}'; PUT creates a new version")
        except psycopg.Error as exc:
            self.log.error("template create failed", extra={"error": str(exc)})
            return Reply(command.correlation_id, 503, error_code="storage_unavailable",
                         message="template storage is unavailable, try again")
        try:
            self._cache.invalidate([stored.template_key])
        except redis.RedisError:
            pass
        return Reply(command.correlation_id, 201, data=stored.to_json(), message="template created")
