"""AttemptBook: the attempts a delivery actor has claimed, from the claim until the ack.

Keyed by (notification, attempt) — the channel is the actor's. It is how a second copy of a
message is recognised without a database round trip:

* a copy on the *same* connection as the original (the outbox published a row twice) is acked
  at once: the original's own tag will be acked when its attempt is settled;
* a copy on a *new* connection (the broker redelivered it after our connection was lost, while
  the call was running or after it finished) is adopted: its tag replaces the dead one, so it
  is acked when the attempt is settled — or at once if it is settled already.

Plain data, no actor, no broker: tested on its own (tests/actors/test_attempts.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from clarion.actors.providers.base import DeliveryResult
from clarion.persistence.delivery_message import DeliveryMessage
from clarion.persistence.notifications import Outcome


@dataclass(frozen=True, slots=True)
class Waiting:
    """A message not started: just arrived, or waiting for its claim (someone else holds the
    attempt, or storage was away)."""

    tag: int
    generation: int  # of the broker connection the tag belongs to
    message: DeliveryMessage


@dataclass
class Attempt:
    """One claimed attempt: running, finished (its outcome not yet committed), or recorded
    (only the ack is left)."""

    message: DeliveryMessage
    tag: int
    generation: int
    started_at: float = field(default_factory=time.time)
    result: DeliveryResult | None = None
    outcome: Outcome | None = None
    recorded: bool = False
    provider: str = ""  # the provider it went to (ProviderChain's pick)

    @property
    def key(self) -> tuple[str, int]:
        return self.message.key


# What to do with a copy of an attempt the book holds.
ACK_COPY = "ack_copy"  # a duplicate on the live connection: ack the copy now
ADOPTED = "adopted"  # the original's connection is gone: the copy's tag is acked at settling
ADOPTED_SETTLED = "adopted_settled"  # ...and the attempt is recorded: ack the copy now


class AttemptBook:
    def __init__(self) -> None:
        self._attempts: dict[tuple[str, int], Attempt] = {}

    def __len__(self) -> int:
        return len(self._attempts)

    def get(self, key: tuple[str, int]) -> Attempt | None:
        return self._attempts.get(key)

    def start(self, waiting: Waiting) -> Attempt:
        attempt = Attempt(waiting.message, waiting.tag, waiting.generation)
        self._attempts[attempt.key] = attempt
        return attempt

    def copy_arrived(self, copy: Waiting) -> str | None:
        """What to do with `copy`, if the book holds its attempt (None: it does not)."""
        attempt = self._attempts.get(copy.message.key)
        if attempt is None:
            return None
        if attempt.generation == copy.generation:
            return ACK_COPY
        attempt.tag, attempt.generation = copy.tag, copy.generation
        return ADOPTED_SETTLED if attempt.recorded else ADOPTED

    def finish(self, key: tuple[str, int], result: DeliveryResult) -> Attempt | None:
        attempt = self._attempts.get(key)
        if attempt is not None:
            attempt.result = result
        return attempt

    def unrecorded(self) -> list[Attempt]:
        """Finished attempts whose outcome is not committed yet."""
        return [a for a in self._attempts.values() if a.outcome is not None and not a.recorded]

    def forget(self, attempts: list[Attempt]) -> None:
        """Their message is acked (or its tag died, and its redelivery will find the outcome
        recorded in the database)."""
        for attempt in attempts:
            self._attempts.pop(attempt.key, None)
