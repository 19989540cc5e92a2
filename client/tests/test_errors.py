"""Typed errors: Clarion's envelope becomes an exception of the status's class carrying the
stable code, the message, the request id, Retry-After and the envelope's data."""

from __future__ import annotations

import httpx
import pytest

from clarion_client import (
    BadRequest,
    ClarionError,
    Conflict,
    Forbidden,
    InvalidResponse,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from clarion_client.errors import error_class, parse_retry_after
from fakes import Script, envelope, refusal


@pytest.mark.parametrize(("status", "cls"), [
    (400, BadRequest), (401, Unauthorized), (403, Forbidden), (404, NotFound),
    (405, BadRequest), (409, Conflict), (413, BadRequest), (415, BadRequest),
    (418, BadRequest), (422, ValidationError), (429, RateLimited), (500, ServerError),
    (502, ServerError), (503, Unavailable), (504, Unavailable)])
def test_each_status_has_its_class(status: int, cls: type[ClarionError]) -> None:
    assert error_class(status) is cls
    assert issubclass(cls, ClarionError)


def test_an_error_carries_code_message_request_id_and_details() -> None:
    fields = {"fields": [{"field": "priority", "message": "Input should be 'high'"}]}
    script = Script(refusal(422, "validation_error", "invalid fields: priority", fields,
                            headers={"X-Request-ID": "req-from-clarion"}))

    with script.client() as clarion, pytest.raises(ValidationError) as caught:
        clarion.notifications.send("u-1", "welcome", priority="urgent")

    error = caught.value
    assert (error.status, error.code, error.message) == (
        422, "validation_error", "invalid fields: priority")
    assert error.request_id == "req-from-clarion"
    assert error.details == fields and error.fields == fields["fields"]
    assert "validation_error" in str(error) and "req-from-clarion" in str(error)


def test_without_the_header_the_error_names_the_request_id_the_client_sent() -> None:
    script = Script(refusal(404, "user_not_found"))

    with script.client() as clarion, pytest.raises(NotFound) as caught:
        clarion.users.get("nobody")

    assert caught.value.request_id == script.header("x-request-id")[0]


def test_retry_after_is_read_in_seconds() -> None:
    script = Script(refusal(503, "storage_unavailable", headers={"Retry-After": "2"}))

    with script.client(max_attempts=1) as clarion, pytest.raises(Unavailable) as caught:
        clarion.users.get("u-1")

    assert caught.value.retry_after == 2.0


def test_an_answer_that_is_not_an_envelope_still_raises_by_status() -> None:
    script = Script(httpx.Response(502, text="<html>Bad gateway</html>"))

    with script.client() as clarion, pytest.raises(ServerError) as caught:
        clarion.users.get("u-1")

    assert caught.value.code == "http_502" and caught.value.status == 502


def test_a_success_that_is_not_an_envelope_is_an_invalid_response() -> None:
    script = Script(httpx.Response(200, text="hello"))

    with script.client() as clarion, pytest.raises(InvalidResponse):
        clarion.users.get("u-1")


def test_a_success_of_an_unexpected_shape_is_an_invalid_response() -> None:
    script = Script(envelope({"no_user_id": True}))

    with script.client() as clarion, pytest.raises(InvalidResponse) as caught:
        clarion.users.get("u-1")

    assert caught.value.code == "invalid_response"


def test_the_api_key_never_shows_in_the_clients_repr() -> None:
    with Script(envelope()).client() as clarion:
        assert "clk_test" not in repr(clarion)


@pytest.mark.parametrize(("value", "seconds"), [
    ("5", 5.0), (" 1 ", 1.0), ("0", 0.0), (None, None), ("", None), ("soon", None),
    ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0)])
def test_retry_after_in_seconds_or_as_a_date(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=60.0) == seconds
