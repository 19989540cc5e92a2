"""POST /v1/notifications (→ the Gateway, 202 once queued), GET /v1/notifications/{id}, and
DELETE /v1/notifications/{id} (→ the Publisher: cancels what is still scheduled).

Every notification carries the principal that asked for it (`NotificationRequest.principal`, kept
as `created_by`); a `send` key lists and reads only those created under its name, and a
notification it did not create is a 404, as if it did not exist (http/auth.py)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import CancelNotification, NotificationRequest
from clarion.http.auth import ADMIN
from clarion.http.responses import EnvelopeResponse, failure, from_reply, success
from clarion.http.routes.common import bridge, int_param, parse, principal, request_id
from clarion.http.schemas import NotificationBatchIn, NotificationIn, page_meta
from clarion.persistence import queries

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


async def create_notification(request: Request) -> EnvelopeResponse:
    body = await parse(request, NotificationIn)
    key = request.headers.get("x-idempotency-key") or request.headers.get("idempotency-key")
    if key is not None:
        if not _IDEMPOTENCY_KEY.match(key):
            return failure(422, "invalid_idempotency_key",
                           "the idempotency key must be 1-255 printable ASCII characters")
        # Keys are per client: two API clients may pick the same key without meeting.
        key = f"{principal(request)}|{key}"
    item = NotificationRequest(
        correlation_id=uuid.uuid4().hex,
        user_id=body.user_id,
        template_key=body.template_key,
        message_data=body.message_data,
        channels=tuple(body.channels) if body.channels else None,
        language=body.language,
        template_version=body.template_version,
        priority=_priority(body.priority, "normal"),
        request_id=body.request_id or request_id(request),
        idempotency_key=key,
        category=body.category,
        received_at=time.time(),
        principal=principal(request),
        send_at=body.send_at.timestamp() if body.send_at else None,
        fallback_channels=tuple(body.fallback_channels or ()),
    )
    return from_reply(await bridge(request).request(item))


async def create_batch(request: Request) -> EnvelopeResponse:
    """Up to 1,000 notifications in one request. They reach the Gateway together (the bridge
    coalesces them into as few messages as it can) and each gets its own result: one bad item
    does not refuse the others. The answer is 207-style: 200 with a result per item, in order."""
    body = await parse(request, NotificationBatchIn)
    refused = await _spend_batch_tokens(request, len(body.notifications))
    if refused is not None:
        return refused
    received, rid, caller = time.time(), request_id(request), principal(request)
    items = [
        NotificationRequest(
            correlation_id=uuid.uuid4().hex, user_id=n.user_id, template_key=n.template_key,
            message_data=n.message_data, channels=tuple(n.channels) if n.channels else None,
            language=n.language, template_version=n.template_version,
            priority=_priority(n.priority, "bulk"),
            request_id=n.request_id or f"{rid}-{i}", category=n.category, received_at=received,
            principal=caller, send_at=n.send_at.timestamp() if n.send_at else None,
            fallback_channels=tuple(n.fallback_channels or ()),
        )
        for i, n in enumerate(body.notifications)
    ]
    replies = await asyncio.gather(*(bridge(request).request(item) for item in items))
    results = [
        {"index": i, "status": r.status, "success": r.status < 400, "data": r.data,
         "error": r.error_code, "message": r.message}
        for i, r in enumerate(replies)
    ]
    accepted = sum(1 for r in replies if r.status < 400)
    return success(results, message=f"{accepted} of {len(results)} accepted",
                   meta={"accepted": accepted, "refused": len(results) - accepted})


async def _spend_batch_tokens(request: Request, count: int) -> EnvelopeResponse | None:
    """A batch of N notifications costs N tokens of the key's rate limit: the middleware took
    one, this takes the rest. The 429 if the bucket cannot pay, else None."""
    limiter = request.app.state.limiter
    state = request.scope.setdefault("state", {})
    if count <= 1 or "rate_limit" not in state:
        return None  # one notification, or no limit applies (off, Redis away)
    if count > limiter.burst:
        return failure(429, "rate_limited",
                       f"a batch of {count} costs {count} tokens, more than this key's burst"
                       f" of {limiter.burst}: send smaller batches", retry_after=1)
    verdict = await limiter.take(principal(request), count - 1)
    if verdict is None:
        return None
    state["rate_limit"] = verdict  # the answer's RateLimit-* headers show what is left
    if verdict.allowed:
        return None
    return failure(429, "rate_limited",
                   f"a batch of {count} costs {count} tokens of this key's rate limit; retry"
                   " after Retry-After seconds", retry_after=verdict.wait)


def _priority(given: str | None, default: str) -> str:
    """The priority asked for ("low" is the old name of "bulk"), or the route's default."""
    return "bulk" if given == "low" else given or default



def _owner_filter(request: Request) -> str | None:
    """The principal whose notifications a caller may see: its own for a `send` key, None
    (every notification) for an admin."""
    state = request.scope["state"]
    return None if state.get("access") == ADMIN else principal(request)


async def get_notification(request: Request) -> EnvelopeResponse:
    notification_id = request.path_params["notification_id"]
    try:
        uuid.UUID(notification_id)
    except ValueError:
        return failure(404, "notification_not_found", f"no notification '{notification_id}'")
    async with request.app.state.db.connection() as conn:
        found = await queries.notification(conn, notification_id, _owner_filter(request))
    if found is None:
        return failure(404, "notification_not_found", f"no notification '{notification_id}'")
    return success(found)


_STATUSES = {"queued", "scheduled", "cancelled", "sent", "delivered", "partially_sent",
             "failed"}


async def cancel_notification(request: Request) -> EnvelopeResponse:
    """Cancel a notification's deliveries that are still scheduled (`send_at`, quiet hours):
    200 with what was cancelled, 409 `not_cancellable` once they have gone out."""
    notification_id = request.path_params["notification_id"]
    try:
        uuid.UUID(notification_id)
    except ValueError:
        return failure(404, "notification_not_found", f"no notification '{notification_id}'")
    command = CancelNotification(uuid.uuid4().hex, notification_id, _owner_filter(request))
    return from_reply(await bridge(request).request(command))


async def list_notifications(request: Request) -> EnvelopeResponse:
    page = int_param(request, "page", 1, 1, 1_000_000)
    limit = int_param(request, "limit", 50, 1, 200)
    status, user_id = request.query_params.get("status"), request.query_params.get("user_id")
    if (page is None or limit is None or (status and status not in _STATUSES)
            or (user_id is not None and not 1 <= len(user_id) <= 128)):
        return failure(422, "validation_error",
                       "page ≥ 1, 1 ≤ limit ≤ 200, status one of " + ", ".join(sorted(_STATUSES)))
    async with request.app.state.db.connection() as conn:
        rows, total = await queries.notifications(conn, user_id, status, limit,
                                                  (page - 1) * limit, _owner_filter(request))
    return success(rows, meta=page_meta(total, page, limit, min_pages=1))


routes = [
    Route("/v1/notifications", create_notification, methods=["POST"]),
    Route("/v1/notifications/batch", create_batch, methods=["POST"]),
    Route("/v1/notifications", list_notifications, methods=["GET"]),
    Route("/v1/notifications/{notification_id}", get_notification, methods=["GET"]),
    Route("/v1/notifications/{notification_id}", cancel_notification, methods=["DELETE"]),
]
