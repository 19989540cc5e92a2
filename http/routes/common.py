"""What the route modules share: parsing a JSON body into a schema, reaching the bridge."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from clarion.http.responses import EnvelopeResponse, failure
from clarion.http.schemas import field_errors

M = TypeVar("M", bound=BaseModel)


class BadRequest(Exception):
    def __init__(self, response: EnvelopeResponse) -> None:
        self.response = response


async def parse(request: Request, model: type[M]) -> M:
    """The body as `model`, or BadRequest carrying a 400/415/422 envelope."""
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type:
        raise BadRequest(failure(415, "unsupported_media_type",
                                 "send the body as application/json"))
    raw = await request.body()
    try:
        data: Any = json.loads(raw or b"null")
    except ValueError:
        raise BadRequest(failure(400, "invalid_json", "the body is not valid JSON")) from None
    if not isinstance(data, dict):
        raise BadRequest(failure(422, "validation_error", "the body must be a JSON object",
                                 {"fields": [{"field": "body", "message": "expected an object"}]}))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return _raise_validation(exc)


def _raise_validation(exc: ValidationError) -> Any:
    errors = field_errors(exc)
    raise BadRequest(failure(422, "validation_error",
                             "invalid fields: " + ", ".join(e["field"] for e in errors),
                             {"fields": errors}))


def bridge(request: Request) -> Any:
    return request.app.state.bridge


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
