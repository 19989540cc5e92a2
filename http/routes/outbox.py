"""GET /v1/outbox: what the local outbox "delivered" (no provider configured)."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.routing import Route

from clarion.http.responses import EnvelopeResponse, failure, success
from clarion.http.routes.common import int_param
from clarion.persistence import queries


async def list_outbox(request: Request) -> EnvelopeResponse:
    notification_id = request.query_params.get("notification_id")
    channel = request.query_params.get("channel")
    limit = int_param(request, "limit", 50, 1, 500)
    if notification_id is not None:
        try:
            uuid.UUID(notification_id)
        except ValueError:
            return failure(422, "validation_error", "notification_id must be a UUID")
    if channel not in (None, "email", "push", "sms"):
        return failure(422, "validation_error", "channel must be email, push or sms")
    if limit is None:
        return failure(422, "validation_error", "limit must be between 1 and 500")
    async with request.app.state.db.connection() as conn:
        messages = await queries.outbox(conn, notification_id, channel, limit)
    return success(messages, meta={"limit": limit, "count": len(messages)})


routes = [Route("/v1/outbox", list_outbox, methods=["GET"])]
