"""Iterating a list walks its pages in order while `meta.has_next`, lazily, sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from fakes import Script, envelope


def paged(total: int, limit: int) -> Any:
    """Answers GET /v1/suppressions pages of `total` entries as Clarion does."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        first = (page - 1) * limit
        items = [{"channel": "email", "address": f"a{i}@example.com", "reason": "manual",
                  "source": "api", "created_by": "ops", "created_at": "2026-12-02"}
                 for i in range(first, min(total, first + limit))]
        pages = max(1, -(-total // limit))
        return envelope(items, meta={"total": total, "limit": limit, "page": page,
                                     "total_pages": pages, "has_next": page < pages,
                                     "has_previous": page > 1})

    return answer


def test_iterate_yields_every_item_of_every_page_in_order() -> None:
    script = Script(paged(total=7, limit=3))

    with script.client() as clarion:
        addresses = [s.address for s in clarion.suppressions.iterate(limit=3)]

    assert addresses == [f"a{i}@example.com" for i in range(7)]
    assert [r.url.params["page"] for r in script.requests] == ["1", "2", "3"]
    assert {r.url.params["limit"] for r in script.requests} == {"3"}


def test_iterate_asks_for_a_page_only_when_it_is_needed() -> None:
    script = Script(paged(total=7, limit=3))

    with script.client() as clarion:
        entries = clarion.suppressions.iterate(limit=3)
        assert script.requests == []
        next(entries)

    assert len(script.requests) == 1


def test_an_empty_list_is_one_page_with_nothing_in_it() -> None:
    script = Script(paged(total=0, limit=50))

    with script.client() as clarion:
        assert list(clarion.suppressions.iterate()) == []

    assert len(script.requests) == 1


def test_an_empty_page_that_claims_more_stops_the_walk() -> None:
    meta = {"total": 5, "limit": 2, "page": 1, "total_pages": 3, "has_next": True,
            "has_previous": False}
    script = Script(envelope([], meta=meta))

    with script.client() as clarion:
        assert list(clarion.dead_letters.iterate()) == []

    assert len(script.requests) == 1


def test_a_page_shows_its_meta() -> None:
    script = Script(paged(total=7, limit=3))

    with script.client() as clarion:
        page = clarion.suppressions.list(page=3, limit=3)

    assert len(page.items) == 1 and page.meta.total == 7 and page.next_page is None
    assert page.meta.has_previous and not page.meta.has_next


def test_the_async_client_iterates_every_page() -> None:
    script = Script(paged(total=5, limit=2))

    async def main() -> list[str]:
        async with script.async_client() as clarion:
            return [s.address async for s in clarion.suppressions.iterate(limit=2)]

    assert asyncio.run(main()) == [f"a{i}@example.com" for i in range(5)]
    assert [r.url.params["page"] for r in script.requests] == ["1", "2", "3"]
