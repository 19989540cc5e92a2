"""Finding: template text comes from API callers, and the sandbox bounded neither memory nor a
batch's time. `'x'.ljust(10**7)`, `''|center(10**7)` and `'%010000000d' % 1` each built 10 MB
before the output limit refused them (`ljust(4*10**10)`: 40 GB in one uninterruptible call), and
a batch of templates that always time out held the one Templates actor for a second per item.

Now each such construct is refused before it allocates, and a batch has a time budget: past it,
its items are refused (`template_render_timeout`) and the Templates actor keeps answering. (The
pin on jinja2>=3.1.6, for its sandbox escapes, is in setup.cfg.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

# Ten thousand million iterations of the body.
LOOPS = "{{% for i in range(100000) %}}{{% for j in range(100000) %}}{}{{% endfor %}}{{% endfor %}}"
HOSTILE = {
    "ljust": ("{{ 'x'.ljust(10**7) }}", "template_output_too_large"),
    "ljust_40_gb": ("{{ 'x'.ljust(4*10**10) }}", "template_output_too_large"),
    "center_filter": ("{{ ''|center(10**7) }}", "template_output_too_large"),
    "percent_width": ("{{ '%010000000d' % 1 }}", "template_output_too_large"),
    "format_width": ("{{ '{:>99999999}'.format(1) }}", "template_output_too_large"),
    "format_filter": ("{{ '%010000000d'|format(1) }}", "template_output_too_large"),
    "repetition": ("{{ 'x' * 10**9 }}", "template_output_too_large"),
    "range_bomb": ("{% for i in range(10**9) %}{% endfor %}", "template_output_too_large"),
    "for_bomb_output": (LOOPS.format("x"), "template_output_too_large"),
    "for_bomb_in_a_macro": ("{% macro m() %}" + LOOPS.format("xx") + "{% endmacro %}"
                            "{{ m()|length }}", "template_output_too_large"),
    "for_bomb_silent": (LOOPS.format(""), "template_render_timeout"),
    "extend_doubling": ("{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}",
                        "template_unsafe"),
    "concat_doubling": ("{% set ns = namespace(s='x') %}{% for i in range(40) %}"  # noqa: ISC004
                        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
                        "template_output_too_large"),
    "join_separator": ("{{ range(100000)|join('x' * 1000) }}", "template_output_too_large"),
    "replace_empty": ("{{ ('a' * 1000)|replace('', 'b' * 1000) }}", "template_output_too_large"),
    "to_bytes": ("{{ (1).to_bytes(10**10, 'big') }}", "template_output_too_large"),
    "batch_fill": ("{{ [0]|batch(10**9, 'x')|list }}", "template_output_too_large"),
    "integer_power": ("{{ ((10**128)**128)**128 }}", "template_output_too_large"),
}


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("templates")) as running:
        yield running


def _template(client: httpx.Client, body: str) -> str:
    key = f"t-{uuid.uuid4().hex[:8]}"
    reply = client.post("/v1/templates", json={"template_key": key, "subject": "s", "body": body})
    assert reply.status_code == 201, reply.text
    return key


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_each_hostile_construct_is_refused_before_it_allocates(stack: Stack) -> None:
    client = stack.client()
    templates_pid = stack.actors()["templates"]["pid"]
    before = _peak_rss_mb(templates_pid)
    refused = {}
    for name, (body, _) in HOSTILE.items():
        reply = client.post("/v1/templates/render",
                            json={"template_key": _template(client, body), "message_data": {}})
        refused[name] = (reply.status_code, reply.json()["error"])

    assert refused == {name: (422, code) for name, (_, code) in HOSTILE.items()}
    assert stack.actors()["templates"]["pid"] == templates_pid  # no crash, no restart
    assert _peak_rss_mb(templates_pid) - before < 32  # not one of them built its 10 MB
    # Nothing generates text for nothing either.
    lipsum = client.post("/v1/templates/render", json={
        "template_key": _template(client, "{{ lipsum(10**6) }}"), "message_data": {}})
    assert lipsum.json()["error"] == "template_variable_missing"


def test_templates_keeps_answering_while_a_batch_of_slow_templates_runs(stack: Stack) -> None:
    client = stack.client()
    slow = _template(client, HOSTILE["for_bomb_silent"][0])
    normal = _template(client, "Hello {{ name }}")
    user = f"u-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/users", json={"user_id": user,
                                          "email_address": f"{user}@example.com"}).status_code == 201
    batch: dict[str, Any] = {}

    def send_hostile_batch() -> None:
        started = time.monotonic()
        reply = stack.client().post("/v1/notifications/batch", json={"notifications": [
            {"user_id": user, "template_key": slow} for _ in range(30)]})
        batch.update(reply=reply, took=time.monotonic() - started)

    hostile = threading.Thread(target=send_hostile_batch)
    hostile.start()
    time.sleep(0.5)  # the Templates actor is in the middle of the batch
    started = time.monotonic()
    reply = client.post("/v1/templates/render",
                        json={"template_key": normal, "message_data": {"name": "Ada"}})
    normal_took = time.monotonic() - started
    hostile.join(30)

    assert reply.status_code == 200 and reply.json()["data"]["body"] == "Hello Ada"
    # Once without a budget: 30 s (a second per item). Now the batch's 3 s, and then some.
    assert normal_took < 5, normal_took
    assert batch["reply"].status_code == 200 and batch["took"] < 8, batch
    results = batch["reply"].json()["data"]
    assert {r["error"] for r in results} == {"template_render_timeout"}
    assert sum("before this item" in r["message"] for r in results) >= 25
