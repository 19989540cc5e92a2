"""POST /v1/templates (version 1), PUT /v1/templates/{key} (next version), GET /v1/templates/{key}."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import CreateTemplate
from clarion.http.responses import EnvelopeResponse, failure, from_reply, success
from clarion.http.routes.common import BadRequest, bridge, parse
from clarion.http.schemas import TemplateIn
from clarion.persistence import queries
from clarion.persistence.records import Template


def _template(body: TemplateIn, version: int = 1) -> Template:
    return Template(body.template_key, body.language, version, body.subject, body.body,
                    body.html_body, body.push_title, body.push_body, body.description)


async def create_template(request: Request) -> EnvelopeResponse:
    try:
        body = await parse(request, TemplateIn)
    except BadRequest as exc:
        return exc.response
    command = CreateTemplate(uuid.uuid4().hex, _template(body))
    return from_reply(await bridge(request).request(command))


async def new_version(request: Request) -> EnvelopeResponse:
    try:
        body = await parse(request, TemplateIn)
    except BadRequest as exc:
        return exc.response
    if body.template_key != request.path_params["template_key"]:
        return failure(422, "validation_error", "template_key in the body must match the URL",
                       {"fields": [{"field": "template_key", "message": "does not match"}]})
    command = CreateTemplate(uuid.uuid4().hex, _template(body), new_version=True)
    return from_reply(await bridge(request).request(command))


async def get_template(request: Request) -> EnvelopeResponse:
    key = request.path_params["template_key"]
    language = request.query_params.get("language")
    version_text = request.query_params.get("version")
    if version_text is not None and not version_text.isdigit():
        return failure(422, "validation_error", "version must be a positive integer",
                       {"fields": [{"field": "version", "message": "not a positive integer"}]})
    version = int(version_text) if version_text else None
    async with request.app.state.db.connection() as conn:
        found = await queries.template_versions(conn, key, language, version)
    if not found:
        return failure(404, "template_not_found", f"no template '{key}'")
    languages: dict[str, dict] = {}
    for template in found:  # newest version first: each language keeps its latest
        languages.setdefault(template.language, template.to_json())
    return success({"template_key": key, "languages": languages})


routes = [
    Route("/v1/templates", create_template, methods=["POST"]),
    Route("/v1/templates/{template_key}", new_version, methods=["PUT"]),
    Route("/v1/templates/{template_key}", get_template, methods=["GET"]),
]
