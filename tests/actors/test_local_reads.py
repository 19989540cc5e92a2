"""The Gateway's own renders (actors/local_reads.py): what it holds it renders, the rest it
leaves to the Templates actor, and a template too slow for it is left there for good."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from clarion.actors.local_reads import LocalReads
from clarion.actors.messages import RenderItem
from clarion.config.settings import Settings
from clarion.persistence import cache
from clarion.persistence.records import Template

pytestmark = pytest.mark.integration

# Busy for far longer than the Gateway's 50 ms, within the output limit.
SLOW = "{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}done"


@pytest.fixture
def reads(test_settings: Settings) -> Iterator[LocalReads]:
    held = LocalReads(cache.connect(test_settings.redis_url))
    held.connect()
    yield held
    held.close()


def _item(key: str, version: int | None = None) -> RenderItem:
    return RenderItem(uuid.uuid4().hex, key, ("fr", "en"), {"name": "Ada"}, version)


def test_a_held_template_is_rendered_here_in_the_first_language_it_has(
        reads: LocalReads) -> None:
    key = f"t-{uuid.uuid4().hex[:6]}"
    reads.templates.put_many({key: {"en": Template(key, "en", 2, "Hi {{ name }}", "Body")}},
                             reads.templates.now())

    done, remote = reads.render([_item(key), _item("not-held"), _item(key, version=1)])

    assert [r.ok for r in done] == [True] and remote and len(remote) == 2
    assert (done[0].subject, done[0].language, done[0].template_version) == ("Hi Ada", "en", 2)


def test_a_template_too_slow_for_the_gateway_is_left_to_templates_for_good(
        reads: LocalReads) -> None:
    key = f"t-{uuid.uuid4().hex[:6]}"
    reads.templates.put_many({key: {"en": Template(key, "en", 1, SLOW, "Body")}},
                             reads.templates.now())

    started = time.monotonic()
    done, remote = reads.render([_item(key)])
    first = time.monotonic() - started
    started = time.monotonic()
    done_again, remote_again = reads.render([_item(key)])
    second = time.monotonic() - started

    assert done == [] and len(remote) == 1 and first < 0.5  # stopped at the local limit
    assert done_again == [] and len(remote_again) == 1 and second < 0.01  # not tried again
