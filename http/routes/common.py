"""What the route modules share: parsing a JSON body into a schema, reading query parameters,
reaching the bridge."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from clarion.http.responses import EnvelopeResponse, failure
from clarion.http.schemas import field_errors

M = TypeVar("M", bound=BaseModel)


class BadRequest(Exception):
    """A refused request body; the app's exception handler answers with `response`."""

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
        data: Any = json.loads(raw or b"null", parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise BadRequest(failure(400, "invalid_json", "the body is not valid JSON")) from None
    problem = _unstorable(data)
    if problem:
        raise BadRequest(failure(422, "validation_error", problem,
                                 {"fields": [{"field": "body", "message": problem}]}))
    if not isinstance(data, dict):
        raise BadRequest(failure(422, "validation_error", "the body must be a JSON object",
                                 {"fields": [{"field": "body", "message": "expected an object"}]}))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return _raise_validation(exc)


MAX_DEPTH = 32


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, though Python's parser takes them; PostgreSQL would not.
    raise ValueError(f"{name} is not valid JSON")


def _unstorable(data: Any, depth: int = 0) -> str | None:
    """Why this parsed body cannot be stored and sent as it is, or None.

    PostgreSQL text cannot hold U+0000, UTF-8 cannot carry a lone surrogate (`\ud800`), and a
    structure nested deeper than any template reads is only a way to make us recurse.
    """
    if depth > MAX_DEPTH:
        return f"the body is nested more than {MAX_DEPTH} levels deep"
    if isinstance(data, str):
        if "\x00" in data:
            return "text must not contain the NUL character (U+0000)"
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return "text must be valid Unicode (no lone surrogates)"
        return None
    if isinstance(data, float) and not math.isfinite(data):
        return "numbers must be finite (1e400 overflows to infinity)"
    if isinstance(data, dict):
        for key, value in data.items():
            problem = _unstorable(key, depth + 1) or _unstorable(value, depth + 1)
            if problem:
                return problem
    elif isinstance(data, list):
        for value in data:
            problem = _unstorable(value, depth + 1)
            if problem:
                return problem
    return None


def _raise_validation(exc: ValidationError) -> Any:
    errors = field_errors(exc)
    raise BadRequest(failure(422, "validation_error",
                             "invalid fields: " + ", ".join(e["field"] for e in errors),
                             {"fields": errors}))


def invalid_query(exc: ValidationError) -> EnvelopeResponse:
    """The 422 for query parameters a model refused, naming each."""
    errors = field_errors(exc)
    return failure(422, "validation_error",
                   "invalid query parameters: " + ", ".join(e["field"] for e in errors),
                   {"fields": errors})


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int | None:
    """The query parameter `name` as an integer in [low, high] (`default` when absent), or None
    when it is not plain ASCII digits in that range."""
    text = request.query_params.get(name, str(default))
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        return None
    return int(text)


def bridge(request: Request) -> Any:
    return request.app.state.bridge


def principal(request: Request) -> str:
    """Who is calling, as the access check admitted them ("key:<name>", "console:<subject>")."""
    return str(request.scope["state"]["principal"])


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
