"""A scripted Clarion for the unit tests: httpx's MockTransport answering from a list, recording
every request. Only for the mechanics (retries, keys, pages, errors); what the real server
answers is tested end to end in the server's tests/client/."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from clarion_client import AsyncClarion, Clarion, RetryPolicy

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def envelope(data: Any = None, status: int = 200, meta: Any = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={
        "success": True, "data": data, "error": None, "message": "", "meta": meta})


def refusal(status: int, code: str, message: str = "refused", data: Any = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={
        "success": False, "data": data, "error": code, "message": message, "meta": None})


ACCEPTED = {"notification_id": "8b0c6c2e-0000-4000-8000-000000000001", "status": "queued",
            "scheduled_for": None, "channels": {"email": "queued"}, "language": "en",
            "template_version": 1, "request_id": "r-1"}


class Script:
    """Answers requests in order from `answers` (the last one repeats); records requests."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        found = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(found, Exception):
            raise found
        if callable(found):
            return found(request)
        return found

    def client(self, **policy: Any) -> Clarion:
        retry = RetryPolicy(**{"uniform": lambda low, high: high, **policy})
        return Clarion("http://clarion.test", "clk_test", retry=retry,
                       transport=httpx.MockTransport(self.answer), sleep=self.sleeps.append)

    def async_client(self, **policy: Any) -> AsyncClarion:
        retry = RetryPolicy(**{"uniform": lambda low, high: high, **policy})

        async def answer(request: httpx.Request) -> httpx.Response:
            return self.answer(request)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return AsyncClarion("http://clarion.test", "clk_test", retry=retry,
                            transport=httpx.MockTransport(answer), sleep=sleep)

    def header(self, name: str) -> list[str | None]:
        return [r.headers.get(name) for r in self.requests]

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]
