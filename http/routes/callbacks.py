"""Status callbacks, the caller's side (README "Status callbacks"): an API key registers where
the status changes of its notifications are POSTed, and reads how they went.

    PUT    /v1/callbacks                {"url", "secret"?}   register (or replace) this key's
    GET    /v1/callbacks                this key's endpoint (never its secret) and counts
    DELETE /v1/callbacks                stop: changes not yet delivered are cancelled
    GET    /v1/callbacks/log?notification_id=   that notification's callbacks, in order

The endpoint belongs to the calling key (its principal) and reports only the notifications
created under it. The secret is written straight to PostgreSQL from here: it never travels in
an actor message and is never shown again (a generated one is shown once, in the answer that
made it).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.routing import Route

from clarion.http.responses import EnvelopeResponse, failure, success
from clarion.http.routes.common import parse, principal
from clarion.persistence import status_callbacks
from clarion.supervision.destinations import MAX_URL_LENGTH, destination_problem

Secret = Annotated[str, Field(min_length=24, max_length=256, pattern=r"^[\x21-\x7e]+$")]


class CallbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL_LENGTH)
    # Printable ASCII, at least 24 characters; absent: Clarion makes one and shows it once.
    secret: Secret | None = None



async def register(request: Request) -> EnvelopeResponse:
    body = await parse(request, CallbackIn)
    allow_private = request.app.state.settings.callbacks_allow_private
    # Resolving the host blocks: off the event loop.
    problem = await asyncio.to_thread(destination_problem, body.url, allow_private)
    if problem is not None:
        return failure(422, "callback_url_refused", problem,
                       {"fields": [{"field": "url", "message": problem}]})
    secret = body.secret or "whsec_" + secrets.token_urlsafe(32)
    async with request.app.state.db.connection() as conn:
        row = await status_callbacks.register(conn, principal(request), body.url, secret)
    if body.secret is None:
        row["secret"] = secret  # shown this once: Clarion never shows it again
    return success(row, message="status changes of this key's notifications go to this URL")


async def show(request: Request) -> EnvelopeResponse:
    async with request.app.state.db.connection() as conn:
        row = await status_callbacks.endpoint(conn, principal(request))
    if row is None:
        return failure(404, "callback_not_registered", "this API key has no callback URL")
    return success(row)


async def unregister(request: Request) -> EnvelopeResponse:
    async with request.app.state.db.connection() as conn:
        removed = await status_callbacks.unregister(conn, principal(request))
    if not removed:
        return failure(404, "callback_not_registered", "this API key has no callback URL")
    return success({"removed": True}, message="no more callbacks for this key")


async def log(request: Request) -> EnvelopeResponse:
    notification_id = request.query_params.get("notification_id", "")
    try:
        uuid.UUID(notification_id)
    except ValueError:
        return failure(422, "validation_error", "notification_id must be a UUID")
    async with request.app.state.db.connection() as conn:
        rows = await status_callbacks.history(conn, principal(request), notification_id)
    return success(rows)


routes = [
    Route("/v1/callbacks", register, methods=["PUT"]),
    Route("/v1/callbacks", show, methods=["GET"]),
    Route("/v1/callbacks", unregister, methods=["DELETE"]),
    Route("/v1/callbacks/log", log, methods=["GET"]),
]
