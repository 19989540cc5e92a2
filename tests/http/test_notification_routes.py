"""The notification routes put the caller's principal on every NotificationRequest they hand the
Gateway (which keeps it as `created_by`): one request, and each item of a batch. The actor
system is replaced by a bridge that records what it is asked; everything else is the routes'
own code."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from clarion.actors.messages import NotificationRequest, Reply
from clarion.http.routes import notifications


class RecordingBridge:
    def __init__(self) -> None:
        self.items: list[NotificationRequest] = []

    async def request(self, item: Any) -> Reply:
        self.items.append(item)
        return Reply(item.correlation_id, 202, data={"notification_id": "n"})


class AsKey:
    """What ApiKeyMiddleware leaves on an admitted request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {}).update(principal="key:billing", access="send")
        await self.app(scope, receive, send)


def _post(path: str, body: dict[str, Any]) -> tuple[httpx.Response, RecordingBridge]:
    app = Starlette(routes=notifications.routes, middleware=[Middleware(AsKey)])
    bridge = RecordingBridge()
    app.state.bridge = bridge
    app.state.limiter = None  # no RateLimitMiddleware here: the batch route takes no tokens

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://clarion") as client:
            return await client.post(path, json=body)

    return asyncio.run(post()), bridge


def test_a_notification_carries_the_principal_that_asked_for_it() -> None:
    reply, bridge = _post("/v1/notifications", {"user_id": "u1", "template_key": "t"})

    assert reply.status_code == 202
    assert [item.principal for item in bridge.items] == ["key:billing"]


def test_every_item_of_a_batch_carries_the_principal_that_asked_for_it() -> None:
    batch = {"notifications": [{"user_id": f"u{i}", "template_key": "t"} for i in range(3)]}

    reply, bridge = _post("/v1/notifications/batch", batch)

    assert reply.status_code == 200
    assert [item.principal for item in bridge.items] == ["key:billing"] * 3
