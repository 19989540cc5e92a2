"""The Twilio SMS provider client, driven through the real `twilio` library against the simulator."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from clarion.actors.providers.base import DeliveryResult, Provider
from clarion.actors.providers.twilio_sms import TwilioSmsProvider
from clarion.simulator.server import SimulatorServer
from tests.actors.providers.leaks import no_thread_left

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-do-not-leak"
FROM_NUMBER = "+15005550006"  # Twilio's magic "valid sender" test number
SERVICE_SID = "MG" + "ab" * 16


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fails a test that leaves threads (beyond the module's simulator) behind."""
    with no_thread_left(ignore_prefix="clarion-simulator-"):
        yield


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    server.state.reset()
    return server


@pytest.fixture
def sms(sim: SimulatorServer) -> Iterator[TwilioSmsProvider]:
    provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, host=sim.base_url + "/", timeout=2.0)
    yield provider
    provider.close()


def _sms_message(to: str = "+15551230001", body: str = "Your code is 1234") -> dict:
    return {"notification_id": "n-3", "channel": "sms", "to": to, "body": body, "request_id": "r-3"}


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_provider_satisfies_the_provider_protocol(sms: TwilioSmsProvider) -> None:
    assert isinstance(sms, Provider)
    assert (sms.channel, sms.name) == ("sms", "twilio")


def test_an_sms_is_delivered_and_recorded_at_the_simulator(sim: SimulatorServer, sms: TwilioSmsProvider) -> None:
    result = sms.send(_sms_message())

    [record] = sim.state.messages("sms")
    assert result == DeliveryResult(ok=True, provider_message_id=record["id"])
    assert record["id"].startswith("SM")
    assert (record["to"], record["body"], record["from"]) == ("+15551230001", "Your code is 1234", FROM_NUMBER)
    assert (record["account_sid"], record["messaging_service_sid"]) == (ACCOUNT_SID, None)


def test_an_sms_through_a_messaging_service_names_the_service_and_no_from(sim: SimulatorServer) -> None:
    provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, messaging_service_sid=SERVICE_SID, host=sim.base_url)
    try:
        assert provider.send(_sms_message()).ok
    finally:
        provider.close()

    [record] = sim.state.messages("sms")
    assert (record["from"], record["messaging_service_sid"]) == (None, SERVICE_SID)
    assert repr(provider) == f"TwilioSmsProvider(host={sim.base_url!r}, from={SERVICE_SID!r})"


def test_a_status_callback_in_the_message_is_passed_to_twilio(sim: SimulatorServer, sms: TwilioSmsProvider) -> None:
    assert sms.send({**_sms_message(), "status_callback": "https://clarion.test/hooks/twilio?n=n-3"}).ok

    assert sim.state.messages("sms")[0]["status_callback"] == "https://clarion.test/hooks/twilio?n=n-3"


@pytest.mark.parametrize(
    ("to", "code"),
    [
        ("+15005550001", "twilio_21211"),  # invalid number
        ("+15005550004", "twilio_21610"),  # unsubscribed (replied STOP)
        ("+15005550009", "twilio_21614"),  # not a mobile number
        ("555-0100", "twilio_21211"),  # not E.164
    ],
)
def test_numbers_twilio_refuses_are_permanent_failures(
    sim: SimulatorServer, sms: TwilioSmsProvider, to: str, code: str
) -> None:
    result = sms.send(_sms_message(to=to))

    assert (result.ok, result.error_code, result.permanent) == (False, code, True)
    assert result.error.startswith(f"Twilio answered 400 (error {code.removeprefix('twilio_')}): ")
    assert sim.state.messages() == [] and len(sim.state.rejected("sms")) == 1


@pytest.mark.parametrize("message", [{"to": "+15551230001"}, {"to": "+15551230001", "body": ""}, {"body": "hi"}])
def test_a_message_without_number_or_body_is_permanent_and_sends_nothing(
    sim: SimulatorServer, sms: TwilioSmsProvider, message: dict
) -> None:
    result = sms.send(message)

    assert (result.ok, result.error_code, result.permanent) == (False, "twilio_invalid_message", True)
    assert sim.state.rejected() == []


@pytest.mark.parametrize(("status", "code"), [(500, "twilio_20500"), (503, "twilio_20503")])
def test_a_server_error_is_transient_after_exactly_one_request(
    sim: SimulatorServer, sms: TwilioSmsProvider, status: int, code: str
) -> None:
    sim.state.update_config({"fail_next": {"sms": 1}, "fail_status": status})

    result = sms.send(_sms_message())

    assert (result.ok, result.error_code, result.permanent) == (False, code, False)
    assert len(sim.state.rejected("sms")) == 1 and sim.state.messages() == []
    assert sms.send(_sms_message()).ok  # the connection stays usable after an error reply


def test_a_rate_limited_sms_is_transient_and_not_retried_by_the_library(
    sim: SimulatorServer, sms: TwilioSmsProvider
) -> None:
    sim.state.update_config({"rate_limit_next": {"sms": 2}})

    result = sms.send(_sms_message())

    assert (result.ok, result.error_code, result.permanent) == (False, "twilio_20429", False)
    assert result.retry_after is None  # Twilio sends no Retry-After, and the library exposes no headers
    assert len(sim.state.rejected("sms")) == 1


def test_rejected_credentials_are_permanent_and_the_token_never_appears(sim: SimulatorServer) -> None:
    sim.state.expect_twilio_credentials(ACCOUNT_SID, "the-right-token")
    provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, host=sim.base_url)
    try:
        result = provider.send(_sms_message())
    finally:
        provider.close()

    assert (result.ok, result.error_code, result.permanent) == (False, "twilio_20003", True)
    assert AUTH_TOKEN not in result.error and AUTH_TOKEN not in repr(provider)


def test_an_unreachable_twilio_is_a_connection_error() -> None:
    provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER,
                                 host=f"http://127.0.0.1:{_unused_port()}")
    try:
        result = provider.send(_sms_message())
    finally:
        provider.close()

    assert (result.ok, result.error_code, result.permanent) == (False, "connection_error", False)
    assert AUTH_TOKEN not in result.error


def test_a_twilio_reply_slower_than_the_timeout_is_a_timeout(sim: SimulatorServer) -> None:
    provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, host=sim.base_url, timeout=0.1)
    sim.state.update_config({"latency_ms": 400})
    try:
        started = time.monotonic()
        result = provider.send(_sms_message())
        elapsed = time.monotonic() - started
    finally:
        provider.close()

    assert elapsed < 0.35
    assert (result.ok, result.error_code, result.permanent) == (False, "timeout", False)
    # The slow request still lands: wait for it so it cannot leak into the next test.
    sim.state.wait_for(1, channel="sms", timeout=2)


@contextmanager
def _one_shot_server(reply: bytes) -> Iterator[str]:
    """The base URL of a server that, per connection, reads a request, sends `reply` and closes."""
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
                conn.sendall(reply)

    thread = threading.Thread(target=serve, name="clarion-simulator-one-shot")
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_the_auth_token_is_scrubbed_even_when_an_error_reply_echoes_it() -> None:
    body = json.dumps({"code": 20003, "message": f"bad token {AUTH_TOKEN}", "status": 401}).encode()
    reply = (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nConnection: close\r\n"
             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with _one_shot_server(reply) as base_url:
        provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, host=base_url)
        result = provider.send(_sms_message())
        provider.close()

    assert (result.error_code, result.permanent) == ("twilio_20003", True)
    assert AUTH_TOKEN not in result.error and "[redacted]" in result.error
    assert AUTH_TOKEN not in repr(provider)


def test_a_reply_without_a_twilio_error_body_uses_the_http_status_as_the_code() -> None:
    reply = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream"
    with _one_shot_server(reply) as base_url:
        provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, host=base_url)
        result = provider.send(_sms_message())
        provider.close()

    assert (result.ok, result.error_code, result.permanent) == (False, "twilio_502", False)


def test_a_keep_alive_connection_the_server_closed_is_replaced_not_reported() -> None:
    # The server answers with keep-alive and then closes the connection anyway (as an idle
    # timeout would): the next SMS must go out on a new connection, not fail.
    body = json.dumps({"sid": "SM" + "0" * 32, "status": "queued"}).encode()
    reply = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body), body)
    with _one_shot_server(reply) as base_url:
        provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, host=base_url)
        first = provider.send(_sms_message())
        time.sleep(0.05)  # the server's FIN arrives
        second = provider.send(_sms_message())
        provider.close()

    assert first == second == DeliveryResult(ok=True, provider_message_id="SM" + "0" * 32)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"account_sid": "", "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER},
        {"account_sid": ACCOUNT_SID, "auth_token": "", "from_number": FROM_NUMBER},
        {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN},
        {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER,
         "messaging_service_sid": SERVICE_SID},
        {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, "host": "127.0.0.1:80"},
    ],
)
def test_an_incomplete_configuration_is_refused_without_the_token_in_the_error(kwargs: dict) -> None:
    with pytest.raises(ValueError) as raised:
        TwilioSmsProvider(**kwargs)

    assert AUTH_TOKEN not in str(raised.value)


def test_closing_is_idempotent(sms: TwilioSmsProvider) -> None:
    assert sms.send(_sms_message()).ok

    sms.close()
    sms.close()


class _CountingConnections:
    """ASGI middleware: the client (address, port) of every provider request, i.e. its TCP connection."""

    def __init__(self, app: object) -> None:
        self.app = app
        self.clients: list[tuple[str, int]] = []

    async def __call__(self, scope: dict, receive: object, send: object) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_sim"):
            self.clients.append(tuple(scope["client"]))
        await self.app(scope, receive, send)  # type: ignore[operator]


def test_concurrent_sends_from_worker_threads_all_arrive_over_pooled_connections() -> None:
    srv = SimulatorServer()
    counter = srv.app = _CountingConnections(srv.app)
    with srv:
        provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, host=srv.base_url, pool_size=16)
        srv.state.update_config({"latency_ms": 20})  # keeps many calls in flight together
        try:
            with ThreadPoolExecutor(max_workers=16) as pool:
                results = list(pool.map(lambda i: provider.send(_sms_message(to=f"+1555123{i:04d}")), range(50)))
        finally:
            provider.close()
        records = srv.state.messages("sms")

    assert len(results) == 50 and all(r.ok for r in results)
    assert sorted(r["to"] for r in records) == sorted(f"+1555123{i:04d}" for i in range(50))
    assert len({r.provider_message_id for r in results}) == 50
    assert len(set(counter.clients)) <= 16  # keep-alive: at most one connection per thread


@pytest.mark.parametrize(("no_proxy", "code"), [("", "connection_error"), ("127.0.0.1", None)])
def test_sms_go_through_the_environments_proxy_unless_the_host_is_exempt(
    sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch, no_proxy: str, code: str | None
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_unused_port()}")  # a proxy that is down
    if no_proxy:
        monkeypatch.setenv("no_proxy", no_proxy)
    provider = TwilioSmsProvider(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, host=sim.base_url)
    try:
        assert provider.send(_sms_message()).error_code == code
    finally:
        provider.close()
