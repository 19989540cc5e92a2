"""What a finished delivery attempt leads to: the outcome to record and the message to publish.

A pure function of the attempt, the provider's result and the retry policy:

    sent                         → recorded, nothing more to publish
    failed, passing, attempts left → "retrying", the next attempt to the delay queue that waits
                                   long enough (a Retry-After stretches the step)
    failed for good, or the last → "failed", the message to failed.queue and the dead letters
                                   (Twilio's 21610 also puts the number on the suppression list)
    suppressed (no provider call) → "skipped", nothing to publish (`skipped_outcome`)
"""

from __future__ import annotations

from clarion.actors.attempts import Attempt
from clarion.actors.provider_chain import FAILED_PROVIDER
from clarion.persistence import broker
from clarion.persistence.broker import Envelope
from clarion.persistence import delivery_message as framing
from clarion.persistence.delivery_message import DeliveryMessage
from clarion.persistence.notifications import Outcome
from clarion.supervision.retry import RetryPolicy


# What an attempt's log names as its "provider" when the suppression list stopped it.
SUPPRESSION_LIST = "suppression_list"
# A provider's error that says the recipient does not want messages: the address is suppressed
# in the transaction that records the outcome.
SUPPRESSING_ERRORS = {"twilio_21610": "unsubscribed"}  # the number replied STOP


def delivery_policy(max_attempts: int) -> RetryPolicy:
    """A channel's provider calls: the delay ladder; a permanent failure is never retried."""
    return RetryPolicy(max_attempts, delays=tuple(float(d) for d in broker.RETRY_DELAYS),
                       retryable=lambda result: not result.permanent)


def outcome_of(attempt: Attempt, policy: RetryPolicy, provider: str) -> Outcome:
    """The outcome of a finished attempt, with what to publish next."""
    message, result = attempt.message, attempt.result
    assert result is not None, "the attempt has not finished"
    retry_in = None
    dead = None
    follow_up: tuple[Envelope, ...] = ()
    if not result.ok:
        wanted = policy.next_delay(message.attempt, result, at_least=result.retry_after or 0)
        if wanted is not None:
            retry_in = float(broker.ladder_delay(wanted))
            follow_up = (retry_message(attempt, provider).to_amqp(
                broker.retry_queue(message.channel, int(retry_in), message.lane),
                **{framing.LAST_ERROR: result.error_code or ""}),)
        else:
            dead = message.body
            follow_up = (message.to_amqp(broker.FAILED_QUEUE, **{
                framing.ATTEMPTS: message.attempt, framing.ERROR_CODE: result.error_code or "",
                framing.ERROR: (result.error or "")[:500], framing.CHANNEL: message.channel}),)
    reason = SUPPRESSING_ERRORS.get(result.error_code or "") if not result.ok else None
    to = message.content.get("to")
    return Outcome(
        message.notification_id, message.channel, message.attempt, result.ok, provider,
        attempt.started_at, result.provider_message_id, result.error_code, result.error,
        retry_in, dead, follow_up,
        suppress=(str(to), reason) if reason and isinstance(to, str) and to else None,
        permanent=not result.ok and result.permanent,
    )


def skipped_outcome(attempt: Attempt, reason: str) -> Outcome:
    """A claimed attempt whose recipient is on the suppression list: skipped, no provider
    called, nothing more to publish (README "Suppression list")."""
    message = attempt.message
    return Outcome(message.notification_id, message.channel, message.attempt, False,
                   SUPPRESSION_LIST, attempt.started_at, error_code="suppressed",
                   error=f"suppressed: {reason}", skipped=True)


def retry_message(attempt: Attempt, provider: str | None = None) -> DeliveryMessage:
    """The next attempt's message, naming the provider that failed (the next attempt prefers
    another: failover). A push goes again only to the devices that failed in a passing way:
    those that got it, or were refused for good, are left out."""
    message = attempt.message
    failed = {FAILED_PROVIDER: provider} if provider else {}
    details = attempt.result.details if attempt.result is not None else ()
    if "tokens" in message.content and details:
        again = [d["full_token"] for d in details
                 if isinstance(d, dict) and not d.get("ok") and not d.get("permanent")
                 and d.get("full_token")]
        if again:
            return message.next_attempt(tokens=again, **failed)
    return message.next_attempt(**failed)
