"""ProviderChain: a channel's providers in order, each behind its own circuit breaker.

Which provider takes an attempt (provider failover, README "Providers and failover"):
  - the first one, in the configured order, whose breaker lets a call through;
  - after a passing failure the next attempt prefers another healthy provider to the one that
    failed (the message names it: `failed_provider`), and falls back to it only when no other
    is healthy;
  - a permanent failure is the recipient's (an invalid address): it is never retried, so it
    never fails over.
The channel stops consuming only when every provider's breaker is open.

Plain code: the breakers are the actor's (`deps.breaker(name)`), the chain only reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clarion.actors.providers.base import Provider
from clarion.supervision.breaker import CLOSED, OPEN, CircuitBreaker

FAILED_PROVIDER = "failed_provider"  # the message field naming the last attempt's provider


class ProviderChain:
    def __init__(self, providers: Sequence[Provider],
                 breaker_for: Callable[[str], CircuitBreaker]) -> None:
        if not providers:
            raise ValueError("a channel needs at least one provider")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"a provider may appear once in a chain: {names}")
        self._links = [(p, breaker_for(p.name)) for p in providers]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p, _ in self._links)

    def breaker(self, name: str) -> CircuitBreaker:
        return next(b for p, b in self._links if p.name == name)

    def pick(self, avoid: str | None = None) -> Provider | None:
        """The provider for the next call, or None when every breaker refuses. `allow()` is
        asked in the order tried (in half-open it hands out the one trial call)."""
        ordered = [link for link in self._links if link[0].name != avoid] + \
                  [link for link in self._links if link[0].name == avoid]
        for provider, breaker in ordered:
            if breaker.allow():
                return provider
        return None

    def all_open(self) -> bool:
        """Every provider is resting after failures: stop taking messages."""
        return all(b.state == OPEN and b.retry_after() > 0 for _, b in self._links)

    def any_closed(self) -> bool:
        return any(b.state == CLOSED for _, b in self._links)

    def close(self) -> None:
        for provider, _ in self._links:
            provider.close()
