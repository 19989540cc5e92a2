"""The SendGrid and FCM provider clients, driven through the real libraries against the simulator."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import firebase_admin
import pytest

from clarion.actors.providers.base import DeliveryResult, Provider
from clarion.actors.providers.fcm_push import FcmPushProvider
from clarion.actors.providers.sendgrid_email import SendGridEmailProvider
from clarion.simulator.credentials import write_service_account
from clarion.simulator.server import SimulatorServer
from tests.actors.providers.leaks import no_thread_left

API_KEY = "SG.clarion-test-key.do-not-leak"


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fails a test that leaves threads (beyond the module's simulator) or firebase apps behind."""
    with no_thread_left(ignore_prefix="clarion-simulator-"):
        yield
    assert firebase_admin._apps == {}


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    server.state.reset()
    return server


@pytest.fixture
def email(sim: SimulatorServer) -> SendGridEmailProvider:
    return SendGridEmailProvider(API_KEY, "noreply@clarion.test", host=sim.base_url + "/", timeout=2.0)


@pytest.fixture(scope="module")
def credentials_file(server: SimulatorServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    # Module-scoped: generating an RSA key costs a noticeable fraction of a second.
    path = tmp_path_factory.mktemp("fcm") / "sa.json"
    return str(write_service_account(path, token_uri=f"{server.base_url}/token"))


@pytest.fixture
def push(sim: SimulatorServer, credentials_file: str) -> Iterator[FcmPushProvider]:
    provider = FcmPushProvider(credentials_file, endpoint=sim.base_url, timeout=2.0)
    yield provider
    provider.close()


def _email_message(to: str = "ada@example.com", html_body: str | None = "<p>Hi <b>Ada</b></p>") -> dict:
    return {
        "notification_id": "n-1",
        "channel": "email",
        "to": to,
        "subject": "Welcome",
        "body": "Hi Ada",
        "html_body": html_body,
        "request_id": "r-1",
    }


def _push_message(*tokens: str) -> dict:
    return {
        "notification_id": "n-2",
        "channel": "push",
        "tokens": list(tokens),
        "title": "Order shipped",
        "body": "Arrives Tuesday",
        "data": {"order": "42", "kind": "shipping"},
        "request_id": "r-2",
    }


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- SendGrid --------------------------------------------------------------------


def test_both_providers_satisfy_the_provider_protocol(email: SendGridEmailProvider, push: FcmPushProvider) -> None:
    assert isinstance(email, Provider) and email.channel == "email"
    assert isinstance(push, Provider) and push.channel == "push"


def test_an_email_is_delivered_with_subject_text_and_html(sim: SimulatorServer, email: SendGridEmailProvider) -> None:
    result = email.send(_email_message())

    [record] = sim.state.messages("email")
    assert result == DeliveryResult(ok=True, provider_message_id=record["id"])
    assert (record["to"], record["subject"], record["body"]) == ("ada@example.com", "Welcome", "Hi Ada")
    assert record["html_body"] == "<p>Hi <b>Ada</b></p>"
    assert record["raw"]["from"] == {"email": "noreply@clarion.test"}
    assert record["raw"]["custom_args"] == {"notification_id": "n-1", "request_id": "r-1"}


def test_an_email_without_html_is_sent_as_plain_text_only(sim: SimulatorServer, email: SendGridEmailProvider) -> None:
    assert email.send(_email_message(html_body=None)).ok

    [record] = sim.state.messages("email")
    assert record["html_body"] is None
    assert [c["type"] for c in record["raw"]["content"]] == ["text/plain"]


def test_a_503_from_sendgrid_is_a_retryable_failure_after_exactly_one_request(
    sim: SimulatorServer, email: SendGridEmailProvider
) -> None:
    sim.state.update_config({"fail_next": {"email": 1}, "fail_status": 503})

    result = email.send(_email_message())

    assert (result.ok, result.error_code, result.permanent) == (False, "sendgrid_http_503", False)
    assert len(sim.state.rejected("email")) == 1
    assert sim.state.messages() == []


def test_a_429_from_sendgrid_carries_retry_after_from_the_rate_limit_reset(
    sim: SimulatorServer, email: SendGridEmailProvider
) -> None:
    sim.state.update_config({"rate_limit_next": {"email": 1}})

    result = email.send(_email_message())

    assert (result.ok, result.error_code, result.permanent) == (False, "sendgrid_http_429", False)
    assert result.retry_after is not None and 0.0 <= result.retry_after <= 2.0


def test_a_bad_request_is_a_permanent_failure(sim: SimulatorServer, email: SendGridEmailProvider) -> None:
    # The sendgrid helper lets an empty subject through; SendGrid (the simulator) answers 400.
    result = email.send({**_email_message(), "subject": ""})

    assert (result.ok, result.error_code, result.permanent) == (False, "sendgrid_http_400", True)
    assert "The subject is required. (subject)" in result.error
    assert len(sim.state.rejected("email")) == 1


def test_an_address_the_library_cannot_parse_is_permanent_and_sends_nothing(
    sim: SimulatorServer, email: SendGridEmailProvider
) -> None:
    result = email.send(_email_message(to="not-an-address"))

    assert (result.ok, result.error_code, result.permanent) == (False, "sendgrid_invalid_message", True)
    assert "'to' is not an email address" in result.error
    assert sim.state.rejected() == []


def test_a_rejected_api_key_is_permanent_and_never_appears_in_the_error(sim: SimulatorServer) -> None:
    provider = SendGridEmailProvider(" ", "noreply@clarion.test", host=sim.base_url)
    keyed = SendGridEmailProvider(API_KEY, "noreply@clarion.test", host=sim.base_url)
    sim.state.update_config({"fail_next": {"email": 1}})

    rejected = provider.send(_email_message())
    failed = keyed.send(_email_message())

    assert (rejected.error_code, rejected.permanent) == ("sendgrid_http_401", True)
    assert API_KEY not in failed.error and API_KEY not in repr(keyed)


def test_an_unreachable_sendgrid_is_a_connection_error() -> None:
    provider = SendGridEmailProvider(API_KEY, "noreply@clarion.test", host=f"http://127.0.0.1:{_unused_port()}")

    result = provider.send(_email_message())

    assert (result.ok, result.error_code, result.permanent) == (False, "connection_error", False)
    assert API_KEY not in result.error


def test_a_sendgrid_reply_slower_than_the_timeout_is_a_timeout(sim: SimulatorServer) -> None:
    provider = SendGridEmailProvider(API_KEY, "noreply@clarion.test", host=sim.base_url, timeout=0.1)
    sim.state.update_config({"latency_ms": 400})

    started = time.monotonic()
    result = provider.send(_email_message())

    assert time.monotonic() - started < 0.35
    assert (result.ok, result.error_code, result.permanent) == (False, "timeout", False)
    # The slow request still lands: wait for it so it cannot leak into the next test.
    sim.state.wait_for(1, channel="email", timeout=2)


def test_an_email_the_library_refuses_to_build_is_permanent_and_sends_nothing(
    sim: SimulatorServer, email: SendGridEmailProvider
) -> None:
    # The sendgrid helper rejects content that looks like an API key.
    result = email.send({**_email_message(), "body": "SG.abc123.def456"})

    assert (result.ok, result.error_code, result.permanent) == (False, "sendgrid_invalid_message", True)
    assert sim.state.messages() == [] and sim.state.rejected() == []


class _CountingConnections:
    """ASGI middleware: the client (address, port) of every request, i.e. its TCP connection."""

    def __init__(self, app: object) -> None:
        self.app = app
        self.clients: list[tuple[str, int]] = []
        self.paths: list[str] = []

    async def __call__(self, scope: dict, receive: object, send: object) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_sim"):
            self.clients.append(tuple(scope["client"]))
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)  # type: ignore[operator]


@pytest.fixture
def counting_sim() -> Iterator[tuple[SimulatorServer, _CountingConnections]]:
    srv = SimulatorServer()
    counter = srv.app = _CountingConnections(srv.app)
    with srv:
        yield srv, counter


def test_emails_reuse_one_keep_alive_connection(
    counting_sim: tuple[SimulatorServer, _CountingConnections],
) -> None:
    sim, counter = counting_sim
    provider = SendGridEmailProvider(API_KEY, "noreply@clarion.test", host=sim.base_url)

    results = [provider.send(_email_message(to=f"user{i}@example.com")) for i in range(5)]
    provider.close()

    assert all(r.ok for r in results) and len(sim.state.messages("email")) == 5
    assert len(counter.clients) == 5 and len(set(counter.clients)) == 1


def test_concurrent_emails_open_no_more_connections_than_the_pool_holds(
    counting_sim: tuple[SimulatorServer, _CountingConnections],
) -> None:
    sim, counter = counting_sim
    provider = SendGridEmailProvider(API_KEY, "noreply@clarion.test", host=sim.base_url, pool_size=4)
    sim.state.update_config({"latency_ms": 50})  # keeps the four calls of a round in flight together
    results: list[DeliveryResult] = []

    def worker(n: int) -> None:
        for i in range(5):
            results.append(provider.send(_email_message(to=f"user{n}-{i}@example.com")))

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    provider.close()

    assert len(results) == 20 and all(r.ok for r in results)
    assert len(sim.state.messages("email")) == 20
    assert len(set(counter.clients)) <= 4


@pytest.mark.parametrize(("status", "permanent"), [(413, True), (422, False), (502, False), (504, False)])
def test_every_sendgrid_error_status_keeps_the_librarys_meaning(
    sim: SimulatorServer, email: SendGridEmailProvider, status: int, permanent: bool
) -> None:
    sim.state.update_config({"fail_next": {"email": 1}, "fail_status": status})

    result = email.send(_email_message())

    assert (result.ok, result.error_code, result.permanent) == (False, f"sendgrid_http_{status}", permanent)
    assert result.error.startswith(f"SendGrid answered {status}: ")
    assert email.send(_email_message()).ok  # the connection stays usable after an error reply


@contextmanager
def _one_shot_server(reply: bytes | None) -> Iterator[str]:
    """The base URL of a server that, per connection, reads a request and sends `reply` (None:
    nothing), then closes it; for the transport failures the simulator cannot produce."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.02)  # so the loop sees `stop` promptly
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                if reply is not None:
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, name="clarion-simulator-one-shot")
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_connection_closed_before_the_reply_is_a_connection_error() -> None:
    with _one_shot_server(None) as base_url:
        result = SendGridEmailProvider(API_KEY, "noreply@clarion.test", host=base_url).send(_email_message())

    assert (result.ok, result.error_code, result.permanent) == (False, "connection_error", False)
    assert result.error.startswith("connection to SendGrid failed") and API_KEY not in result.error


def test_a_keep_alive_connection_the_server_closed_is_replaced_not_reported() -> None:
    # The server answers with keep-alive and then closes the connection anyway (as an idle
    # timeout would): the next email must go out on a new connection, not fail.
    reply = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nX-Message-Id: m-1\r\n\r\n"
    with _one_shot_server(reply) as base_url:
        provider = SendGridEmailProvider(API_KEY, "noreply@clarion.test", host=base_url)
        first = provider.send(_email_message())
        time.sleep(0.05)  # the server's FIN arrives
        second = provider.send(_email_message())
        provider.close()

    assert first == second == DeliveryResult(ok=True, provider_message_id="m-1")


def _proxy_env(monkeypatch: pytest.MonkeyPatch, proxy: str, no_proxy: str = "") -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", proxy)
    if no_proxy:
        monkeypatch.setenv("no_proxy", no_proxy)


@pytest.mark.parametrize(("no_proxy", "code"), [("", "connection_error"), ("127.0.0.1", None)])
def test_emails_go_through_the_environments_proxy_unless_the_host_is_exempt(
    sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch, no_proxy: str, code: str | None
) -> None:
    _proxy_env(monkeypatch, f"http://127.0.0.1:{_unused_port()}", no_proxy)  # a proxy that is down
    provider = SendGridEmailProvider(API_KEY, "noreply@clarion.test", host=sim.base_url)

    assert provider.send(_email_message()).error_code == code


# -- FCM -------------------------------------------------------------------------------


def test_a_push_is_delivered_to_every_token_with_title_body_and_data(
    sim: SimulatorServer, push: FcmPushProvider
) -> None:
    result = push.send(_push_message("device-token-aaaaaaaaaaaa", "device-token-bbbbbbbbbbbb"))

    assert result.ok and result.error_code is None
    records = sim.state.messages("push")
    assert [r["to"] for r in records] == ["device-token-aaaaaaaaaaaa", "device-token-bbbbbbbbbbbb"]
    for record in records:
        assert (record["title"], record["body"]) == ("Order shipped", "Arrives Tuesday")
        assert record["data"] == {"order": "42", "kind": "shipping"}
    assert [d["message_id"] for d in result.details] == [f"projects/clarion-sim/messages/{r['id']}" for r in records]
    assert result.details[0]["token"] == "device-token…"
    assert result.provider_message_id == result.details[0]["message_id"]


def test_an_unregistered_token_is_permanent_and_reported_in_full_for_removal(
    sim: SimulatorServer, push: FcmPushProvider
) -> None:
    result = push.send(_push_message("good-token-1", "unregistered-token-2"))

    assert (result.ok, result.error_code, result.permanent) == (False, "fcm_unregistered", True)
    good, gone = result.details
    assert good["ok"] is True
    assert gone["unregistered"] is True and gone["full_token"] == "unregistered-token-2"
    assert len(sim.state.messages("push")) == 1


@pytest.mark.parametrize(
    ("token", "code"), [("invalid-token", "fcm_invalid_argument"), ("sender-mismatch-1", "fcm_sender_id_mismatch")]
)
def test_tokens_fcm_rejects_outright_are_permanent_failures(push: FcmPushProvider, token: str, code: str) -> None:
    result = push.send(_push_message(token))

    assert (result.ok, result.error_code, result.permanent) == (False, code, True)


def test_a_quota_exceeded_push_carries_retry_after_and_is_not_slept_on(
    sim: SimulatorServer, push: FcmPushProvider
) -> None:
    sim.state.update_config({"rate_limit_next": {"push": 1}})

    started = time.monotonic()
    result = push.send(_push_message("device-1"))

    assert time.monotonic() - started < 0.5
    assert (result.ok, result.error_code, result.permanent, result.retry_after) == (
        False,
        "fcm_quota_exceeded",
        False,
        1.0,
    )
    assert len(sim.state.rejected("push")) == 1


@pytest.mark.parametrize(("status", "code"), [(503, "fcm_unavailable"), (500, "fcm_internal")])
def test_a_server_error_on_push_is_one_attempt_without_library_retries(
    sim: SimulatorServer, push: FcmPushProvider, status: int, code: str
) -> None:
    sim.state.update_config({"fail_next": {"push": 5}, "fail_status": status})

    result = push.send(_push_message("device-1", "device-2"))

    assert (result.ok, result.error_code, result.permanent) == (False, code, False)
    assert len(sim.state.rejected("push")) == 1  # and the second token was skipped, not tried
    assert result.details[1]["skipped"] is True


def test_a_push_slower_than_the_timeout_is_a_timeout(sim: SimulatorServer, credentials_file: str) -> None:
    provider = FcmPushProvider(credentials_file, endpoint=sim.base_url, timeout=0.2)
    try:
        assert provider.send(_push_message("warm-up")).ok  # fetch the access token first
        sim.state.update_config({"latency_ms": 500})

        result = provider.send(_push_message("device-1"))

        assert (result.ok, result.error_code, result.permanent) == (False, "timeout", False)
        sim.state.wait_for(2, channel="push", timeout=2)  # let the slow request land before the next test
    finally:
        provider.close()


def test_an_unreachable_fcm_endpoint_is_a_connection_error(sim: SimulatorServer, credentials_file: str) -> None:
    provider = FcmPushProvider(credentials_file, endpoint=f"http://127.0.0.1:{_unused_port()}")
    try:
        result = provider.send(_push_message("device-1"))
    finally:
        provider.close()

    assert (result.ok, result.error_code, result.permanent) == (False, "connection_error", False)


def test_an_unreachable_token_endpoint_is_reported_as_such(sim: SimulatorServer, tmp_path: Path) -> None:
    path = write_service_account(tmp_path / "sa.json", token_uri=f"http://127.0.0.1:{_unused_port()}/token")
    provider = FcmPushProvider(str(path), endpoint=sim.base_url)
    try:
        result = provider.send(_push_message("device-1"))
    finally:
        provider.close()

    assert (result.ok, result.error_code, result.permanent) == (False, "fcm_token_endpoint", False)
    assert sim.state.messages() == []


def test_a_revoked_access_token_is_refreshed_and_the_push_still_goes_through(
    sim: SimulatorServer, push: FcmPushProvider
) -> None:
    assert push.send(_push_message("device-1")).ok
    sim.state.revoke_tokens()

    assert push.send(_push_message("device-2")).ok
    assert [r["status"] for r in sim.state.rejected("push")] == [401]


def test_non_string_data_is_refused_before_any_request(sim: SimulatorServer, push: FcmPushProvider) -> None:
    result = push.send({**_push_message("device-1"), "data": {"count": 3}})

    assert (result.ok, result.error_code, result.permanent) == (False, "fcm_invalid_message", True)
    assert sim.state.rejected() == [] and sim.state.messages() == []


def test_a_push_without_tokens_is_permanent(push: FcmPushProvider) -> None:
    result = push.send(_push_message())

    assert (result.ok, result.error_code, result.permanent) == (False, "fcm_no_tokens", True)


def test_closing_deletes_the_firebase_app_and_later_sends_fail_cleanly(credentials_file: str, sim: SimulatorServer) -> None:
    provider = FcmPushProvider(credentials_file, endpoint=sim.base_url, app_name="clarion-close-test")
    assert "clarion-close-test" in firebase_admin._apps

    provider.close()
    provider.close()

    assert "clarion-close-test" not in firebase_admin._apps
    assert provider.send(_push_message("device-1")).error_code == "provider_closed"


def test_concurrent_pushes_from_worker_threads_all_arrive(sim: SimulatorServer, push: FcmPushProvider) -> None:
    results: list[DeliveryResult] = []
    workers = [
        threading.Thread(target=lambda i=i: results.append(push.send(_push_message(f"device-{i}")))) for i in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert all(r.ok for r in results) and len(results) == 8
    assert sorted(r["to"] for r in sim.state.messages("push")) == sorted(f"device-{i}" for i in range(8))


def test_concurrent_pushes_keep_one_connection_per_thread_when_the_pool_is_sized_to_them(
    counting_sim: tuple[SimulatorServer, _CountingConnections], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim, counter = counting_sim
    path = write_service_account(tmp_path / "sa.json", token_uri=f"{sim.base_url}/token")
    provider = FcmPushProvider(str(path), endpoint=sim.base_url, pool_size=12)
    try:
        assert provider.send(_push_message("warm-up")).ok  # the access token, fetched once
        sim.state.update_config({"latency_ms": 50})
        results: list[DeliveryResult] = []

        def worker(n: int) -> None:
            for i in range(3):
                results.append(provider.send(_push_message(f"device-{n}-{i}")))

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    finally:
        provider.close()

    assert len(results) == 36 and all(r.ok for r in results)
    fcm_clients = {c for c, path in zip(counter.clients, counter.paths) if "/messages:send" in path}
    assert len(fcm_clients) <= 12
    # With firebase-admin's own pool (10), the connections of the last two threads to finish a
    # round are closed ("Connection pool is full") and reopened on the next.
    assert "Connection pool is full" not in caplog.text


@pytest.mark.parametrize(("no_proxy", "code"), [("", "connection_error"), ("127.0.0.1", None)])
def test_pushes_go_through_the_environments_proxy_unless_the_host_is_exempt(
    sim: SimulatorServer, credentials_file: str, monkeypatch: pytest.MonkeyPatch, no_proxy: str,
    code: str | None,
) -> None:
    # The proxy is read when the provider is made (requests no longer reads the environment on
    # every call); the token endpoint, reached by google-auth's own session, stays direct.
    _proxy_env(monkeypatch, f"http://127.0.0.1:{_unused_port()}", no_proxy)
    provider = FcmPushProvider(credentials_file, endpoint=sim.base_url)
    monkeypatch.delenv("http_proxy")
    try:
        assert provider.send(_push_message("device-1")).error_code == code
    finally:
        provider.close()
