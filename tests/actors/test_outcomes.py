"""What a finished delivery attempt leads to (actors/outcomes.py): no actor system needed."""

from __future__ import annotations

import json

from clarion.actors.attempts import Attempt
from clarion.actors.outcomes import delivery_policy, outcome_of, retry_message
from clarion.actors.providers.base import DeliveryResult
from clarion.persistence.delivery_message import DeliveryMessage

POLICY = delivery_policy(max_attempts=3)


def _attempt(result: DeliveryResult, attempt: int = 1, channel: str = "email",
             **content: object) -> Attempt:
    body = content or {"to": "ada@example.test", "subject": "Hi", "body": "Hello"}
    message = DeliveryMessage("n-1", channel, "user-1", "req-1", attempt, 1.5, body)
    done = Attempt(message, tag=1, generation=1)
    done.result = result
    return done


def test_a_push_retry_goes_only_to_the_devices_that_failed_in_a_passing_way() -> None:
    attempt = _attempt(DeliveryResult(False, error_code="fcm_unavailable", details=(
        {"token": "phone…", "ok": True, "message_id": "m-1"},
        {"token": "tablet…", "ok": False, "permanent": False, "full_token": "tablet"},
        {"token": "old-wa…", "ok": False, "permanent": True, "full_token": "old-watch",
         "unregistered": True},
    )), channel="push", tokens=["phone", "tablet", "old-watch"], title="Hi", body="Hello")

    retry = retry_message(attempt)

    assert retry.content["tokens"] == ["tablet"]
    assert retry.attempt == 2
    assert attempt.message.content["tokens"] == ["phone", "tablet", "old-watch"]


def test_a_push_retry_without_per_device_results_goes_to_every_device() -> None:
    attempt = _attempt(DeliveryResult(False, error_code="timeout"), channel="push",
                       tokens=["phone", "tablet"])

    assert retry_message(attempt).content["tokens"] == ["phone", "tablet"]


def test_a_passing_failure_is_retried_through_the_delay_queue_of_its_attempt() -> None:
    outcome = outcome_of(_attempt(DeliveryResult(False, error_code="sendgrid_http_503")),
                         POLICY, "sendgrid")

    assert (outcome.ok, outcome.retry_in, outcome.dead_message) == (False, 1.0, None)
    [retry] = outcome.messages
    assert (retry.exchange, retry.routing_key) == ("", "email.retry.1s")
    assert retry.headers["x-attempt"] == 2 and retry.headers["x-last-error"] == "sendgrid_http_503"
    assert json.loads(retry.body)["attempt"] == 2


def test_a_retry_after_longer_than_the_step_picks_a_longer_delay_queue() -> None:
    outcome = outcome_of(_attempt(DeliveryResult(False, error_code="rate_limited",
                                                 retry_after=12)), POLICY, "sendgrid")

    assert outcome.retry_in == 30.0
    assert outcome.messages[0].routing_key == "email.retry.30s"


def test_a_permanent_failure_or_the_last_attempt_becomes_a_dead_letter_with_its_reason() -> None:
    for attempt in (_attempt(DeliveryResult(False, error_code="invalid_address", error="no",
                                            permanent=True)),
                    _attempt(DeliveryResult(False, error_code="timeout", error="slow"),
                             attempt=3)):
        outcome = outcome_of(attempt, POLICY, "sendgrid")

        assert outcome.retry_in is None and outcome.delivery_status == "failed"
        assert outcome.dead_message == attempt.message.body
        [copy] = outcome.messages
        assert (copy.exchange, copy.routing_key) == ("", "failed.queue")
        assert copy.headers["x-error-code"] == attempt.result.error_code  # type: ignore[union-attr]
        assert copy.headers["x-attempts"] == attempt.message.attempt


def test_a_sent_attempt_publishes_nothing() -> None:
    outcome = outcome_of(_attempt(DeliveryResult(True, provider_message_id="m-9")), POLICY,
                         "sendgrid")

    assert (outcome.ok, outcome.provider_message_id, outcome.messages) == (True, "m-9", ())
