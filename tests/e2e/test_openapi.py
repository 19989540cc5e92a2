"""The API's description: /openapi.json is valid OpenAPI 3.1 and covers every route, /docs renders
it from local assets only, and a request built from the description is accepted by the running app.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import jsonschema_rs
import pytest
from starlette.routing import Route

from clarion.config.settings import Settings, load_settings
from clarion.http.app import create_app
from clarion.http.openapi import ERRORS, OPERATIONS, app_operations, build_openapi
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


def app_routes(settings: Settings | None = None) -> list[Any]:
    # Building the app opens nothing: no service is needed to read its routes.
    return list(create_app(settings or load_settings()).routes)


def walk(node: Any, path: str = "#") -> Iterator[tuple[str, Any]]:
    """Every (JSON pointer, value) in a JSON document."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def resolve(spec: dict[str, Any], ref: str) -> Any:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator for one schema of the document, its `$ref`s resolved in the document."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": spec["components"]})


# -- the document, without a running app ---------------------------------------------------------


def test_every_app_route_has_a_row_in_the_operations_table() -> None:
    missing = [key for key in app_operations(app_routes()) if key not in OPERATIONS]

    assert missing == [], f"add these to OPERATIONS in http/openapi.py: {missing}"


def test_the_operations_table_describes_no_route_the_app_lacks() -> None:
    routed = set(app_operations(app_routes()))

    assert [key for key in OPERATIONS if key not in routed] == []


def test_building_the_document_refuses_a_route_missing_from_the_table() -> None:
    async def handler(request: Any) -> None: ...

    routes = [*app_routes(), Route("/v1/undocumented", handler, methods=["POST"])]

    with pytest.raises(ValueError, match="POST /v1/undocumented"):
        build_openapi(routes)


def test_serving_the_document_lists_an_undescribed_route_instead_of_failing() -> None:
    async def handler(request: Any) -> None: ...

    routes = [*app_routes(), Route("/v1/undocumented", handler, methods=["POST"])]

    operation = build_openapi(routes, strict=False)["paths"]["/v1/undocumented"]["post"]
    assert operation["tags"] == ["undescribed"]
    assert operation["security"] == [{"bearer": ["admin"]}]  # no rule names it: fails closed


def test_the_document_is_valid_openapi_3_1() -> None:
    # The official OAS 3.1 schema (2022-10-07), as schemathesis ships it.
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    spec = build_openapi(app_routes())
    errors = [f"{e.instance_path}: {e.message}"
              for e in jsonschema_rs.Draft202012Validator(OPENAPI_31).iter_errors(spec)]

    assert spec["openapi"].startswith("3.1.")
    assert errors == []


def test_every_schema_in_the_document_is_valid_json_schema_and_every_ref_resolves() -> None:
    spec = build_openapi(app_routes())
    schemas = [(p, n) for p, n in walk(spec)
               if p.endswith("/schema") or re.fullmatch(r"#/components/schemas/[^/]+", p)]
    refs = [(p, n) for p, n in walk(spec) if p.endswith("/$ref")]

    assert len(schemas) > 50
    assert [p for p, n in schemas if not jsonschema_rs.meta.is_valid(n)] == []
    for pointer, ref in refs:
        assert resolve(spec, ref) is not None, pointer


def test_every_operation_is_unique_named_and_answers_in_the_envelope() -> None:
    spec = build_openapi(app_routes())
    operations = [(path, method, op) for path, item in spec["paths"].items()
                  for method, op in item.items()]
    ids = [op["operationId"] for _, _, op in operations]

    assert len(set(ids)) == len(ids)
    for path, method, op in operations:
        names = re.findall(r"{([^}]+)}", path)
        documented = [p["name"] for p in op["parameters"] if p.get("in") == "path"]
        assert documented == names, (method, path)
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema["allOf"] == [{"$ref": "#/components/schemas/ErrorEnvelope"}]
            for code in schema["properties"]["error"]["enum"]:
                assert ERRORS[code][0] == int(status), (method, path, code)


def test_secured_routes_document_the_bearer_scheme_and_management_routes_the_secret() -> None:
    spec = build_openapi(app_routes())

    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    users = spec["paths"]["/v1/users"]["post"]
    assert users["security"] == [{"bearer": ["admin"]}, {"internalSecret": []}]
    notify = spec["paths"]["/v1/notifications"]["post"]
    assert notify["security"] == [{"bearer": ["send", "admin"]}, {"consoleSession": []}]
    batch = spec["paths"]["/v1/notifications/batch"]["post"]
    assert batch["security"] == [{"bearer": ["send", "admin"]}]
    read = spec["paths"]["/v1/notifications/{notification_id}"]["get"]
    assert read["security"] == [{"bearer": ["send", "admin"]}, {"consoleSession": []}]
    assert {"401", "403", "413", "415", "422", "429", "503", "504"} <= set(notify["responses"])
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert spec["paths"]["/openapi.json"]["get"]["security"] == []


def test_request_bodies_are_described_by_the_models_that_validate_them() -> None:
    from clarion.http.schemas import NotificationIn

    spec = build_openapi(app_routes())
    body = spec["paths"]["/v1/notifications"]["post"]["requestBody"]["content"]
    documented = spec["components"]["schemas"]["NotificationIn"]

    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/NotificationIn"}
    assert documented == NotificationIn.model_json_schema(
        ref_template="#/components/schemas/{model}")


# -- the running app -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(test_settings: Settings, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("openapi")) as running:
        yield running


@pytest.fixture(scope="module")
def served(anonymous: httpx.Client) -> dict[str, Any]:
    reply = anonymous.get("/openapi.json")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    spec: dict[str, Any] = reply.json()
    return spec


def test_the_served_document_needs_no_credentials_and_lists_every_route_of_the_app(
        stack: Stack, served: dict[str, Any]) -> None:
    documented = {(m.upper(), p) for p, item in served["paths"].items() for m in item}

    assert documented == set(app_operations(app_routes(stack.settings)))


def fill(path: str) -> str:
    """A concrete URL for a path template (values that exist nowhere)."""
    values = {"notification_id": str(uuid.uuid4()), "dead_letter_id": "9999999"}
    return re.sub(r"{([^}]+)}", lambda m: values.get(m[1], "no-such-thing"), path)


def test_the_documented_security_is_what_the_app_enforces(
        anonymous: httpx.Client, served: dict[str, Any]) -> None:
    wrong = []
    for path, item in served["paths"].items():
        for method, op in item.items():
            reply = anonymous.request(method.upper(), fill(path))
            if (reply.status_code == 401) != bool(op["security"]):
                wrong.append((method, path, reply.status_code))

    assert wrong == []


class Links(HTMLParser):
    """Every URL a page loads or links to (src and href)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_the_docs_page_loads_only_assets_this_app_serves(anonymous: httpx.Client) -> None:
    reply = anonymous.get("/docs")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    links = Links()
    links.feed(reply.text)

    assert not re.search(r"(https?:)?//", reply.text.replace("<!DOCTYPE html>", ""))
    assert {"/docs/assets/swagger-ui.css", "/docs/assets/swagger-ui-bundle.js"} <= set(links.urls)
    assert '"/openapi.json"' in reply.text
    for url in links.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = anonymous.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0, url
    script = anonymous.get("/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in script.headers["content-type"]
    assert b"SwaggerUIBundle" in script.content


def test_an_unknown_asset_is_a_404_in_the_envelope(anonymous: httpx.Client) -> None:
    reply = anonymous.get("/docs/assets/no-such-file.js")

    assert reply.status_code == 404
    assert reply.json()["error"] == "not_found"


def test_a_notification_built_from_the_documented_schema_is_accepted(
        stack: Stack, served: dict[str, Any]) -> None:
    client = stack.client()
    user = client.post("/v1/users", json={"user_id": f"u-{uuid.uuid4().hex[:10]}",
                                          "email_address": f"{uuid.uuid4().hex[:8]}@example.com"})
    assert user.status_code == 201, user.text
    key = f"doc-{uuid.uuid4().hex[:8]}"
    template = client.post("/v1/templates", json={"template_key": key, "subject": "Hi {{ name }}",
                                                  "body": "Hello {{ name }}."})
    assert template.status_code == 201, template.text
    operation = served["paths"]["/v1/notifications"]["post"]
    media = operation["requestBody"]["content"]["application/json"]
    body = {**media["example"], "user_id": user.json()["data"]["user_id"], "template_key": key}
    request_schema = validator(served, media["schema"])
    assert request_schema.is_valid(media["example"])  # the document's own example is valid
    assert request_schema.is_valid(body)

    reply = client.post("/v1/notifications", json=body)

    assert reply.status_code == 202, reply.text
    answer_schema = operation["responses"]["202"]["content"]["application/json"]["schema"]
    errors = [e.message for e in validator(served, answer_schema).iter_errors(reply.json())]
    assert errors == []
    assert reply.json()["data"]["channels"] == {"email": "queued"}
