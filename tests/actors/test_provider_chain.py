"""ProviderChain: which provider takes an attempt, from the breakers' states."""

from __future__ import annotations

from typing import Any

import pytest

from clarion.actors.provider_chain import ProviderChain
from clarion.actors.providers.base import DeliveryResult
from clarion.supervision.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Named:
    channel = "email"

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, message: dict[str, Any]) -> DeliveryResult:
        return DeliveryResult(True)

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def chain(clock: Clock) -> ProviderChain:
    breakers: dict[str, CircuitBreaker] = {}

    def breaker_for(name: str) -> CircuitBreaker:
        return breakers.setdefault(name, CircuitBreaker(name, 2, 10.0, clock=clock))

    return ProviderChain([Named("sendgrid"), Named("smtp")], breaker_for)


def open_breaker(chain: ProviderChain, name: str) -> None:
    chain.breaker(name).failure()
    chain.breaker(name).failure()
    assert chain.breaker(name).state == OPEN


def test_the_first_healthy_provider_in_order_takes_the_attempt(chain: ProviderChain) -> None:
    assert chain.names == ("sendgrid", "smtp")
    picked = chain.pick()
    assert picked is not None and picked.name == "sendgrid"


def test_after_a_passing_failure_the_next_attempt_prefers_another_provider(
        chain: ProviderChain) -> None:
    picked = chain.pick(avoid="sendgrid")
    assert picked is not None and picked.name == "smtp"


def test_the_failed_provider_is_used_again_when_it_is_the_only_healthy_one(
        chain: ProviderChain) -> None:
    open_breaker(chain, "smtp")
    picked = chain.pick(avoid="sendgrid")
    assert picked is not None and picked.name == "sendgrid"


def test_an_open_breaker_sends_every_attempt_to_the_next_provider(chain: ProviderChain) -> None:
    open_breaker(chain, "sendgrid")
    assert [p.name for p in (chain.pick(), chain.pick(), chain.pick()) if p] == ["smtp"] * 3
    assert chain.any_closed() and not chain.all_open()


def test_with_every_breaker_open_nothing_is_picked_until_one_half_opens(
        chain: ProviderChain, clock: Clock) -> None:
    open_breaker(chain, "sendgrid")
    clock.now = 5.0
    open_breaker(chain, "smtp")
    assert chain.all_open() and chain.pick() is None
    clock.now = 10.5  # sendgrid's reset timeout passed, smtp's not yet
    assert not chain.all_open()
    trial = chain.pick()
    assert trial is not None and trial.name == "sendgrid"
    assert chain.breaker("sendgrid").state == HALF_OPEN
    assert chain.pick() is None  # one trial at a time
    chain.breaker("sendgrid").success()
    assert chain.breaker("sendgrid").state == CLOSED
    picked = chain.pick()
    assert picked is not None and picked.name == "sendgrid"  # traffic goes back to the first


def test_a_provider_may_appear_once_and_a_chain_is_not_empty() -> None:
    with pytest.raises(ValueError):
        ProviderChain([Named("smtp"), Named("smtp")], lambda name: CircuitBreaker(name))
    with pytest.raises(ValueError):
        ProviderChain([], lambda name: CircuitBreaker(name))
