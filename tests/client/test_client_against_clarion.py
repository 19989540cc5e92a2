"""The Python client against a real Clarion: a send is delivered, lists are walked page by page,
refusals arrive as typed errors with Clarion's code and request id, a lost answer is retried with
the same idempotency key and sends once, and users, templates, scheduled sends, suppressions,
status callbacks and dead letters round-trip through it."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from clarion_client import (
    AsyncClarion,
    Clarion,
    Conflict,
    NotFound,
    ValidationError,
    parse_callback,
)
from clarion_client.models import Notification

from tests.stack import Stack

pytestmark = pytest.mark.e2e

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
DONE = {"sent", "delivered", "partially_sent", "failed"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(clarion: Clarion, notification_id: str, statuses: set[str],
             deadline: float = 30.0) -> Notification:
    """The notification once its status is one of `statuses` (or as it is at the deadline)."""
    give_up = time.monotonic() + deadline
    while True:
        found = clarion.notifications.get(notification_id)
        if found.status in statuses or time.monotonic() > give_up:
            return found
        time.sleep(0.05)


@pytest.fixture(scope="module")
def template(clarion: Clarion) -> str:
    key = unique("client")
    clarion.templates.create(key, subject="Code {{ code }}", body="Your code: {{ code }}",
                             push_title="Code", push_body="{{ code }}", variables=["code"])
    return key


@pytest.fixture
def user(clarion: Clarion) -> str:
    user_id = unique("u")
    clarion.users.create(user_id, email_address=f"{user_id}@example.com")
    return user_id


# -- sending ------------------------------------------------------------------------------------


def test_a_notification_sent_through_the_client_is_delivered(
        clarion: Clarion, user: str, template: str) -> None:
    accepted = clarion.notifications.send(user, template, {"code": "1234"}, channels=["email"])

    assert accepted.status == "queued" and accepted.channels == {"email": "queued"}
    final = wait_for(clarion, accepted.notification_id, DONE)
    assert final.status == "sent"
    assert final.channels["email"]["status"] == "sent"
    assert final.user_id == user and final.template_key == template


def test_a_batch_answers_each_item_in_order(clarion: Clarion, user: str, template: str) -> None:
    batch = clarion.notifications.send_batch([
        {"user_id": user, "template_key": template, "message_data": {"code": "1"},
         "channels": ["email"]},
        {"user_id": unique("ghost"), "template_key": template, "message_data": {"code": "2"}},
    ])

    assert (batch.accepted, batch.refused) == (1, 1)
    ok, refused = batch.items
    assert ok.success and ok.notification is not None
    assert ok.notification.channels == {"email": "queued"}
    assert (refused.status, refused.error) == (404, "user_not_found")
    assert isinstance(refused.exception(), NotFound)


def test_a_scheduled_notification_is_cancelled(clarion: Clarion, user: str,
                                               template: str) -> None:
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    accepted = clarion.notifications.send(user, template, {"code": "9"}, channels=["email"],
                                          send_at=tomorrow)
    assert accepted.status == "scheduled" and accepted.scheduled_for is not None

    cancelled = clarion.notifications.cancel(accepted.notification_id)

    assert cancelled.status == "cancelled" and cancelled.cancelled_channels == ["email"]
    assert clarion.notifications.get(accepted.notification_id).status == "cancelled"
    with pytest.raises(Conflict) as caught:
        clarion.notifications.cancel(accepted.notification_id)
    assert caught.value.code == "not_cancellable"


def test_the_same_idempotency_key_gets_the_first_answer(clarion: Clarion, user: str,
                                                        template: str) -> None:
    key = unique("order")
    first = clarion.notifications.send(user, template, {"code": "5"}, idempotency_key=key)
    again = clarion.notifications.send(user, template, {"code": "5"}, idempotency_key=key)

    assert again.notification_id == first.notification_id
    assert clarion.notifications.list(user_id=user).meta.total == 1


class LoseFirstAnswer(httpx.BaseTransport):
    """A real connection to Clarion that loses the answer to the first send: the request
    reaches Clarion and is processed, then the client sees a read timeout."""

    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.sends: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/notifications":
            self.sends.append(request)
            if len(self.sends) == 1:
                response.read()
                response.close()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    def close(self) -> None:
        self.real.close()


def test_a_send_whose_answer_is_lost_is_retried_with_its_key_and_sent_once(
        stack: Stack, clarion: Clarion, user: str, template: str) -> None:
    transport = LoseFirstAnswer()
    with Clarion(stack.base_url, stack.api_key, transport=transport) as flaky:
        accepted = flaky.notifications.send(user, template, {"code": "42"}, channels=["email"])

    assert len(transport.sends) == 2
    keys = {r.headers["idempotency-key"] for r in transport.sends}
    assert len(keys) == 1
    [only] = clarion.notifications.list(user_id=user).items
    assert only.notification_id == accepted.notification_id
    assert wait_for(clarion, accepted.notification_id, DONE).status == "sent"


# -- typed errors -------------------------------------------------------------------------------


def test_a_bad_request_is_a_validation_error_with_its_code_fields_and_request_id(
        clarion: Clarion, user: str, template: str) -> None:
    with pytest.raises(ValidationError) as caught:
        clarion.notifications.send(user, template, {"code": "1"}, priority="urgent",
                                   request_id="client-e2e-bad-request")

    error = caught.value
    assert (error.status, error.code) == (422, "validation_error")
    assert [f["field"] for f in error.fields] == ["priority"]
    assert error.request_id == "client-e2e-bad-request"  # X-Request-ID, as Clarion returned it


def test_an_unknown_user_is_not_found_with_its_code_and_request_id(
        clarion: Clarion, template: str) -> None:
    with pytest.raises(NotFound) as sending:
        clarion.notifications.send(unique("nobody"), template, {"code": "1"})
    with pytest.raises(NotFound) as reading:
        clarion.users.get(unique("nobody"))

    for error in (sending.value, reading.value):
        assert (error.status, error.code) == (404, "user_not_found")
        assert error.request_id is not None and HEX_ID.match(error.request_id)
        assert error.message
    assert sending.value.idempotency_key is not None


# -- pages --------------------------------------------------------------------------------------


def test_iterating_walks_every_page_of_each_list(clarion: Clarion, template: str) -> None:
    users = [clarion.users.create(unique("paged")).user_id for _ in range(5)]
    first_page = clarion.users.list(limit=2)
    walked = [u.user_id for u in clarion.users.iterate(limit=2)]
    assert set(users) <= set(walked)
    assert len(walked) == len(set(walked)) >= first_page.meta.total

    receiver = users[0]
    clarion.users.update(receiver, email_address=f"{receiver}@example.com")
    sent = {clarion.notifications.send(receiver, template, {"code": str(i)},
                                       channels=["email"]).notification_id for i in range(3)}
    assert {n.notification_id for n in clarion.notifications.iterate(user_id=receiver,
                                                                     limit=1)} == sent

    assert template in {t["template_key"] for t in clarion.templates.iterate(limit=1)}

    addresses = [f"{unique('paged')}@example.com" for _ in range(3)]
    for address in addresses:
        clarion.suppressions.add(address)
    assert set(addresses) <= {s.address for s in clarion.suppressions.iterate(limit=2)}
    clarion.suppressions.remove(addresses[0], reason="paging test")
    assert addresses[0] in {r.address for r in clarion.suppressions.iterate_removals(limit=1)}

    dead = clarion.dead_letters.list(limit=1)
    assert len(list(clarion.dead_letters.iterate(limit=1))) >= dead.meta.total


def test_the_async_client_sends_reads_and_walks_pages(stack: Stack, user: str,
                                                      template: str) -> None:
    async def main() -> tuple[str, str, list[str]]:
        async with AsyncClarion(stack.base_url, stack.api_key) as clarion:
            accepted = await clarion.notifications.send(user, template, {"code": "7"},
                                                        channels=["email"])
            found = await clarion.notifications.get(accepted.notification_id)
            listed = [n.notification_id
                      async for n in clarion.notifications.iterate(user_id=user, limit=1)]
            return accepted.notification_id, found.notification_id, listed

    sent, read, listed = asyncio.run(main())

    assert sent == read and listed == [sent]


# -- users and templates ------------------------------------------------------------------------


def test_a_user_is_created_updated_given_push_tokens_and_deleted(clarion: Clarion) -> None:
    user_id = unique("crud")
    created = clarion.users.create(user_id, email_address=f"{user_id}@Example.com",
                                   preferred_language="fr", push_tokens=["device-1"])
    assert created.email_address == f"{user_id}@example.com" and created.push_tokens == [
        "device-1"]

    updated = clarion.users.update(user_id, email_address=None, phone_number="+33612345678",
                                   preferences={"sms_enabled": False})
    assert updated.email_address is None and updated.phone_number == "+33612345678"
    assert updated.preferences["sms_enabled"] is False and updated.preferred_language == "fr"

    assert clarion.users.add_push_token(user_id, "fcm:device/2").push_tokens == [
        "device-1", "fcm:device/2"]
    assert clarion.users.add_push_token(user_id, "fcm:device/2").push_tokens == [
        "device-1", "fcm:device/2"]  # adding again changes nothing
    assert clarion.users.remove_push_token(user_id, "device-1").push_tokens == ["fcm:device/2"]
    assert clarion.users.list(email=None, limit=1).meta.total >= 1

    clarion.users.delete(user_id)
    with pytest.raises(NotFound):
        clarion.users.get(user_id)


def test_a_template_is_versioned_previewed_and_retired(clarion: Clarion) -> None:
    key = unique("tpl")
    first = clarion.templates.create(key, subject="Hi {{ name }}", body="Hello {{ name }}",
                                     variables=["name"])
    second = clarion.templates.new_version(key, subject="Hey {{ name }}", body="Hey {{ name }}")
    french = clarion.templates.create(key, language="fr", subject="Salut {{ name }}",
                                      body="Bonjour {{ name }}")
    assert (first.version, second.version, french.language) == (1, 2, "fr")

    found = clarion.templates.get(key)
    assert found.languages["en"].version == 2 and found.languages["fr"].subject == (
        "Salut {{ name }}")
    assert clarion.templates.get(key, language="en", version=1).languages["en"].version == 1
    assert [(v.language, v.version) for v in clarion.templates.versions(key)] == [
        ("en", 2), ("en", 1), ("fr", 1)]
    assert clarion.templates.versions(key)[-1].variables is None

    preview = clarion.templates.render(key, {"name": "Ada"}, language="fr")
    assert preview["subject"] == "Salut Ada"

    clarion.templates.retire(key)
    with pytest.raises(NotFound) as caught:
        clarion.templates.get(key)
    assert caught.value.code == "template_not_found"


# -- suppressions -------------------------------------------------------------------------------


def test_a_suppression_is_added_shown_and_removed_with_a_reason(clarion: Clarion) -> None:
    address = f"{unique('bounce')}@Example.com"

    added = clarion.suppressions.add(address, note="asked by phone")
    assert (added.address, added.reason, added.source) == (address.lower(), "manual", "api")
    assert clarion.suppressions.add(address, reason="hard_bounce").reason == "manual"  # kept
    shown = clarion.suppressions.get(address)
    assert shown.suppressed is not None and shown.removals == []

    removal = clarion.suppressions.remove(address, reason="the customer fixed the mailbox")
    assert removal.why == "the customer fixed the mailbox" and removal.reason == "manual"
    shown = clarion.suppressions.get(address)
    assert shown.suppressed is None and [r.removal_id for r in shown.removals] == [
        removal.removal_id]
    assert [r.removal_id for r in clarion.suppressions.removals(address=address).items] == [
        removal.removal_id]
    with pytest.raises(NotFound) as caught:
        clarion.suppressions.remove(address, reason="again")
    assert caught.value.code == "suppression_not_found"


# -- status callbacks ---------------------------------------------------------------------------


class Receiver:
    """The caller's endpoint: keeps every callback's raw body and signature."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.received.append((raw, self.headers.get("Clarion-Signature", "")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/clarion"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first_about(self, notification_id: str, deadline: float = 30.0,
                    ) -> tuple[bytes, str] | None:
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            with self.lock:
                for raw, signature in self.received:
                    if notification_id.encode() in raw:
                        return raw, signature
            time.sleep(0.05)
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


def test_a_status_callback_is_registered_and_its_signature_verifies(
        clarion: Clarion, receiver: Receiver, user: str, template: str) -> None:
    secret = "client-e2e-secret-" + uuid.uuid4().hex
    registered = clarion.callbacks.register(receiver.url, secret=secret)
    assert registered.url == receiver.url and registered.secret is None  # ours: never echoed
    try:
        assert clarion.callbacks.get().url == receiver.url
        accepted = clarion.notifications.send(user, template, {"code": "3"}, channels=["email"])

        found = receiver.first_about(accepted.notification_id)
        assert found is not None, "no callback arrived"
        raw, signature = found
        change = parse_callback(raw, signature, secret)
        assert change["notification_id"] == accepted.notification_id
        log = clarion.callbacks.log(accepted.notification_id)
        assert change["id"] == f"cb_{log[0]['callback_id']}"
    finally:
        clarion.callbacks.remove()
    with pytest.raises(NotFound) as caught:
        clarion.callbacks.get()
    assert caught.value.code == "callback_not_registered"


def test_a_callback_secret_made_by_clarion_is_shown_once(clarion: Clarion,
                                                         receiver: Receiver) -> None:
    made = clarion.callbacks.register(receiver.url)
    try:
        assert made.secret is not None and made.secret.startswith("whsec_")
        assert clarion.callbacks.get().secret is None
    finally:
        clarion.callbacks.remove()


# -- dead letters -------------------------------------------------------------------------------


def dead_letter_for(clarion: Clarion, template: str) -> dict[str, Any]:
    """A dead letter made on purpose: the simulator refuses this push token for good."""
    user_id = unique("dead")
    clarion.users.create(user_id, push_tokens=["invalid-token-1"])
    accepted = clarion.notifications.send(user_id, template, {"code": "0"}, channels=["push"])
    assert wait_for(clarion, accepted.notification_id, DONE).status == "failed"
    [dead] = [d for d in clarion.dead_letters.iterate(channel="push")
              if d["notification_id"] == accepted.notification_id]
    return dead


def test_dead_letters_are_listed_replayed_and_discarded(clarion: Clarion,
                                                        template: str) -> None:
    first = dead_letter_for(clarion, template)
    assert first["error_code"] == "fcm_invalid_argument"
    assert clarion.dead_letters.replay(first["dead_letter_id"]).replayed == [
        first["dead_letter_id"]]
    with pytest.raises(NotFound) as caught:
        clarion.dead_letters.replay(first["dead_letter_id"])
    assert caught.value.code == "dead_letter_not_found"

    second = dead_letter_for(clarion, template)
    replayed = clarion.dead_letters.replay_matching(ids=[second["dead_letter_id"]])
    assert (replayed.count, replayed.replayed) == (1, [second["dead_letter_id"]])

    third = dead_letter_for(clarion, template)
    clarion.dead_letters.discard(third["dead_letter_id"])
    with pytest.raises(NotFound):
        clarion.dead_letters.discard(third["dead_letter_id"])
