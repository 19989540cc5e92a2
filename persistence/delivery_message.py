"""The message a delivery actor consumes: one channel of one notification, at one attempt.

On the wire it is a flat JSON object (the provider clients read it as such) with three headers
for tracing and diagnosis; `to_amqp` and `from_amqp` are the only places that know that framing.

    {"notification_id", "channel", "user_id", "request_id", "attempt", "accepted_at", "lane"?,
     email: "to", "subject", "body", "html_body"  |  push: "tokens", "title", "body", "data"
     | sms: "to", "body"}
    headers: x-request-id, x-notification-id, x-attempt (+ why, on a retry or a dead letter)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from clarion.persistence.broker import BULK, EXCHANGE, Envelope, routing_key

# Header names, spelled here only.
REQUEST_ID = "x-request-id"
NOTIFICATION_ID = "x-notification-id"
ATTEMPT = "x-attempt"
LAST_ERROR = "x-last-error"  # on a retry: why the attempt before failed
ATTEMPTS = "x-attempts"  # on a dead letter: how many attempts were made
ERROR_CODE = "x-error-code"
ERROR = "x-error"
CHANNEL = "x-channel"
REPLAYED_FROM = "x-replayed-from"  # on a replayed dead letter: its id

_ENVELOPE_FIELDS = ("notification_id", "channel", "user_id", "request_id", "attempt",
                    "accepted_at", "lane")


class MalformedMessage(ValueError):
    """A broker message that is not a delivery message (not JSON, or a field missing)."""


@dataclass(frozen=True, slots=True)
class DeliveryMessage:
    notification_id: str
    channel: str  # "email" or "push"
    user_id: str | None = None
    request_id: str | None = None
    attempt: int = 1
    accepted_at: float | None = None  # when the 202 was given (epoch seconds)
    content: Mapping[str, Any] = field(default_factory=dict)  # what the provider sends
    lane: str | None = None  # "bulk", or None: transactional (persistence/broker.py)

    @property
    def body(self) -> dict[str, Any]:
        """The JSON object on the wire, and what the provider clients are given."""
        body = {"notification_id": self.notification_id, "user_id": self.user_id,
                "request_id": self.request_id, "attempt": self.attempt,
                "accepted_at": self.accepted_at, "channel": self.channel, **self.content}
        if self.lane:
            body["lane"] = self.lane  # only then: a transactional message is as it always was
        return body

    @property
    def bulk(self) -> bool:
        return self.lane == BULK

    @property
    def headers(self) -> dict[str, Any]:
        return {REQUEST_ID: self.request_id or "", NOTIFICATION_ID: self.notification_id,
                ATTEMPT: self.attempt}

    @property
    def key(self) -> tuple[str, int]:
        """Which attempt of which notification this is (the channel is the queue's)."""
        return self.notification_id, self.attempt

    def to_amqp(self, queue: str | None = None, **headers: Any) -> Envelope:
        """To the work queue of its channel and lane through the exchange, or straight to
        `queue` (a delay queue of the retry ladder, the DLQ), with `headers` added to the
        tracing ones."""
        body = json.dumps(self.body, separators=(",", ":")).encode("utf-8")
        all_headers = {**self.headers, **headers}
        if queue is None:
            return Envelope(EXCHANGE, routing_key(self.channel, self.lane), all_headers, body)
        return Envelope("", queue, all_headers, body)

    @classmethod
    def from_amqp(cls, body: bytes) -> DeliveryMessage:
        try:
            return cls.from_body(json.loads(body))
        except (ValueError, TypeError) as exc:
            raise MalformedMessage(str(exc)) from None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DeliveryMessage:
        """From the wire object (also what dead letters store)."""
        if not isinstance(body, Mapping):
            raise MalformedMessage("not a JSON object")
        try:
            notification_id, channel = str(body["notification_id"]), str(body["channel"])
            attempt = int(body.get("attempt", 1))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage(f"missing or bad field: {exc}") from None
        accepted_at = body.get("accepted_at")
        lane = body.get("lane")
        return cls(notification_id, channel, body.get("user_id"), body.get("request_id"),
                   attempt, accepted_at if isinstance(accepted_at, (int, float)) else None,
                   {k: v for k, v in body.items() if k not in _ENVELOPE_FIELDS},
                   lane if lane == BULK else None)

    def next_attempt(self, **content: Any) -> DeliveryMessage:
        """The same message at the next attempt, with some of its content changed."""
        return replace(self, attempt=self.attempt + 1, content={**self.content, **content})

    def first_attempt(self) -> DeliveryMessage:
        """The same message starting over (a replayed dead letter)."""
        return replace(self, attempt=1)
