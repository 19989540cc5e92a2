"""The users API. Writes go to the Users actor (which owns the user cache and invalidates it);
reads query PostgreSQL directly, so they always see the latest write.

    POST   /v1/users                                 201 the user (user_id given or generated)
    GET    /v1/users[?email=&page=&limit=]           a page of users, in creation order
    GET    /v1/users/{user_id}                       the user
    PATCH  /v1/users/{user_id}                       partial update (see UserPatch)
    DELETE /v1/users/{user_id}                       200 {user_id, deleted}
    POST   /v1/users/{user_id}/push-tokens {token}   201 added, 200 already there
    DELETE /v1/users/{user_id}/push-tokens/{token}   200 the user

DELETE answers 200 with the envelope, like every other route (templates too).
"""

from __future__ import annotations

import uuid

from pydantic import ValidationError
from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import (
    AddPushToken,
    CreateUser,
    DeleteUser,
    RemovePushToken,
    UpdateUser,
)
from clarion.http.responses import EnvelopeResponse, failure, from_reply, success
from clarion.http.routes.common import bridge, invalid_query, parse
from clarion.http.schemas import PushTokenIn, UserIn, UserPatch, UserQuery
from clarion.persistence import queries
from clarion.persistence.records import User


async def create_user(request: Request) -> EnvelopeResponse:
    body = await parse(request, UserIn)
    user = User(
        user_id=body.user_id or uuid.uuid4().hex,
        email_address=body.email_address,
        phone_number=body.phone_number,
        preferred_language=body.preferred_language,
        preferences=body.preferences.model_dump(mode="json"),
        push_tokens=tuple(body.push_tokens),
    )
    return from_reply(await bridge(request).request(CreateUser(uuid.uuid4().hex, user)))


async def list_users(request: Request) -> EnvelopeResponse:
    try:
        query = UserQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        return invalid_query(exc)
    async with request.app.state.db.connection() as conn:
        total, users = await queries.users_page(conn, query.email, query.limit, query.offset)
    return success([u.to_json() for u in users], meta=query.meta(total))


async def get_user(request: Request) -> EnvelopeResponse:
    user_id = request.path_params["user_id"]
    async with request.app.state.db.connection() as conn:
        user = await queries.user(conn, user_id)
    if user is None:
        return failure(404, "user_not_found", f"no user '{user_id}'")
    return success(user.to_json())


async def update_user(request: Request) -> EnvelopeResponse:
    body = await parse(request, UserPatch)
    command = UpdateUser(uuid.uuid4().hex, request.path_params["user_id"], body.changes())
    return from_reply(await bridge(request).request(command))


async def delete_user(request: Request) -> EnvelopeResponse:
    command = DeleteUser(uuid.uuid4().hex, request.path_params["user_id"])
    return from_reply(await bridge(request).request(command))


async def add_push_token(request: Request) -> EnvelopeResponse:
    body = await parse(request, PushTokenIn)
    command = AddPushToken(uuid.uuid4().hex, request.path_params["user_id"], body.token)
    return from_reply(await bridge(request).request(command))


async def remove_push_token(request: Request) -> EnvelopeResponse:
    command = RemovePushToken(uuid.uuid4().hex, request.path_params["user_id"],
                              request.path_params["token"])
    return from_reply(await bridge(request).request(command))


routes = [
    Route("/v1/users", create_user, methods=["POST"]),
    Route("/v1/users", list_users, methods=["GET"]),
    Route("/v1/users/{user_id}", get_user, methods=["GET"]),
    Route("/v1/users/{user_id}", update_user, methods=["PATCH"]),
    Route("/v1/users/{user_id}", delete_user, methods=["DELETE"]),
    Route("/v1/users/{user_id}/push-tokens", add_push_token, methods=["POST"]),
    Route("/v1/users/{user_id}/push-tokens/{token}", remove_push_token, methods=["DELETE"]),
]
