"""POST /v1/users (→ the Users actor) and GET /v1/users/{user_id}."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import CreateUser
from clarion.http.responses import EnvelopeResponse, failure, from_reply, success
from clarion.http.routes.common import BadRequest, bridge, parse
from clarion.http.schemas import UserIn
from clarion.persistence import queries
from clarion.persistence.records import User


async def create_user(request: Request) -> EnvelopeResponse:
    try:
        body = await parse(request, UserIn)
    except BadRequest as exc:
        return exc.response
    user = User(
        user_id=body.user_id or uuid.uuid4().hex,
        email_address=body.email_address,
        phone_number=body.phone_number,
        preferred_language=body.preferred_language,
        preferences=body.preferences,
        push_tokens=tuple(body.push_tokens),
    )
    return from_reply(await bridge(request).request(CreateUser(uuid.uuid4().hex, user)))


async def get_user(request: Request) -> EnvelopeResponse:
    user_id = request.path_params["user_id"]
    async with request.app.state.db.connection() as conn:
        user = await queries.user(conn, user_id)
    if user is None:
        return failure(404, "user_not_found", f"no user '{user_id}'")
    return success(user.to_json())


routes = [
    Route("/v1/users", create_user, methods=["POST"]),
    Route("/v1/users/{user_id}", get_user, methods=["GET"]),
]
