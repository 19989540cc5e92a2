"""The Python client cannot drift from the server: every route it calls, every query parameter
it sends, every field of its request bodies and of its models is checked against the
`/openapi.json` the running server serves.

A model names its schema (`__schema__`): a component, or the operation whose success `data` it
is. A model of an answer the document does not describe yet has `__schema__ = None`; the test
then checks that the answer is still undescribed, so describing it on the server turns the
check on. An operation the server serves as "Not described yet" (a route missing from
`http/openapi.py` OPERATIONS) cannot be checked field by field: that is an expected failure
naming the route, not a pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from clarion_client.bodies import BODIES, Body
from clarion_client.models import MODELS, Model
from clarion_client.routes import ROUTES, Route

from tests.stack import Stack

pytestmark = pytest.mark.e2e

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def document(stack: Stack) -> Schema:
    reply = httpx.get(stack.base_url + "/openapi.json", timeout=15)
    assert reply.status_code == 200, reply.text
    found: Schema = reply.json()
    return found


def _template(path: str) -> str:
    """A path with every parameter anonymous: `{address:path}` and `{address}` are one."""
    return re.sub(r"{[^}]+}", "{}", path)


def operation(document: Schema, method: str, path: str) -> Schema | None:
    for served, item in document["paths"].items():
        if _template(served) == _template(path) and method.lower() in item:
            op: Schema = item[method.lower()]
            return op
    return None


def deref(document: Schema, node: Schema) -> Schema:
    """`node`, or what its `$ref` points at."""
    if "$ref" not in node:
        return node
    found: Any = document
    for part in node["$ref"].removeprefix("#/").split("/"):
        found = found[part]
    return deref(document, found)


def resolve(document: Schema, schema: Schema) -> Schema:
    """`schema` with its `$ref` followed and its `allOf` merged: properties and required."""
    schema = deref(document, schema)
    properties: Schema = {}
    required: list[str] = []
    for part in schema.get("allOf", []):
        inner = resolve(document, part)
        properties.update(inner.get("properties", {}))
        required += inner.get("required", [])
    properties.update(schema.get("properties", {}))
    required += schema.get("required", [])
    return {**schema, "properties": properties, "required": required}


def success_data(document: Schema, op: Schema) -> Schema | None:
    """The schema of `data` in an operation's success answer (an array's items), or None."""
    status = min(code for code in op["responses"] if code.startswith("2"))
    content = op["responses"][status].get("content", {}).get("application/json")
    if content is None:
        return None
    # The operation's own `data`, not the envelope's generic one it extends.
    data = content["schema"].get("properties", {}).get("data")
    if data is None:
        return None
    data = resolve(document, data)
    return resolve(document, data["items"]) if data.get("type") == "array" else data


def schema_of(document: Schema, ref: str | tuple[str, str]) -> Schema | None:
    if isinstance(ref, str):
        return resolve(document, {"$ref": f"#/components/schemas/{ref}"})
    op = operation(document, *ref)
    assert op is not None, f"{ref[0]} {ref[1]} is not in the document"
    if op.get("tags") == ["undescribed"]:
        pytest.xfail(f"the server serves {ref[0]} {ref[1]} as 'Not described yet' (a route"
                     " missing from http/openapi.py OPERATIONS)")
    return success_data(document, op)


def ids(items: tuple[Any, ...]) -> list[str]:
    return [getattr(i, "__name__", None) or f"{i.method} {i.path}" for i in items]


# -- routes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=ids(ROUTES))
def test_every_route_the_client_calls_is_in_the_document_with_its_method(
        document: Schema, route: Route) -> None:
    assert operation(document, route.method, route.path) is not None, (
        f"{route.method} {route.path} is not in /openapi.json")


@pytest.mark.parametrize("route", [r for r in ROUTES if r.query],
                         ids=ids(tuple(r for r in ROUTES if r.query)))
def test_every_query_parameter_the_client_sends_is_documented(document: Schema,
                                                              route: Route) -> None:
    op = operation(document, route.method, route.path)
    assert op is not None
    if op.get("tags") == ["undescribed"]:
        pytest.xfail(f"the server serves {route.method} {route.path} as 'Not described yet'")
    documented = {p["name"] for p in op["parameters"] if p.get("in") == "query"}
    assert set(route.query) <= documented, f"undocumented: {set(route.query) - documented}"


def test_the_send_headers_the_client_relies_on_are_documented(document: Schema) -> None:
    op = operation(document, "POST", "/v1/notifications")
    assert op is not None
    parameters = [deref(document, p) for p in op["parameters"]]
    headers = {p["name"].lower() for p in parameters if p["in"] == "header"}

    assert {"idempotency-key", "x-request-id"} <= headers
    assert "Retry-After" in op["responses"]["503"].get("headers", {})


@pytest.mark.parametrize("route", [r for r in ROUTES if "page" in r.query],
                         ids=ids(tuple(r for r in ROUTES if "page" in r.query)))
def test_every_list_the_client_pages_through_answers_page_meta(document: Schema,
                                                               route: Route) -> None:
    op = operation(document, route.method, route.path)
    assert op is not None
    status = min(code for code in op["responses"] if code.startswith("2"))
    schema = op["responses"][status]["content"]["application/json"]["schema"]
    meta = resolve(document, schema)["properties"]["meta"]

    assert meta == {"$ref": "#/components/schemas/PageMeta"}


# -- models and bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("model", [m for m in MODELS if m.__schema__ is not None],
                         ids=ids(tuple(m for m in MODELS if m.__schema__ is not None)))
def test_every_field_of_every_model_is_in_its_schema(document: Schema,
                                                     model: type[Model]) -> None:
    assert model.__schema__ is not None
    schema = schema_of(document, model.__schema__)
    assert schema is not None and schema.get("properties"), f"{model.__schema__} has no fields"

    missing = set(model.declared_fields()) - set(schema["properties"])
    assert missing == set(), f"{model.__name__} declares fields the server does not: {missing}"


@pytest.mark.parametrize("model", [m for m in MODELS if m.__schema__ is None],
                         ids=ids(tuple(m for m in MODELS if m.__schema__ is None)))
def test_a_model_without_a_schema_is_of_an_answer_still_undescribed(
        document: Schema, model: type[Model]) -> None:
    # BatchItem: one item of POST /v1/notifications/batch's `data`.
    op = operation(document, "POST", "/v1/notifications/batch")
    assert op is not None
    assert success_data(document, op) is None, (
        f"the document now describes what {model.__name__} reads: give it a __schema__")


@pytest.mark.parametrize("body", BODIES, ids=ids(BODIES))
def test_every_request_body_matches_its_schema(document: Schema, body: type[Body]) -> None:
    schema = schema_of(document, body.__schema__)
    assert schema is not None
    declared = set(body.declared_fields())

    assert declared - set(schema["properties"]) == set(), "fields the server would refuse"
    assert set(schema["required"]) - declared == set(), "fields the server requires"


def test_each_body_is_the_one_its_route_takes(document: Schema) -> None:
    taken: Iterator[tuple[str, str, str]] = (
        (m, p, op["requestBody"]["content"]["application/json"]["schema"]["$ref"])
        for p, item in document["paths"].items() for m, op in item.items()
        if "application/json" in op.get("requestBody", {}).get("content", {}))
    by_route = {(m.upper(), _template(p)): ref.rsplit("/", 1)[1] for m, p, ref in taken}
    expected = {
        ("POST", "/v1/notifications"): "NotificationIn", ("POST", "/v1/users"): "UserIn",
        ("PATCH", "/v1/users/{}"): "UserPatch", ("POST", "/v1/users/{}/push-tokens"):
        "PushTokenIn", ("POST", "/v1/templates"): "TemplateIn",
        ("PUT", "/v1/templates/{}"): "TemplateIn", ("POST", "/v1/templates/render"): "RenderIn",
        ("POST", "/v1/suppressions"): "NewSuppression", ("PUT", "/v1/callbacks"): "CallbackIn",
        ("POST", "/v1/dlq/replay"): "ReplayFilter",
    }

    assert {k: by_route.get(k) for k in expected} == expected
    assert {b.__schema__ for b in BODIES} == set(expected.values())
