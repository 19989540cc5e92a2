"""The simulator's delivery events over real HTTP: SendGrid's signed Event Webhook and Twilio's status
callbacks, sent by the real `sendgrid` and `twilio` clients and caught by a real local receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import CustomArg, Mail
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client as TwilioClient

from clarion.simulator.server import SimulatorServer
from clarion.simulator.state import SimulatorState

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-for-callbacks"
FROM_NUMBER = "+15005550006"
NOTIFICATION_ID = "6f1c3a52-5d1e-4a57-9d59-3b1c2f0e9a01"
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


@dataclass
class Caught:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST and answers with `statuses` in turn
    (then 200), after `delay_s`."""

    url: str
    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    caught: list[Caught] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Caught]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.caught) >= count, timeout):
                raise TimeoutError(f"expected {count} request(s), have {len(self.caught)}")
            return list(self.caught)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server names handlers so
            rec = state["receiver"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            time.sleep(rec.delay_s)
            with rec.changed:
                rec.caught.append(Caught(self.path, dict(self.headers.items()), body, time.monotonic()))
                status = rec.statuses.pop(0) if rec.statuses else 200
                rec.changed.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet tests
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["receiver"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="event-receiver",
                              daemon=True)
    thread.start()
    try:
        yield state["receiver"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _configure(http: httpx.Client, **config: Any) -> dict[str, Any]:
    reply = http.put("/_sim/config", json=config)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _send_mail(sim: SimulatorServer, to: str | list[str] = "ada@example.com") -> str:
    """Sends through the real `sendgrid` client; returns the X-Message-Id."""
    client = SendGridAPIClient(api_key="SG.test-key", host=sim.base_url)
    client.client.timeout = 5
    mail = Mail(from_email="noreply@clarion.test", to_emails=to, subject="Your code",
                plain_text_content="1234")
    mail.custom_arg = CustomArg("notification_id", NOTIFICATION_ID)
    reply = client.send(mail)
    assert reply.status_code == 202
    return reply.headers["X-Message-Id"]


def _verified(public_key: str, caught: Caught) -> bool:
    webhook = EventWebhook()
    return bool(webhook.verify_signature(caught.body.decode(), caught.headers[SIGNATURE], caught.headers[TIMESTAMP],
                                         webhook.convert_public_key_to_ecdsa(public_key)))


class _ToSimulator(TwilioHttpClient):
    """The library's own transport, with https://api.twilio.com rebased onto the simulator."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=5)
        self._base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        parts = urlsplit(url)
        return super().request(method, self._base_url + parts.path, *args, **kwargs)


def _send_sms(sim: SimulatorServer, status_callback: str | None, to: str = "+15551230001") -> str:
    """Sends through the real `twilio` client; returns the message SID."""
    client = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, http_client=_ToSimulator(sim.base_url))
    optional = {} if status_callback is None else {"status_callback": status_callback}
    return str(client.messages.create(to=to, from_=FROM_NUMBER, body="Your code is 1234", **optional).sid)


# -- SendGrid Event Webhook ---------------------------------------------------------------------


def test_an_accepted_mail_brings_a_signed_event_array_carrying_its_custom_args(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver
) -> None:
    _configure(http, sendgrid_event_webhook=f"{receiver.url}/hooks/sendgrid?v=1")

    message_id = _send_mail(sim)

    [post] = sim.state.wait_for_events(1, kind="sendgrid")
    [caught] = receiver.wait_for(1)
    public_key = http.get("/_sim/events/sendgrid-public-key").json()["public_key"]
    assert public_key == sim.state.sendgrid_public_key
    assert caught.path == "/hooks/sendgrid?v=1"
    assert caught.headers["Content-Type"] == "application/json"
    assert abs(int(caught.headers[TIMESTAMP]) - time.time()) < 60
    assert _verified(public_key, caught)
    assert not _verified(public_key, Caught(caught.path, caught.headers, caught.body.replace(b"ada", b"eve"), 0))
    [event] = json.loads(caught.body)
    assert (event["email"], event["event"], event["notification_id"]) == ("ada@example.com", "delivered", NOTIFICATION_ID)
    assert event["sg_message_id"].startswith(message_id + ".")
    assert isinstance(event["timestamp"], int) and event["sg_event_id"]
    assert (post["kind"], post["url"], post["status"], post["tries"]) == (
        "sendgrid", f"{receiver.url}/hooks/sendgrid?v=1", 200, 1)
    assert post["payload"] == [event]
    assert http.get("/_sim/events", params={"kind": "sendgrid"}).json()["events"] == [post]


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("delivered", [{"event": "delivered"}]),
        ("bounce", [{"event": "bounce", "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 unknown user"}]),
        ("blocked", [{"event": "bounce", "type": "blocked"}]),
        ("dropped", [{"event": "dropped", "reason": "Invalid"}]),
        ("spamreport", [{"event": "delivered"}, {"event": "spamreport"}]),
        ("deferred", [{"event": "deferred", "attempt": "1"}]),
    ],
)
def test_each_email_outcome_has_sendgrids_event_fields(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver, outcome: str, expected: list[dict[str, str]]
) -> None:
    _configure(http, sendgrid_event_webhook=receiver.url, event_rules=[{"match": "*", "outcome": outcome}])

    _send_mail(sim)

    [caught] = receiver.wait_for(1)
    events = json.loads(caught.body)
    assert [{k: e[k] for k in fields} for e, fields in zip(events, expected, strict=True)] == expected
    assert all(e["notification_id"] == NOTIFICATION_ID for e in events)
    assert len({e["sg_event_id"] for e in events}) == len(events)
    if outcome == "deferred":
        assert events[0]["response"]


def test_rules_pick_each_recipients_outcome_and_the_first_match_wins(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver
) -> None:
    _configure(http, sendgrid_event_webhook=receiver.url, event_rules=[
        {"match": "+1555*", "outcome": "stop"},  # an SMS rule: skipped for mail
        {"match": "*@bounce.test", "outcome": "bounce"},
        {"match": "*.test", "outcome": "dropped"},
        {"match": "complain*", "outcome": "spamreport"},
        {"match": "quiet@*", "outcome": "none"},
    ])

    _send_mail(sim, ["a@bounce.test", "B@Drop.test", "complainer@example.com", "quiet@example.com",
                     "ada@example.com"])

    [caught] = receiver.wait_for(1)
    events = [(e["email"], e["event"]) for e in json.loads(caught.body)]
    assert events == [
        ("a@bounce.test", "bounce"),
        ("B@Drop.test", "dropped"),
        ("complainer@example.com", "delivered"),
        ("complainer@example.com", "spamreport"),
        ("ada@example.com", "delivered"),
    ]


def test_a_mail_whose_every_outcome_is_none_posts_nothing(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver
) -> None:
    _configure(http, sendgrid_event_webhook=receiver.url, event_rules=[{"match": "quiet@*", "outcome": "none"}])

    _send_mail(sim, "quiet@example.com")
    _send_mail(sim, "ada@example.com")

    [post] = sim.state.wait_for_events(1, kind="sendgrid")
    assert [e["email"] for e in post["payload"]] == ["ada@example.com"]
    assert len(receiver.wait_for(1)) == 1


def test_custom_args_of_a_personalization_override_the_mails_own(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver
) -> None:
    _configure(http, sendgrid_event_webhook=receiver.url)
    mail = {
        "personalizations": [{"to": [{"email": "ada@example.com"}], "cc": [{"email": "bob@example.com"}],
                              "custom_args": {"notification_id": "per-recipient", "event": "forged"}}],
        "custom_args": {"notification_id": "top", "request_id": "r-1"},
        "from": {"email": "noreply@clarion.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "x"}],
    }

    assert http.post("/v3/mail/send", json=mail, headers={"Authorization": "Bearer k"}).status_code == 202

    [caught] = receiver.wait_for(1)
    events = json.loads(caught.body)
    assert [(e["email"], e["event"], e["notification_id"], e["request_id"]) for e in events] == [
        ("ada@example.com", "delivered", "per-recipient", "r-1"),
        ("bob@example.com", "delivered", "per-recipient", "r-1"),
    ]


def test_a_receiver_answering_500_once_gets_the_post_again(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    _configure(http, sendgrid_event_webhook=receiver.url)

    _send_mail(sim)

    [post] = sim.state.wait_for_events(1)
    first, second = receiver.wait_for(2)
    assert (post["status"], post["tries"], post["error"]) == (200, 2, None)
    assert first.body == second.body
    assert _verified(sim.state.sendgrid_public_key, first) and _verified(sim.state.sendgrid_public_key, second)
    assert second.at - first.at >= 0.15  # the first backoff is 0.2 s


def test_a_post_nobody_answers_is_given_up_after_its_retries() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/events"
    with SimulatorServer(SimulatorState(webhook_backoff_s=(0.01, 0.01, 0.01))) as sim:
        sim.state.update_config({"sendgrid_event_webhook": closed})

        _send_mail(sim)

        [post] = sim.state.wait_for_events(1)
    assert (post["status"], post["tries"], post["settled"]) == (None, 4, True)
    assert "ConnectError" in post["error"]


def test_events_wait_for_event_delay_and_never_delay_the_202(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver
) -> None:
    receiver.delay_s = 1.0  # a slow receiver must not slow the provider call either
    _configure(http, sendgrid_event_webhook=receiver.url, event_delay_ms=300)

    started = time.monotonic()
    _send_mail(sim)
    accepted = time.monotonic()

    [caught] = receiver.wait_for(1)
    assert accepted - started < 0.8  # the post (0.3 s delay, then a 1 s reply) ran behind it
    assert caught.at - started >= 0.3 + 1.0
    assert sim.state.wait_for_events(1)[0]["status"] == 200


def test_clearing_messages_forgets_posts_and_abandons_pending_ones(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver
) -> None:
    _configure(http, sendgrid_event_webhook=receiver.url, event_delay_ms=200)
    _send_mail(sim, "abandoned@example.com")
    assert len(http.get("/_sim/events").json()["events"]) == 1

    assert http.delete("/_sim/messages").status_code == 204
    assert http.get("/_sim/events").json() == {"events": []}
    _send_mail(sim, "kept@example.com")

    [post] = sim.state.wait_for_events(1)
    assert post["payload"][0]["email"] == "kept@example.com"
    assert [json.loads(c.body)[0]["email"] for c in receiver.caught] == ["kept@example.com"]


def test_no_webhook_configured_means_no_events(sim: SimulatorServer) -> None:
    _send_mail(sim)

    assert sim.state.events() == []


# -- Twilio status callbacks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "status", "error_code"),
    [("delivered", "delivered", None), ("undelivered", "undelivered", "30003"), ("failed", "failed", "30006"),
     ("stop", "undelivered", "21610")],
)
def test_an_sms_with_a_status_callback_gets_a_signed_callback_with_its_final_status(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver, outcome: str, status: str, error_code: str | None
) -> None:
    _configure(http, event_rules=[{"match": "*@*", "outcome": "bounce"}, {"match": "+1555123*", "outcome": outcome}])
    callback = f"{receiver.url}/hooks/twilio?n={NOTIFICATION_ID}"

    sid = _send_sms(sim, callback)

    [caught] = receiver.wait_for(1)
    params = {key: values[0] for key, values in parse_qs(caught.body.decode(), strict_parsing=True).items()}
    assert caught.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert RequestValidator(AUTH_TOKEN).validate(callback, params, caught.headers["X-Twilio-Signature"])
    assert not RequestValidator("another-token").validate(callback, params, caught.headers["X-Twilio-Signature"])
    assert params.pop("ErrorCode", None) == error_code
    assert params == {"MessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT_SID, "From": FROM_NUMBER,
                      "To": "+15551230001", "MessageStatus": status, "SmsStatus": status, "ApiVersion": "2010-04-01"}
    [post] = sim.state.wait_for_events(1, kind="twilio")
    assert (post["url"], post["status"], post["payload"]["MessageSid"]) == (callback, 200, sid)
    assert AUTH_TOKEN not in json.dumps(sim.state.events())


def test_an_sms_without_a_status_callback_or_with_outcome_none_gets_no_callback(
    sim: SimulatorServer, http: httpx.Client, receiver: Receiver
) -> None:
    _configure(http, event_rules=[{"match": "+1555000*", "outcome": "none"}])

    _send_sms(sim, None)
    _send_sms(sim, f"{receiver.url}/none", to="+15550000001")
    _send_sms(sim, f"{receiver.url}/last")

    [post] = sim.state.wait_for_events(1, kind="twilio")
    assert post["url"] == f"{receiver.url}/last"
    assert [c.path for c in receiver.wait_for(1)] == ["/last"]


def test_a_callback_url_off_this_machine_is_recorded_but_never_requested(sim: SimulatorServer) -> None:
    _send_sms(sim, "https://clarion.test/hooks/twilio")

    [post] = sim.state.wait_for_events(1, kind="twilio")
    assert (post["status"], post["tries"], post["settled"]) == (None, 0, True)
    assert "localhost or an IP address" in post["error"]


# -- configuration -------------------------------------------------------------------------------


def test_event_config_has_defaults_and_bad_updates_change_nothing(http: httpx.Client, receiver: Receiver) -> None:
    defaults = http.get("/_sim/config").json()
    assert (defaults["sendgrid_event_webhook"], defaults["event_rules"], defaults["event_delay_ms"]) == (None, [], 0)
    good = _configure(http, sendgrid_event_webhook=receiver.url, event_delay_ms=5,
                      event_rules=[{"match": "*@bounce.test", "outcome": "bounce"}])

    for bad in (
        {"event_rules": [{"match": "*", "outcome": "exploded"}]},
        {"event_rules": [{"match": "*", "outcome": "bounce", "extra": 1}]},
        {"event_rules": [{"match": "", "outcome": "bounce"}]},
        {"event_rules": {"match": "*", "outcome": "bounce"}},
        {"event_delay_ms": -1},
        {"event_delay_ms": True},
        {"sendgrid_event_webhook": "ftp://127.0.0.1/events"},
        {"sendgrid_event_webhook": "https://hooks.example.com/sendgrid"},
        {"sendgrid_event_webhook": 5},
        {"event_delay_ms": 1, "event_rules": [{"match": "*", "outcome": "nope"}]},
    ):
        reply = http.put("/_sim/config", json=bad)
        assert reply.status_code == 400, bad
        assert reply.json()["error"]
    assert http.get("/_sim/config").json() == good
    assert _configure(http, sendgrid_event_webhook=None)["sendgrid_event_webhook"] is None


def test_events_can_be_filtered_by_kind_and_a_reset_keeps_the_signing_key(
    sim: SimulatorServer, http: httpx.Client
) -> None:
    key = sim.state.sendgrid_public_key

    assert http.get("/_sim/events", params={"kind": "fax"}).status_code == 400
    assert http.get("/_sim/events", params={"kind": "twilio"}).json() == {"events": []}
    sim.state.reset()
    assert http.get("/_sim/events/sendgrid-public-key").json() == {"public_key": key}
