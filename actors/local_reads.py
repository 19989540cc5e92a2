"""LocalReads: the Gateway's hot read path, without a round trip to Users or Templates.

    users      a NearCache of the profiles Users sent (evicted by Users' writes)
    templates  a NearCache of the latest versions Templates sent, by key (evicted by its writes)
    render     renders here what it can: a template it holds, in the sandbox the Templates actor
               uses (same rule, `render_item`), within a small time budget

Users and Templates stay the only writers and the authority: a miss, a requested version, or a
template that ran out of the local budget goes to them as before. A template that once ran out
of time here is always left to the Templates actor (its full limits, its own process), so a
hostile template holds the Gateway for at most `LOCAL_ITEM_SECONDS`, once.
"""

from __future__ import annotations

import redis

from clarion.actors.messages import RenderItem, Rendering
from clarion.actors.rendering import Renderer, RenderBudget, RenderError, render_item
from clarion.persistence import cache as cache_mod
from clarion.persistence.near_cache import NearCache
from clarion.persistence.records import Template, User

LOCAL_ITEM_SECONDS = 0.05
LOCAL_BATCH_SECONDS = 0.25


class LocalReads:
    def __init__(self, client: redis.Redis) -> None:
        self.users: NearCache[User] = NearCache(client, "user")
        self.templates: NearCache[dict[str, Template]] = NearCache(client, "template")
        self._renderer = Renderer()
        self._slow: set[tuple[str, str, int]] = set()  # (key, language, version)
        self._client = client
        # Hits served here, added to the shared cache statistics on the tick (`flush_stats`):
        # one Redis call a second instead of one per batch.
        self._hits = {"user": 0, "template": 0}

    def connect(self) -> None:
        """Subscribe whichever cache is not (at start, and on each tick after a drop)."""
        for cache in (self.users, self.templates):
            if not cache.subscribed:
                cache.connect()

    def filenos(self) -> list[int]:
        return [f for f in (self.users.fileno(), self.templates.fileno()) if f is not None]

    def drain(self) -> None:
        self.users.drain()
        self.templates.drain()

    def close(self) -> None:
        self.users.close()
        self.templates.close()

    def users_held(self, user_ids: set[str]) -> dict[str, User]:
        found = self.users.get_many(user_ids)
        self._hits["user"] += len(found)
        return found

    def flush_stats(self) -> None:
        """Count the hits served here in `clarion:stats`, as the shared caches count theirs."""
        hits, self._hits = self._hits, {"user": 0, "template": 0}
        pipe = self._client.pipeline(transaction=False)
        for name, count in hits.items():
            if count:
                pipe.hincrby(cache_mod.STATS_KEY, cache_mod.stats_fields(name)[0], count)
        if any(hits.values()):
            try:
                pipe.execute()
            except redis.RedisError:
                for name, count in hits.items():
                    self._hits[name] += count  # kept for the next tick
                raise

    def render(self, items: list[RenderItem]) -> tuple[list[Rendering], list[RenderItem]]:
        """Render what can be rendered here; (renderings, the items for Templates)."""
        done: list[Rendering] = []
        remote: list[RenderItem] = []
        budget = RenderBudget(LOCAL_BATCH_SECONDS, per_item=LOCAL_ITEM_SECONDS)
        known = self.templates.get_many({i.template_key for i in items if i.version is None})
        for item in items:
            languages = known.get(item.template_key)
            template = _chosen(item, languages)
            if item.version is not None or languages is None or (
                    template is not None and _identity(template) in self._slow):
                remote.append(item)
                continue
            try:
                budget.for_item()
            except RenderError:  # the local budget is spent: the rest go to Templates
                remote.append(item)
                continue
            self._hits["template"] += 1
            rendering = render_item(self._renderer, item, languages, budget)
            if rendering.error_code == "template_render_timeout" and template is not None:
                self._slow.add(_identity(template))
                remote.append(item)
                continue
            done.append(rendering)
        return done, remote


def _chosen(item: RenderItem, languages: dict[str, Template] | None) -> Template | None:
    if not languages:
        return None
    return next((languages[lang] for lang in item.languages if lang in languages), None)


def _identity(template: Template) -> tuple[str, str, int]:
    return template.template_key, template.language, template.version
