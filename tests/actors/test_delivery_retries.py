"""What a delivery actor publishes after a failed attempt (no actor system needed)."""

from __future__ import annotations

from clarion.actors.delivery import Attempt, ChannelDelivery
from clarion.actors.providers.base import DeliveryResult


def _push_attempt(details: tuple[dict[str, object], ...]) -> Attempt:
    message = {"notification_id": "n-1", "channel": "push", "attempt": 1,
               "tokens": ["phone", "tablet", "old-watch"], "title": "Hi", "body": "Hello"}
    attempt = Attempt(message, tag=1, generation=1)
    attempt.result = DeliveryResult(False, error_code="fcm_unavailable", details=details)
    return attempt


def test_a_push_retry_goes_only_to_the_devices_that_failed_in_a_passing_way() -> None:
    attempt = _push_attempt((
        {"token": "phone…", "ok": True, "message_id": "m-1"},
        {"token": "tablet…", "ok": False, "permanent": False, "full_token": "tablet"},
        {"token": "old-wa…", "ok": False, "permanent": True, "full_token": "old-watch",
         "unregistered": True},
    ))

    body = ChannelDelivery._retry_body(attempt)

    assert body["tokens"] == ["tablet"]
    assert body["attempt"] == 2
    assert attempt.message["tokens"] == ["phone", "tablet", "old-watch"]  # left as it was


def test_a_push_retry_without_per_device_results_goes_to_every_device() -> None:
    body = ChannelDelivery._retry_body(_push_attempt(()))

    assert body["tokens"] == ["phone", "tablet", "old-watch"]
    assert body["attempt"] == 2


def test_an_email_retry_is_the_same_message_at_the_next_attempt() -> None:
    attempt = Attempt({"notification_id": "n-2", "channel": "email", "attempt": 2,
                       "to": "ada@example.test"}, tag=7, generation=3)
    attempt.result = DeliveryResult(False, error_code="sendgrid_http_503")

    assert ChannelDelivery._retry_body(attempt) == {
        "notification_id": "n-2", "channel": "email", "attempt": 3, "to": "ada@example.test"}
