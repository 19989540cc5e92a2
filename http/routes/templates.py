"""The templates API. Writes and previews go to the Templates actor (which owns the template
cache and the sandbox); reads query PostgreSQL directly.

    POST   /v1/templates                         201 the first version of a key in a language
    PUT    /v1/templates/{key}                   201 the next version in that language
    GET    /v1/templates[?page=&limit=]          a page of keys: languages, latest versions
    GET    /v1/templates/{key}[?language=&version=]   each language's latest (or that) version
    GET    /v1/templates/{key}/versions          every version x language, newest first
    DELETE /v1/templates/{key}                   200: the key is retired
    POST   /v1/templates/render                  a preview: rendered, never sent

Retiring keeps every row (sent notifications name the version they used; their rendered
content is kept with them) but the key no longer renders (`template_not_found`) nor reads (404).
`POST` creates a retired key again, as new: its version numbers continue after the retired ones
and only the languages created anew are live; `PUT` on a retired key is a 404.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import CreateTemplateVersion, PreviewTemplate, RetireTemplate
from clarion.http.responses import EnvelopeResponse, failure, from_reply, success
from clarion.http.routes.common import bridge, invalid_query, parse
from clarion.http.schemas import PageQuery, RenderIn, TemplateIn, TemplateQuery
from clarion.persistence import queries
from clarion.persistence.records import Template


def _not_found(key: str) -> EnvelopeResponse:
    return failure(404, "template_not_found", f"no template '{key}'")


def _command(body: TemplateIn, new_version: bool = False) -> CreateTemplateVersion:
    template = Template(body.template_key, body.language, 1, body.subject, body.body,
                        body.html_body, body.push_title, body.push_body, body.description,
                        body.sms_body, body.fallback_channels)
    variables = None if body.variables is None else tuple(body.variables)
    return CreateTemplateVersion(uuid.uuid4().hex, template, variables, new_version)


async def create_template(request: Request) -> EnvelopeResponse:
    body = await parse(request, TemplateIn)
    return from_reply(await bridge(request).request(_command(body)))


async def new_version(request: Request) -> EnvelopeResponse:
    body = await parse(request, TemplateIn)
    if body.template_key != request.path_params["template_key"]:
        return failure(422, "validation_error", "template_key in the body must match the URL",
                       {"fields": [{"field": "template_key", "message": "does not match"}]})
    return from_reply(await bridge(request).request(_command(body, new_version=True)))


async def list_templates(request: Request) -> EnvelopeResponse:
    try:
        page = PageQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        return invalid_query(exc)
    async with request.app.state.db.connection() as conn:
        total, keys = await queries.template_keys_page(conn, page.limit, page.offset)
    return success(keys, meta=page.meta(total))


async def get_template(request: Request) -> EnvelopeResponse:
    key = request.path_params["template_key"]
    try:
        query = TemplateQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        return invalid_query(exc)
    async with request.app.state.db.connection() as conn:
        found = await queries.template_versions(conn, key, query.language, query.version)
    if not found:
        return _not_found(key)
    languages: dict[str, dict[str, Any]] = {}
    for template in found:  # newest version first: each language keeps its latest
        languages.setdefault(template["language"], template)
    return success({"template_key": key, "languages": languages})


async def list_versions(request: Request) -> EnvelopeResponse:
    key = request.path_params["template_key"]
    async with request.app.state.db.connection() as conn:
        found = await queries.template_versions(conn, key)
    if not found:
        return _not_found(key)
    return success(found, meta={"total": len(found)})


async def retire_template(request: Request) -> EnvelopeResponse:
    command = RetireTemplate(uuid.uuid4().hex, request.path_params["template_key"])
    return from_reply(await bridge(request).request(command))


async def render_preview(request: Request) -> EnvelopeResponse:
    body = await parse(request, RenderIn)
    command = PreviewTemplate(uuid.uuid4().hex, body.template_key, body.message_data,
                              body.language, body.version)
    return from_reply(await bridge(request).request(command))


routes = [
    Route("/v1/templates", create_template, methods=["POST"]),
    Route("/v1/templates", list_templates, methods=["GET"]),
    Route("/v1/templates/render", render_preview, methods=["POST"]),
    Route("/v1/templates/{template_key}", new_version, methods=["PUT"]),
    Route("/v1/templates/{template_key}", get_template, methods=["GET"]),
    Route("/v1/templates/{template_key}", retire_template, methods=["DELETE"]),
    Route("/v1/templates/{template_key}/versions", list_versions, methods=["GET"]),
]
