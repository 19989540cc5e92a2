"""API key checks under concurrency (http/auth.py KeyChecker), with an in-memory key store."""

from __future__ import annotations

import asyncio

from clarion.http.auth import KeyChecker, KeyRecord, TooManyAttempts


def test_requests_arriving_together_with_one_key_share_one_lookup_and_one_token() -> None:
    calls: list[str] = []

    async def lookup(digest: str) -> KeyRecord | None:
        calls.append(digest)
        await asyncio.sleep(0.05)  # PostgreSQL answering
        return KeyRecord(1, "billing", "send")

    checker = KeyChecker(lookup, lookups_per_second=1)  # a budget of one lookup

    async def run() -> list[KeyRecord | None]:
        return await asyncio.gather(*(checker.record("clk_key", "10.0.0.1") for _ in range(64)))

    found = asyncio.run(run())
    assert len(calls) == 1
    assert all(r is not None and r.name == "billing" for r in found)


def test_a_live_key_whose_entry_expired_is_checked_again_without_charging_the_address() -> None:
    now = [0.0]
    calls: list[str] = []

    async def lookup(digest: str) -> KeyRecord | None:
        calls.append(digest)
        return KeyRecord(1, "billing", "send") if len(calls) != 2 else None

    checker = KeyChecker(lookup, lookups_per_second=1, cache_seconds=30, clock=lambda: now[0])

    async def run() -> None:
        assert await checker.record("clk_key", "10.0.0.1") is not None  # a token spent
        now[0] += 31  # the entry expired; the bucket refilled its one token...
        assert await checker.record("clk_guess", "10.0.0.1") is None  # ...spent on a guess
        # The live key is known, not guessed: checked again (revocation), not charged.
        assert await checker.record("clk_key", "10.0.0.1") is not None
        try:
            await checker.record("clk_guess2", "10.0.0.1")
        except TooManyAttempts:
            return
        raise AssertionError("an unknown key must still cost the address a token")

    asyncio.run(run())
    assert len(calls) == 3
