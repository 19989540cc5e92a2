"""The response envelope every JSON answer uses: {success, data, error, message, meta}."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse

from clarion.actors.messages import Reply


class EnvelopeResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        text = json.dumps(content, default=str, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate got in: escape it rather than fail
            return json.dumps(content, default=str, separators=(",", ":")).encode("ascii")


def success(data: Any, status: int = 200, message: str = "",
            meta: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> EnvelopeResponse:
    return EnvelopeResponse(
        {"success": True, "data": data, "error": None, "message": message, "meta": meta},
        status_code=status, headers=headers,
    )


def failure(status: int, code: str, message: str, details: Any = None,
            headers: dict[str, str] | None = None,
            retry_after: float | None = None) -> EnvelopeResponse:
    """An error envelope; `retry_after` (seconds, rounded up, at least 1) adds `Retry-After`."""
    if retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(max(1, math.ceil(retry_after)))}
    return EnvelopeResponse(
        {"success": False, "data": details, "error": code, "message": message, "meta": None},
        status_code=status, headers=headers,
    )


def from_reply(reply: Reply) -> EnvelopeResponse:
    """Shape an actor's Reply as an HTTP response."""
    if reply.status < 400:
        headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
        return success(reply.data, reply.status, reply.message, headers=headers)
    retry_after = (reply.retry_after or 1) if reply.status in (429, 503) else None
    return failure(reply.status, reply.error_code or "error", reply.message, reply.data,
                   retry_after=retry_after)
