"""The suppression list for operators (README "Suppression list"): read it, add an address,
remove one with a reason, and read back every removal.

    GET    /v1/suppressions                   ?channel= &reason= &address= &page= &limit=
    POST   /v1/suppressions                   {"address", "reason"?, "note"?}
    GET    /v1/suppressions/removals          ?address= &page= &limit=   (the audit)
    GET    /v1/suppressions/{address}         the entry, and its removals
    DELETE /v1/suppressions/{address}         ?reason=  or  {"reason": "..."}   (required)

Reads go straight to PostgreSQL; writes go to the ProviderEvents actor, the list's one writer.
An address is an email or an E.164 number (`+` and digits): that names its channel.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.routing import Route

from clarion.actors.messages import AddSuppression, RemoveSuppression
from clarion.http.responses import EnvelopeResponse, failure, from_reply, success
from clarion.http.routes.common import bridge, int_param, invalid_query, parse, principal
from clarion.http.schemas import Email, Phone, page_meta
from clarion.persistence import suppressions
from clarion.persistence.suppressions import Suppression, channel_of

class _Anything(PathConvertor):
    """Starlette's `path`, newlines included."""

    regex = "(?s:.*)"


register_url_convertor("anything", _Anything())

Reason = Literal["hard_bounce", "invalid_address", "spam_report", "unsubscribed", "manual"]
Why = Annotated[str, Field(min_length=1, max_length=500)]


class NewSuppression(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: Email | Phone
    reason: Reason = "manual"
    note: str | None = Field(default=None, max_length=500)


class Removal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Why


class _Address(BaseModel):
    address: Email | Phone



def _address(text: str) -> str | None:
    """The address as stored (emails lower-cased), or None if it is neither an email nor an
    E.164 number."""
    try:
        return _Address(address=text).address
    except ValidationError:
        return None


async def list_suppressions(request: Request) -> EnvelopeResponse:
    page = int_param(request, "page", 1, 1, 1_000_000)
    limit = int_param(request, "limit", 50, 1, 200)
    channel, reason = request.query_params.get("channel"), request.query_params.get("reason")
    raw_address = request.query_params.get("address")
    address = _address(raw_address) if raw_address is not None else None
    if (page is None or limit is None or channel not in (None, *suppressions.CHANNELS)
            or reason not in (None, *suppressions.REASONS)
            or (raw_address is not None and address is None)):
        return failure(422, "validation_error",
                       "page ≥ 1, 1 ≤ limit ≤ 200, channel email or sms, reason one of "
                       + ", ".join(suppressions.REASONS) + ", address an email or E.164 number")
    async with request.app.state.db.connection() as conn:
        rows, total = await suppressions.list_entries(conn, channel, reason, address, limit,
                                                      (page - 1) * limit)
    return success(rows, meta=page_meta(total, page, limit, min_pages=1))


async def add_suppression(request: Request) -> EnvelopeResponse:
    body = await parse(request, NewSuppression)
    channel = channel_of(body.address)
    entry = Suppression(channel, body.address, body.reason, "api", principal(request),
                        note=body.note)
    return from_reply(await bridge(request).request(AddSuppression(uuid.uuid4().hex, entry)))


async def list_removals(request: Request) -> EnvelopeResponse:
    page = int_param(request, "page", 1, 1, 1_000_000)
    limit = int_param(request, "limit", 50, 1, 200)
    raw_address = request.query_params.get("address")
    address = _address(raw_address) if raw_address is not None else None
    if page is None or limit is None or (raw_address is not None and address is None):
        return failure(422, "validation_error",
                       "page ≥ 1, 1 ≤ limit ≤ 200, address an email or E.164 number")
    async with request.app.state.db.connection() as conn:
        rows, total = await suppressions.list_removals(conn, address, limit, (page - 1) * limit)
    return success(rows, meta=page_meta(total, page, limit, min_pages=1))


async def show_suppression(request: Request) -> EnvelopeResponse:
    address = _address(request.path_params["address"])
    if address is None:
        return failure(404, "suppression_not_found", "not an email address or E.164 number")
    async with request.app.state.db.connection() as conn:
        rows, _ = await suppressions.list_entries(conn, None, None, address, 1, 0)
        removals, _ = await suppressions.list_removals(conn, address, 50, 0)
    if not rows and not removals:
        return failure(404, "suppression_not_found",
                       "that address is not on the suppression list and never was")
    return success({"channel": channel_of(address), "address": address,
                    "suppressed": rows[0] if rows else None, "removals": removals})


async def remove_suppression(request: Request) -> EnvelopeResponse:
    address = _address(request.path_params["address"])
    if address is None:
        return failure(404, "suppression_not_found", "not an email address or E.164 number")
    why = request.query_params.get("reason")
    if why is None and (await request.body()).strip():
        why = (await parse(request, Removal)).reason
    try:
        Removal(reason=why)  # type: ignore[arg-type]
    except ValidationError as exc:
        return invalid_query(exc) if why is not None else failure(
            422, "reason_required",
            "say why the address may be sent to again: ?reason=... or {\"reason\": \"...\"}")
    command = RemoveSuppression(uuid.uuid4().hex, channel_of(address), address,
                                principal(request), str(why))
    return from_reply(await bridge(request).request(command))


routes = [
    Route("/v1/suppressions", list_suppressions, methods=["GET"]),
    Route("/v1/suppressions", add_suppression, methods=["POST"]),
    Route("/v1/suppressions/removals", list_removals, methods=["GET"]),
    # `:anything`: an email's local part may hold a "/" (ops/x@example.com), which no client
    # can carry inside one path segment, encoded or not; and whatever else arrives (a newline,
    # which `:path` does not match) gets this route's own 404, not the app's.
    Route("/v1/suppressions/{address:anything}", show_suppression, methods=["GET"]),
    Route("/v1/suppressions/{address:anything}", remove_suppression, methods=["DELETE"]),
]
