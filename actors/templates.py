"""Templates actor: versions x languages, rendered in a Jinja2 sandbox, cached in Redis.

Takes:   RenderBatch → answers Rendered (the sender: the Gateway)
         SendBatch of CreateTemplateVersion, RetireTemplate, PreviewTemplate (of a stored
                     version, or of an unsaved draft: the console's editor)
                     → answers Replies, one Reply per item, to the batch's `reply_to`

Rendering is bounded (actors/rendering.py): an item by its time limit, a batch by its budget,
past which its remaining items are refused (`template_render_timeout`) unrendered, so a batch
of hostile templates holds this actor for seconds and it keeps answering everyone else.

This actor is the only writer of the template cache (one entry per key: the latest version of
each language): a new version or a retirement invalidates the key before the batch is answered,
so the next render, from the Gateway or a preview, uses what was just written. Cache hits and
misses are counted in Redis (`clarion:stats`, `cache:template:hit` / `cache:template:miss`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg
import redis
from jinja2 import TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

from clarion.actors.base import ClarionActor
from clarion.actors.messages import (
    CreateTemplateVersion,
    PreviewTemplate,
    RenderBatch,
    Rendered,
    Rendering,
    RenderItem,
    Replies,
    Reply,
    RetireTemplate,
    SendBatch,
)
from clarion.actors.rendering import (
    RenderBudget,
    Renderer,
    check_syntax,
    language_fallbacks,
    render_item,
)
from clarion.actors.sms_text import sms_segments
from clarion.actors.template_limits import BoundedSandbox
from clarion.persistence import cache as cache_mod
from clarion.persistence.near_cache import publish_invalidations
from clarion.persistence import templates as template_repo
from clarion.persistence.records import Template

_FIELDS = ("subject", "body", "html_body", "push_title", "push_body", "sms_body")
# Names every template may use without declaring them: the sandbox's own globals.
_GLOBALS = frozenset(BoundedSandbox().globals)


def _pack(languages: dict[str, Template]) -> dict[str, Any]:
    return {lang: t.to_json() for lang, t in languages.items()}


def _unpack(data: dict[str, Any]) -> dict[str, Template]:
    return {lang: Template.from_json(t) for lang, t in data.items()}


def undeclared_variables(template: Template, declared: tuple[str, ...]) -> dict[str, list[str]]:
    """The variables each field uses outside `declared`, by field (only fields that do)."""
    env = SandboxedEnvironment()
    found: dict[str, list[str]] = {}
    for name in _FIELDS:
        source = getattr(template, name)
        if source is None:
            continue
        try:
            used = meta.find_undeclared_variables(env.parse(source))
        except TemplateError:
            continue  # a syntax error is reported on its own, with its line
        extra = sorted(used - set(declared) - _GLOBALS)
        if extra:
            found[name] = extra
    return found


def _status(code: str) -> int:
    return 404 if code == "template_not_found" else 422


def refusal(correlation_id: str, template: Template,
            declared: tuple[str, ...] | None) -> Reply | None:
    """Why a new version (or a draft) is refused before anything renders, or None: a field
    that does not parse (`data.field` names it), or variables used but not declared."""
    for field in _FIELDS:
        problem = check_syntax(getattr(template, field), html=field == "html_body")
        if problem:
            return Reply(correlation_id, 422, error_code="template_syntax_error",
                         message=f"{field}: {problem}", data={"field": field})
    if declared is not None:
        extra = undeclared_variables(template, declared)
        if extra:
            names = sorted({name for names in extra.values() for name in names})
            return Reply(correlation_id, 422, error_code="template_variable_undeclared",
                         message="the template uses variables it does not declare: "
                         + ", ".join(names),
                         data={"variables": names, "fields": extra})
    return None


class Templates(ClarionActor):
    def setup(self) -> None:
        self._renderer = Renderer()
        # One cache entry per key: the latest version of each of its languages.
        self._cache = cache_mod.RecordCache[dict[str, Template]](
            cache_mod.connect(self.settings.redis_url),
            "clarion:template",
            cache_mod.TEMPLATE_TTL,
            _pack,
            _unpack,
            stats="template",
        )

    # -- rendering ----------------------------------------------------------------------------

    def receiveMsg_RenderBatch(self, message: RenderBatch, sender: Any) -> None:
        try:
            latest = self._latest({item.template_key for item in message.items
                                   if item.version is None})
            budget = RenderBudget()
            results = tuple(self._render_item(item, latest, budget) for item in message.items)
        except (psycopg.Error, OSError) as exc:
            self.log.error("template lookup failed", extra={"error": str(exc)})
            self.send(sender, Rendered(message.batch_id, (), error="storage_unavailable"))
            return
        # The latest versions looked up go back too: the Gateway keeps them (near cache) and
        # renders the next requests for these keys itself.
        self.send(sender, Rendered(message.batch_id, results, templates=latest))

    def _latest(self, keys: set[str]) -> dict[str, dict[str, Template]]:
        if not keys:
            return {}
        found: dict[str, dict[str, Template]] = self.deps.cached(
            lambda: self._cache.get_many(keys), {})
        missing = keys - found.keys()
        if missing:
            loaded: dict[str, dict[str, Template]] = {}
            latest = self.deps.stored(lambda conn: template_repo.fetch_latest(conn, missing))
            for (key, language), template in latest.items():
                loaded.setdefault(key, {})[language] = template
            found.update(loaded)
            self.deps.cached(lambda: self._cache.set_many(loaded), None)
        return found

    def _render_item(self, item: RenderItem, latest: dict[str, dict[str, Template]],
                     budget: RenderBudget) -> Rendering:
        if item.version is None:
            languages = latest.get(item.template_key, {})
        else:
            languages = {
                lang: t
                for (_, lang), t in template_repo.fetch_version(
                    self.deps.conn(), item.template_key, item.version
                ).items()
            }
        return render_item(self._renderer, item, languages, budget)

    # -- management ---------------------------------------------------------------------------

    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        replies: dict[str, Reply] = {}
        stale: set[str] = set()
        previews: list[PreviewTemplate] = []
        for item in message.items:
            if isinstance(item, PreviewTemplate):
                previews.append(item)
                continue
            reply, changed = self._write(item)
            replies[reply.correlation_id] = reply
            if changed:
                stale.add(changed)
        # Invalidate before previewing: a preview in the same batch as a write sees the write.
        self._invalidate(stale)
        replies.update(self.preview(previews))
        self.send(message.reply_to, Replies(
            message.batch_id,
            tuple(replies[getattr(i, "correlation_id", "")] for i in message.items)))

    def _write(self, item: Any) -> tuple[Reply, str | None]:
        """Carry out one write command: its reply, and the key it changed (if it did)."""
        correlation_id = getattr(item, "correlation_id", "")
        try:
            if isinstance(item, CreateTemplateVersion):
                reply = self.create(item)
                return reply, item.template.template_key if reply.status == 201 else None
            if isinstance(item, RetireTemplate):
                reply = self.retire(item)
                return reply, item.template_key if reply.status == 200 else None
        except psycopg.Error as exc:
            self.log.error("template write failed", extra={"error": str(exc)})
            return Reply(correlation_id, 503, error_code="storage_unavailable",
                         message="template storage is unavailable, try again"), None
        self.log.warning("unknown templates command", extra={"item_type": type(item).__name__})
        return Reply(correlation_id, 500, error_code="internal_error",
                     message="the templates actor does not know this command"), None

    def _invalidate(self, keys: set[str]) -> None:
        try:
            self._cache.invalidate(keys)
            # Every Gateway's process-local copy too (persistence/near_cache.py).
            publish_invalidations(self._cache.client, "template", keys)
        except redis.RedisError as exc:
            # The cache remembers them and deletes them before its next read.
            self.log.warning("template cache invalidation deferred", extra={"error": str(exc)})

    def create(self, command: CreateTemplateVersion) -> Reply:
        template = command.template
        declared = command.variables
        refused = refusal(command.correlation_id, template, declared)
        if refused is not None:
            return refused
        conn = self.deps.conn()
        try:
            if command.new_version:
                stored = template_repo.create_next(conn, template, declared)
            else:
                stored = template_repo.create_first(conn, template, declared)
        except template_repo.DuplicateTemplate:
            return Reply(command.correlation_id, 409, error_code="template_exists",
                         message=f"template '{template.template_key}' already exists in"
                         f" '{template.language}'; PUT creates a new version")
        except template_repo.UnknownTemplate:
            return Reply(command.correlation_id, 404, error_code="template_not_found",
                         message=f"no template '{template.template_key}'; POST creates it")
        data = {**stored.to_json(), "variables": None if declared is None else list(declared)}
        return Reply(command.correlation_id, 201, data=data,
                     message=f"template version {stored.version} created")

    def retire(self, command: RetireTemplate) -> Reply:
        retired = template_repo.retire(self.deps.conn(), command.template_key)
        if not retired:
            return Reply(command.correlation_id, 404, error_code="template_not_found",
                         message=f"no template '{command.template_key}'")
        return Reply(command.correlation_id, 200,
                     data={"template_key": command.template_key, "retired": True,
                           "versions_retired": retired},
                     message="template retired; notifications already sent keep their content")

    def preview(self, items: list[PreviewTemplate]) -> dict[str, Reply]:
        """Render each item as the Gateway would, without sending: one cache read for all
        the stored ones, and each draft on its own."""
        if not items:
            return {}
        budget = RenderBudget()
        replies = {i.correlation_id: self.preview_draft(i, budget)
                   for i in items if i.draft is not None}
        stored = [i for i in items if i.draft is None]
        if not stored:
            return replies
        try:
            latest = self._latest({i.template_key for i in stored if i.version is None})
            renderings = [self._render_item(RenderItem(
                i.correlation_id, i.template_key,
                language_fallbacks(i.language, self.settings.default_language),
                i.variables, i.version), latest, budget) for i in stored]
        except (psycopg.Error, OSError) as exc:
            self.log.error("template lookup failed", extra={"error": str(exc)})
            return {**replies, **{i.correlation_id: Reply(
                i.correlation_id, 503, error_code="storage_unavailable",
                message="template storage is unavailable, try again") for i in stored}}
        for item, r in zip(stored, renderings, strict=True):
            replies[item.correlation_id] = _preview_reply(item, r)
        return replies

    @staticmethod
    def preview_draft(item: PreviewTemplate, budget: RenderBudget) -> Reply:
        """An unsaved template checked as a new version would be, then rendered in the same
        sandbox, by a renderer of its own: compiled templates are kept by (key, language,
        version), and a draft's text is not that version's."""
        assert item.draft is not None
        draft = replace(item.draft, template_key=item.template_key, version=0)
        refused = refusal(item.correlation_id, draft, item.declared)
        if refused is not None:
            return refused
        rendering = render_item(Renderer(), RenderItem(
            item.correlation_id, draft.template_key, (draft.language,), item.variables),
            {draft.language: draft}, budget)
        return _preview_reply(item, rendering)


def _preview_reply(item: PreviewTemplate, r: Rendering) -> Reply:
    if not r.ok:
        code = r.error_code or "template_render_error"
        return Reply(item.correlation_id, _status(code), error_code=code, message=r.error or "")
    data = {"template_key": item.template_key, "language": r.language,
            "version": r.template_version or None, "subject": r.subject, "body": r.body,
            "html_body": r.html_body, "push_title": r.push_title, "push_body": r.push_body,
            "sms_body": r.sms_body, "sms_segments": sms_segments(r.sms_body)}
    return Reply(item.correlation_id, 200, data=data, message="rendered, not sent")
