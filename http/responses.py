"""The response envelope every JSON answer uses: {success, data, error, message, meta}."""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse

from clarion.actors.messages import Reply



class EnvelopeResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        import json

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
            headers: dict[str, str] | None = None) -> EnvelopeResponse:
    return EnvelopeResponse(
        {"success": False, "data": details, "error": code, "message": message, "meta": None},
        status_code=status, headers=headers,
    )


def from_reply(reply: Reply) -> EnvelopeResponse:
    """Shape an actor's Reply as an HTTP response."""
    if reply.status < 400:
        headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
        return success(reply.data, reply.status, reply.message, headers=headers)
    headers = None
    if reply.status in (429, 503):
        headers = {"Retry-After": str(max(1, math.ceil(reply.retry_after or 1)))}
    return failure(reply.status, reply.error_code or "error", reply.message, reply.data, headers)
