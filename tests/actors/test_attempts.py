"""The attempts a delivery actor holds, and how it recognises a second copy (actors/attempts.py)."""

from __future__ import annotations

from clarion.actors.attempts import ACK_COPY, ADOPTED, ADOPTED_SETTLED, AttemptBook, Waiting
from clarion.actors.providers.base import DeliveryResult
from clarion.persistence.delivery_message import DeliveryMessage

MESSAGE = DeliveryMessage("n-1", "email", attempt=2, content={"to": "ada@example.test"})


def test_an_unknown_attempt_is_not_a_copy() -> None:
    assert AttemptBook().copy_arrived(Waiting(5, 1, MESSAGE)) is None


def test_a_copy_on_the_same_connection_is_acked_and_the_original_keeps_its_tag() -> None:
    book = AttemptBook()
    original = book.start(Waiting(5, 1, MESSAGE))

    assert book.copy_arrived(Waiting(9, 1, MESSAGE)) == ACK_COPY
    assert (original.tag, original.generation) == (5, 1)


def test_a_redelivery_on_a_new_connection_takes_over_the_dead_tag() -> None:
    book = AttemptBook()
    original = book.start(Waiting(5, 1, MESSAGE))

    assert book.copy_arrived(Waiting(2, 2, MESSAGE)) == ADOPTED
    assert (original.tag, original.generation) == (2, 2)


def test_a_redelivery_of_a_recorded_attempt_is_acked_at_once() -> None:
    book = AttemptBook()
    original = book.start(Waiting(5, 1, MESSAGE))
    original.recorded = True

    assert book.copy_arrived(Waiting(3, 2, MESSAGE)) == ADOPTED_SETTLED


def test_finished_attempts_wait_for_their_outcome_to_be_recorded_then_are_forgotten() -> None:
    book = AttemptBook()
    attempt = book.start(Waiting(5, 1, MESSAGE))
    assert book.finish(MESSAGE.key, DeliveryResult(True)) is attempt
    assert book.unrecorded() == []  # no outcome computed yet

    attempt.outcome = object()  # type: ignore[assignment]
    assert book.unrecorded() == [attempt]
    attempt.recorded = True
    assert book.unrecorded() == []

    book.forget([attempt])
    assert len(book) == 0 and book.finish(MESSAGE.key, DeliveryResult(True)) is None
