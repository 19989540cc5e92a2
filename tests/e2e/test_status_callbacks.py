"""Status callbacks end to end: a `send` key registers a URL and a secret; a real local HTTP
server (the caller's endpoint) receives each status change of that key's notifications, signed,
once, in order, through its own 500s; a callback that keeps failing past its window is a dead
letter an operator replays; a URL inside the network is refused by default."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from clarion.persistence import api_keys, database
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

SECRET = "a-caller-secret-" + uuid.uuid4().hex


class Endpoint:
    """The caller's endpoint: records every POST; answers 500 to the first `fail_first` and
    to every POST on a path in `always_fail`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = 0
        self.always_fail: set[str] = set()
        self.slow: dict[str, float] = {}  # path → seconds each POST there takes to answer
        self.in_flight: dict[str, int] = {}
        self.most_in_flight: dict[str, int] = {}
        self.lock = threading.Condition()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with endpoint.lock:
                    endpoint.in_flight[self.path] = endpoint.in_flight.get(self.path, 0) + 1
                    endpoint.most_in_flight[self.path] = max(
                        endpoint.most_in_flight.get(self.path, 0),
                        endpoint.in_flight[self.path])
                time.sleep(endpoint.slow.get(self.path, 0.0))
                with endpoint.lock:
                    endpoint.in_flight[self.path] -= 1
                    failing = endpoint.fail_first > 0 or self.path in endpoint.always_fail
                    endpoint.fail_first -= 1 if endpoint.fail_first > 0 else 0
                    endpoint.received.append({"path": self.path, "raw": raw.decode(),
                                              "headers": dict(self.headers),
                                              "answered": 500 if failing else 200})
                    endpoint.lock.notify_all()
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self, path: str, notification_id: str, count: int,
                 timeout: float = 20) -> list[dict[str, Any]]:
        """The first `count` callbacks about `notification_id` answered 200 on `path`."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                ok = [json.loads(r["raw"]) | {"_headers": r["headers"], "_raw": r["raw"]}
                      for r in self.received if r["path"] == path and r["answered"] == 200
                      and json.loads(r["raw"])["notification_id"] == notification_id]
                if len(ok) >= count or time.monotonic() > deadline:
                    return ok
                self.lock.wait(max(0.0, deadline - time.monotonic()))

    def answered(self, path: str) -> int:
        with self.lock:
            return sum(1 for r in self.received if r["path"] == path)

    def tries(self, path: str, notification_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["raw"]) for r in self.received if r["path"] == path
                    and json.loads(r["raw"])["notification_id"] == notification_id]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("stack-logs"),
                       sendgrid_webhook_public_key=SecretStr(simulator.state.sendgrid_public_key),
                       callbacks_allow_private=True, callback_backoff=0.2,
                       callback_retry_window=3.0,
                       # the endpoint's host breaker opens on its 500s: let it close soon
                       breaker_reset_timeout=1.0) as running:
        yield running


@pytest.fixture(autouse=True)
def simulator_reports_deliveries(stack: Stack) -> None:
    stack.simulator.state.reset()
    stack.simulator.state.update_config(
        {"sendgrid_event_webhook": stack.base_url + "/v1/providers/sendgrid/events"})


def send_key(stack: Stack) -> httpx.Client:
    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        key = api_keys.create_api_key(conn, f"app-{uuid.uuid4().hex[:6]}", scope="send")
    client = httpx.Client(base_url=stack.base_url, timeout=15,
                          headers={"Authorization": f"Bearer {key}"})
    stack.clients.append(client)
    return client


def send_email(stack: Stack, client: httpx.Client) -> str:
    user_id, template_key = stack.code_user_and_template()
    reply = client.post("/v1/notifications", json={"user_id": user_id,
                                                   "template_key": template_key,
                                                   "channels": ["email"],
                                                   "message_data": {"code": "7"}})
    assert reply.status_code == 202, reply.text
    return str(reply.json()["data"]["notification_id"])


def verified(callback: dict[str, Any], secret: str = SECRET) -> bool:
    """What a receiver does with `Clarion-Signature: t=...,v1=...`."""
    fields = dict(part.split("=", 1) for part in callback["_headers"]["Clarion-Signature"]
                  .split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.{callback['_raw']}".encode(),
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 300


def test_each_status_change_arrives_signed_once_in_order_through_the_endpoints_500s(
        stack: Stack, endpoint: Endpoint) -> None:
    client = send_key(stack)
    registered = client.put("/v1/callbacks", json={"url": endpoint.url + "/ok",
                                                   "secret": SECRET})
    assert registered.status_code == 200, registered.text
    assert "secret" not in registered.json()["data"]
    endpoint.fail_first = 2

    notification_id = send_email(stack, client)
    callbacks = endpoint.accepted("/ok", notification_id, 4)

    assert [(c["type"], c["channel"], c["previous_status"], c["status"]) for c in callbacks] == [
        ("channel.status_changed", "email", "queued", "sent"),
        ("notification.status_changed", None, "queued", "sent"),
        ("channel.status_changed", "email", "sent", "delivered"),
        ("notification.status_changed", None, "sent", "delivered")]
    assert len({c["id"] for c in callbacks}) == 4
    assert [c["sequence"] for c in callbacks] == sorted(c["sequence"] for c in callbacks)
    assert all(verified(c) for c in callbacks)
    assert not any(verified(c, secret="another-secret-entirely-000") for c in callbacks)
    tries = endpoint.tries("/ok", notification_id)
    assert [t["id"] for t in tries[:3]] == [callbacks[0]["id"]] * 3  # 500, 500, then 200
    log = client.get("/v1/callbacks/log", params={"notification_id": notification_id}).json()
    assert [(e["state"], e["attempts"]) for e in log["data"]][:1] == [("delivered", 3)]


def test_a_callback_failing_past_its_window_is_a_dead_letter_an_operator_replays(
        stack: Stack, endpoint: Endpoint) -> None:
    client = send_key(stack)
    endpoint.always_fail.add("/down")
    assert client.put("/v1/callbacks", json={"url": endpoint.url + "/down",
                                             "secret": SECRET}).status_code == 200
    notification_id = send_email(stack, client)
    admin = stack.client()

    deadline = time.monotonic() + 30
    dead: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not dead:
        rows = admin.get("/v1/dlq", params={"channel": "callback", "limit": 200}).json()["data"]
        dead = [r for r in rows if r["notification_id"] == notification_id]
        time.sleep(0.2)
    assert dead, "no dead letter within 30 s"
    assert dead[0]["error_code"] == "http_500"
    assert len(endpoint.tries("/down", notification_id)) >= 2  # retried before giving up

    endpoint.always_fail.discard("/down")
    assert admin.post(f"/v1/dlq/{dead[0]['dead_letter_id']}/replay").status_code == 200

    [first, *_] = endpoint.accepted("/down", notification_id, 1)
    assert (first["type"], first["status"]) == ("channel.status_changed", "sent")


def test_a_slow_endpoint_holds_up_only_its_own_callbacks(
        stack: Stack, endpoint: Endpoint) -> None:
    """Two callers: one whose endpoint takes 2 s per answer (on `localhost`), one answering at
    once (on 127.0.0.1: another host, with its own breaker and cap). The slow one never has
    more than the per-host cap in flight, and the fast one's callbacks do not wait behind it."""
    slow_key, fast_key = send_key(stack), send_key(stack)
    port = endpoint.url.rsplit(":", 1)[1]
    endpoint.slow["/slow"] = 2.0
    assert slow_key.put("/v1/callbacks", json={"url": f"http://localhost:{port}/slow",
                                               "secret": SECRET}).status_code == 200
    assert fast_key.put("/v1/callbacks", json={"url": endpoint.url + "/fast",
                                               "secret": SECRET}).status_code == 200
    slow_ids = [send_email(stack, slow_key) for _ in range(8)]
    deadline = time.monotonic() + 30
    while endpoint.answered("/slow") < 4:  # the slow endpoint is busy
        assert time.monotonic() < deadline, "the slow endpoint got no callback within 30 s"
        time.sleep(0.05)

    fast_id = send_email(stack, fast_key)
    fast = endpoint.accepted("/fast", fast_id, 4)

    assert len(fast) == 4
    slow_done = sum(len(endpoint.accepted("/slow", n, 0, timeout=0)) for n in slow_ids)
    assert slow_done < 4 * len(slow_ids)  # the slow caller's callbacks were still going
    assert endpoint.most_in_flight["/slow"] <= 4  # CLARION_CALLBACK_HOST_CONCURRENCY
    endpoint.slow.pop("/slow")


def test_the_endpoint_is_shown_without_its_secret_and_can_be_removed(
        stack: Stack, endpoint: Endpoint) -> None:
    client = send_key(stack)
    made = client.put("/v1/callbacks", json={"url": endpoint.url + "/shown"}).json()["data"]
    assert made["secret"].startswith("whsec_")  # made by Clarion, shown this once

    shown = client.get("/v1/callbacks").json()["data"]
    assert (shown["url"], "secret" in shown) == (endpoint.url + "/shown", False)
    assert client.delete("/v1/callbacks").status_code == 200
    gone = client.get("/v1/callbacks")
    assert (gone.status_code, gone.json()["error"]) == (404, "callback_not_registered")


@pytest.mark.parametrize("url", ["ftp://example.com/x", "not a url", "http:///x"])
def test_a_url_that_is_not_http_is_refused(stack: Stack, url: str) -> None:
    reply = send_key(stack).put("/v1/callbacks", json={"url": url, "secret": SECRET})
    assert (reply.status_code, reply.json()["error"]) == (422, "callback_url_refused")


def test_a_short_secret_is_refused(stack: Stack, endpoint: Endpoint) -> None:
    reply = send_key(stack).put("/v1/callbacks", json={"url": endpoint.url, "secret": "short"})
    assert (reply.status_code, reply.json()["error"]) == (422, "validation_error")


def test_by_default_an_address_inside_the_network_is_refused(
        provider_settings: Any, simulator: Any, tmp_path_factory: pytest.TempPathFactory,
        endpoint: Endpoint) -> None:
    with running_stack(provider_settings, simulator,
                       tmp_path_factory.mktemp("strict-logs")) as strict:
        client = send_key(strict)
        for url in (endpoint.url + "/x", "http://169.254.169.254/latest/meta-data",
                    "http://localhost:5432/", "http://[::1]:6379/"):
            reply = client.put("/v1/callbacks", json={"url": url, "secret": SECRET})
            assert (reply.status_code, reply.json()["error"]) == (422, "callback_url_refused")
            assert "CLARION_CALLBACKS_ALLOW_PRIVATE" in reply.json()["message"]
