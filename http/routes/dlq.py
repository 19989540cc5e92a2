"""The dead-letter queue for operators: list, replay (one, or all matching), discard.

Channel `callback`: status callbacks to a caller that failed for their whole retry window
(persistence/status_callbacks.py); replaying one makes it due again."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import DiscardDeadLetter, ReplayDeadLetters
from clarion.http.responses import EnvelopeResponse, failure, from_reply, success
from clarion.http.routes.common import bridge, int_param, parse
from clarion.http.schemas import page_meta
from clarion.persistence import dead_letters


class ReplayFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(default=None,
                                                                     max_length=1000)
    channel: Literal["email", "push", "sms", "callback"] | None = None
    error_code: str | None = Field(default=None, max_length=100)
    limit: int = Field(default=1000, ge=1, le=1000)


async def list_dead_letters(request: Request) -> EnvelopeResponse:
    page = int_param(request, "page", 1, 1, 1_000_000)
    limit = int_param(request, "limit", 50, 1, 200)
    channel = request.query_params.get("channel")
    if page is None or limit is None or channel not in (None, "email", "push", "sms",
                                                        "callback"):
        return failure(422, "validation_error",
                       "page ≥ 1, 1 ≤ limit ≤ 200, channel email, push, sms or callback")
    async with request.app.state.db.connection() as conn:
        rows, total = await dead_letters.list_dead(
            conn, channel, request.query_params.get("error_code"), limit, (page - 1) * limit)
    return success(rows, meta=page_meta(total, page, limit, min_pages=1))


def _dead_letter_id(request: Request) -> int | None:
    text = request.path_params["dead_letter_id"]
    return int(text) if text.isascii() and text.isdigit() and int(text) < 2**63 else None


async def replay_one(request: Request) -> EnvelopeResponse:
    dead_letter_id = _dead_letter_id(request)
    if dead_letter_id is None:
        return failure(404, "dead_letter_not_found", "no such dead letter")
    command = ReplayDeadLetters(uuid.uuid4().hex, ids=(dead_letter_id,))
    return from_reply(await bridge(request).request(command))


async def replay_many(request: Request) -> EnvelopeResponse:
    body = await parse(request, ReplayFilter)
    command = ReplayDeadLetters(uuid.uuid4().hex, tuple(body.ids) if body.ids else None,
                                body.channel, body.error_code, body.limit)
    return from_reply(await bridge(request).request(command))


async def discard_one(request: Request) -> EnvelopeResponse:
    dead_letter_id = _dead_letter_id(request)
    if dead_letter_id is None:
        return failure(404, "dead_letter_not_found", "no such dead letter")
    command = DiscardDeadLetter(uuid.uuid4().hex, dead_letter_id)
    return from_reply(await bridge(request).request(command))


routes = [
    Route("/v1/dlq", list_dead_letters, methods=["GET"]),
    Route("/v1/dlq/replay", replay_many, methods=["POST"]),
    Route("/v1/dlq/{dead_letter_id}/replay", replay_one, methods=["POST"]),
    Route("/v1/dlq/{dead_letter_id}", discard_one, methods=["DELETE"]),
]
