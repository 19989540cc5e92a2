"""POST /admin/api/templates/preview: the console's editor renders the version being written,
before it is published.

The draft goes to the Templates actor like any preview (`PreviewTemplate` with `draft`), so it is
checked as a new version would be (its syntax, with the field and line; the declared variables)
and rendered in the same sandbox, with the same limits; nothing is stored. A console-only route:
`POST /v1/templates/render` renders stored versions, and the public API keeps that one shape.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import PreviewTemplate
from clarion.http.responses import EnvelopeResponse, from_reply
from clarion.http.routes.common import bridge, parse
from clarion.http.schemas import TemplateIn
from clarion.persistence.records import Template


class DraftIn(TemplateIn):
    """A template as `POST /v1/templates` takes it, and the variables to render it with."""

    message_data: dict[str, Any] = Field(default_factory=dict)


async def preview_draft(request: Request) -> EnvelopeResponse:
    body = await parse(request, DraftIn)
    draft = Template(body.template_key, body.language, 0, body.subject, body.body,
                     body.html_body, body.push_title, body.push_body, body.description,
                     body.sms_body, body.fallback_channels)
    command = PreviewTemplate(
        uuid.uuid4().hex, body.template_key, body.message_data, body.language, draft=draft,
        declared=None if body.variables is None else tuple(body.variables))
    return from_reply(await bridge(request).request(command))


routes = [Route("/admin/api/templates/preview", preview_draft, methods=["POST"])]
