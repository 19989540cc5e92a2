"""The sync and the async client offer the same operations with the same parameters, and every
call goes through a route of the one route table (the one the end-to-end tests check against
the server's OpenAPI document)."""

from __future__ import annotations

import inspect

from clarion_client import AsyncClarion, Clarion
from clarion_client.routes import ROUTES, Call, Route

NAMESPACES = ["notifications", "users", "templates", "suppressions", "callbacks",
              "dead_letters"]


def public_methods(namespace: object) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member)
            for name, member in inspect.getmembers(namespace, inspect.ismethod)
            if not name.startswith("_")}


def test_both_clients_have_the_same_namespaces_methods_and_parameters() -> None:
    sync = Clarion("http://clarion.test", "clk_test")
    asynchronous = AsyncClarion("http://clarion.test", "clk_test")

    for name in NAMESPACES:
        mine, theirs = public_methods(getattr(sync, name)), public_methods(
            getattr(asynchronous, name))
        assert mine.keys() == theirs.keys(), name
        for method, signature in mine.items():
            assert list(signature.parameters.values()) == list(
                theirs[method].parameters.values()), f"{name}.{method}"
    sync.close()


def test_every_async_operation_but_iteration_is_a_coroutine() -> None:
    asynchronous = AsyncClarion("http://clarion.test", "clk_test")

    for name in NAMESPACES:
        for method in public_methods(getattr(asynchronous, name)):
            function = getattr(getattr(asynchronous, name), method)
            assert inspect.iscoroutinefunction(function) != method.startswith("iterate"), method


def test_the_route_table_has_each_route_once() -> None:
    keys = [(r.method, r.path) for r in ROUTES]

    assert len(keys) == len(set(keys)) and len(keys) >= 30


def test_a_call_refuses_a_query_parameter_its_route_does_not_list() -> None:
    import pytest

    with pytest.raises(ValueError, match="takes no"):
        Call(Route("GET", "/v1/users", ("page",)), lambda data, meta: data,
             query={"pgae": 2})
