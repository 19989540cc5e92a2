"""Robustness: schemathesis fuzzes the running app from its own /openapi.json, then hand-written
hostile requests (huge, malformed, deeply nested, mistyped, not UTF-8).

Whatever is sent, the app must answer in the envelope: never a 5xx, an error always `success`
false with a stable code from `clarion.http.openapi.ERRORS`, and no stack trace in any body.
The fuzzer does not stop at the first bad answer: it records every one, and each operation's
test lists all of its own. Generation is derandomized (Hypothesis derives its seed from the test
itself), so CI sends the same requests every run for the same /openapi.json.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from clarion.config.settings import Settings
from clarion.http.openapi import ERRORS, OPERATIONS, Operation
from clarion.http.schemas import NotificationIn
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

EXAMPLES_PER_MODE = 25  # valid, then as many invalid, for each of ~35 operations: > 1,700
MIN_REQUESTS = 1000
TRACE_MARKERS = ("Traceback", 'File "')


@dataclass
class BadAnswer:
    operation: str
    problem: str
    request: str
    status: int
    body: str
    seen: int = 1


sent: dict[str, int] = {}  # generated requests, by operation
bad_answers: dict[tuple[str, str], BadAnswer] = {}  # the first of each kind, and how many


def envelope_problems(status: int, content_type: str, body: bytes, request_text: str,
                      enveloped: bool = True) -> list[str]:
    """What is wrong with one answer, by the rules every route keeps (empty: nothing)."""
    problems = []
    text = body.decode("utf-8", "replace")
    if status >= 500:
        problems.append(f"server error {status}")
    for marker in TRACE_MARKERS:
        if marker in text and marker not in request_text:  # not merely echoed back
            problems.append(f"stack trace text {marker!r} in the body")
    if status < 400 and not (enveloped and content_type.startswith("application/json")):
        return problems
    try:
        answer = json.loads(body)
    except ValueError:
        return [*problems, f"not JSON ({content_type or 'no content type'})"]
    if not isinstance(answer, dict) or set(answer) != {"success", "data", "error", "message",
                                                       "meta"}:
        return [*problems, "not the envelope"]
    if status >= 400:
        if answer["success"] is not False:
            problems.append("an error with success not false")
        if not isinstance(answer["error"], str) or answer["error"] not in ERRORS:
            problems.append(f"unstable error code {answer['error']!r}")
    elif answer["success"] is not True or answer["error"] is not None:
        problems.append("a success that is not success")
    return problems


# -- the stack ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(test_settings: Settings, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # No rate limit: a 429 in the middle of the run would hide what the request would have done.
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("fuzz"),
                       rate_limit_per_second=0) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> Any:
    # An explicit config: a schemathesis.toml lying around must not change what is sent.
    config = SchemathesisConfig.from_dict({"request-timeout": 30})
    return schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json", config=config,
                                         timeout=10)


def test_the_fuzzer_sees_every_operation_of_the_table(api_schema: Any) -> None:
    served = {(o.ok().method.upper(), o.ok().path) for o in api_schema.get_all_operations()}

    # Schemathesis leaves out the path its schema came from; the test below fuzzes it anyway.
    assert served == set(OPERATIONS) - {("GET", "/openapi.json")}


_validators: dict[tuple[str, str, str], Any] = {}


def documentation_problems(spec: dict[str, Any], method: str, path: str, status: int,
                           content_type: str, body: bytes) -> list[str]:
    """Where an answer differs from what /openapi.json says this operation answers."""
    responses = spec["paths"][path][method.lower()]["responses"]
    documented = responses.get(str(status))
    if documented is None:
        return [f"undocumented status {status}"]
    schema = documented.get("content", {}).get("application/json", {}).get("schema")
    if schema is None or not content_type.startswith("application/json"):
        return []
    key = (method, path, str(status))
    if key not in _validators:
        _validators[key] = jsonschema_rs.Draft202012Validator(
            {**schema, "components": spec["components"]})
    try:
        answer = json.loads(body)
    except ValueError:
        return []  # envelope_problems says so
    error = next(iter(_validators[key].iter_errors(answer)), None)
    if error is None:
        return []
    where = "/".join(map(str, error.instance_path))
    return [f"not the documented {status} answer: {error.message[:200]} at {where}"]


def record(case: Any, response: Any, operation: Operation) -> None:
    label = f"{case.method.upper()} {case.path}"
    sent[label] = sent.get(label, 0) + 1
    request = response.request
    body = request.body or b""
    request_text = f"{request.url}\n{body if isinstance(body, str) else body.decode('latin-1')}"
    content_type = (response.headers.get("content-type") or [""])[0]
    problems = envelope_problems(
        response.status_code, content_type, response.content, request_text,
        enveloped=operation.enveloped and operation.media_type == "application/json")
    if response.status_code < 500:  # a server error is reported once, above
        problems += documentation_problems(case.operation.schema.raw_schema, case.method,
                                           case.path, response.status_code, content_type,
                                           response.content)
    for problem in problems:
        key = (f"{case.method.upper()} {case.path}", problem)
        if key in bad_answers:
            bad_answers[key].seen += 1
            continue
        bad_answers[key] = BadAnswer(key[0], problem, case.as_curl_command(),
                                     response.status_code, response.text[:500])


# The pytest plugin of schemathesis 4 cannot load a schema from a fixture under pytest 9.2
# (it renames nodes through an attribute pytest removed), so each operation gets a plain
# Hypothesis test over schemathesis' strategies: valid requests, then invalid ones.
@pytest.mark.parametrize("method,path", list(OPERATIONS), ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_generated_request_gets_a_bad_answer(stack: Stack, api_schema: Any, method: str,
                                                path: str) -> None:
    operation = api_schema[path][method]
    documented = OPERATIONS[(method, path)]
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode, headers=auth))
        @settings(max_examples=EXAMPLES_PER_MODE, derandomize=True, deadline=None,
                  database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def exercise(case: Any) -> None:
            try:
                response = case.call(timeout=30)
            except requests.ConnectionError as exc:  # the server dropped the connection
                label = f"{case.method.upper()} {case.path}"
                sent[label] = sent.get(label, 0) + 1
                bad_answers.setdefault((label, "connection dropped"), BadAnswer(
                    label, "connection dropped", case.as_curl_command(), 0, repr(exc)))
                return
            record(case, response, documented)

        exercise()
    found = [b for b in bad_answers.values() if b.operation == f"{method} {path}"]
    report = "\n\n".join(
        f"{b.problem} (x{b.seen})\n  request: {b.request}\n  answer: {b.status} {b.body}"
        for b in found)
    assert not found, f"{len(found)} kinds of bad answer:\n\n{report}"


def test_the_fuzzer_sent_at_least_a_thousand_requests() -> None:
    counts = ", ".join(f"{label}: {n}" for label, n in sent.items())
    print(f"\n{sum(sent.values())} generated requests ({counts})")

    assert sum(sent.values()) >= MIN_REQUESTS, counts


# -- hand-written hostile requests --------------------------------------------------------------


@pytest.fixture(scope="module")
def api(stack: Stack) -> httpx.Client:
    return stack.client()


@pytest.fixture(scope="module")
def ready_target(api: httpx.Client) -> dict[str, str]:
    """A user and a template a notification can be sent to."""
    user = api.post("/v1/users", json={"user_id": f"fz-{uuid.uuid4().hex[:10]}",
                                       "email_address": f"{uuid.uuid4().hex[:8]}@example.com"})
    assert user.status_code == 201, user.text
    key = f"fz-{uuid.uuid4().hex[:8]}"
    template = api.post("/v1/templates", json={"template_key": key, "subject": "Hi",
                                               "body": "Hello {{ name }}."})
    assert template.status_code == 201, template.text
    return {"user_id": user.json()["data"]["user_id"], "template_key": key}


def assert_clean_refusal(reply: httpx.Response, status: int | tuple[int, ...],
                         code: str | tuple[str, ...], sent_text: str = "") -> dict[str, Any]:
    statuses = status if isinstance(status, tuple) else (status,)
    codes = code if isinstance(code, tuple) else (code,)
    assert envelope_problems(reply.status_code, reply.headers.get("content-type", ""),
                             reply.content, sent_text) == [], reply.text[:500]
    assert reply.status_code in statuses, reply.text[:500]
    answer: dict[str, Any] = reply.json()
    assert answer["error"] in codes, answer
    return answer


def with_target(target: dict[str, str], members: str) -> str:
    """A raw JSON object: the target's members, then `members` (written as JSON text)."""
    return json.dumps(target)[:-1] + ", " + members + "}"


def assert_still_serving(api: httpx.Client, target: dict[str, str]) -> None:
    assert api.get("/health").status_code == 200
    reply = api.post("/v1/notifications", json={**target, "message_data": {"name": "Ada"}})
    assert reply.status_code == 202, reply.text


def test_a_body_over_the_limit_is_a_413_whether_announced_or_streamed(
        stack: Stack, api: httpx.Client) -> None:
    too_big = b'{"pad": "' + b"x" * stack.settings.max_body_bytes + b'"}'

    announced = api.post("/v1/notifications", content=too_big,
                         headers={"content-type": "application/json"})
    streamed = api.post("/v1/notifications", content=iter([too_big[:1000], too_big[1000:]]),
                        headers={"content-type": "application/json"})

    assert_clean_refusal(announced, 413, "payload_too_large")
    assert_clean_refusal(streamed, 413, "payload_too_large")
    assert "content-length" not in streamed.request.headers


@pytest.mark.parametrize("raw", [b"{", b'{"user_id": }', b"{'user_id': 'x'}", b"nul",
                                 b'{"a": 1} trailing', b"\x00\x01\x02"])
def test_malformed_json_is_a_400_invalid_json(api: httpx.Client, raw: bytes) -> None:
    reply = api.post("/v1/notifications", content=raw,
                     headers={"content-type": "application/json"})

    assert_clean_refusal(reply, 400, "invalid_json")


def wrong_values(field: str) -> list[Any]:
    """Values of the wrong type for `field`: those its documented schema refuses."""
    documented = NotificationIn.model_json_schema(ref_template="#/$defs/{model}")
    field_schema = {**documented["properties"][field], "$defs": documented.get("$defs", {})}
    checker = jsonschema_rs.Draft202012Validator(field_schema)
    candidates = [12345, "not-the-right-type", 1.5, ["x"], {"x": 1}, False]
    return [value for value in candidates if not checker.is_valid(value)]


@pytest.mark.parametrize("field", list(NotificationIn.model_fields))
def test_a_wrong_type_in_any_notification_field_is_a_422_naming_the_field(
        api: httpx.Client, ready_target: dict[str, str], field: str) -> None:
    values = wrong_values(field)
    assert len(values) >= 3
    for value in values:
        reply = api.post("/v1/notifications", json={**ready_target, field: value})

        answer = assert_clean_refusal(reply, 422, "validation_error")
        named = [e["field"].split(".")[0] for e in answer["data"]["fields"]]
        assert field in named, (value, answer)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml"])
def test_a_body_that_is_not_json_is_a_415(api: httpx.Client, ready_target: dict[str, str],
                                          content_type: str) -> None:
    reply = api.post("/v1/notifications", content=json.dumps(ready_target),
                     headers={"content-type": content_type})

    assert_clean_refusal(reply, 415, "unsupported_media_type")


HUGE = [
    ('"template_version": 2147483648', "one past PostgreSQL's integer"),
    ('"template_version": 1' + "0" * 30, "10**30"),
    ('"template_version": 1' + "0" * 400, "10**400"),
    ('"template_version": 1e400', "a float that overflows to infinity"),
    ('"template_version": -1e400', "minus infinity"),
    ('"template_version": NaN', "NaN, which JSON does not have"),
    ('"message_data": {"name": "Ada", "n": 1' + "0" * 400 + "}", "10**400 in message_data"),
    ('"message_data": {"name": "Ada", "n": 1e400}', "infinity in message_data"),
    ('"message_data": {"name": "Ada", "n": NaN}', "NaN in message_data"),
    ('"message_data": {"name": "Ada", "n": -0.0, "m": 1e-400}', "negative zero and underflow"),
]


@pytest.mark.parametrize("member", [h[0] for h in HUGE], ids=[h[1] for h in HUGE])
def test_huge_numbers_are_accepted_or_refused_never_a_server_error(
        api: httpx.Client, ready_target: dict[str, str], member: str) -> None:
    raw = with_target(ready_target, member)

    reply = api.post("/v1/notifications", content=raw,
                     headers={"content-type": "application/json"})

    assert envelope_problems(reply.status_code, reply.headers.get("content-type", ""),
                             reply.content, raw) == [], reply.text[:500]
    assert reply.status_code in (202, 400, 404, 422), reply.text[:500]


HUGE_QUERIES = ["/v1/notifications?page=4419404436960600309891072", "/v1/users?page=10000000000",
                "/v1/templates?page=10000000000", "/v1/dlq?page=10000000000",
                "/v1/outbox?limit=10000000000", "/v1/templates/{template_key}?version=2147483648",
                "/v1/notifications?limit=10000000000"]


@pytest.mark.parametrize("url", HUGE_QUERIES)
def test_huge_numbers_in_a_query_are_refused_never_a_server_error(
        api: httpx.Client, ready_target: dict[str, str], url: str) -> None:
    reply = api.get(url.format(**ready_target))

    assert envelope_problems(reply.status_code, reply.headers.get("content-type", ""),
                             reply.content, url) == [], reply.text[:500]
    assert reply.status_code in (200, 404, 422), reply.text[:500]


@pytest.mark.parametrize("where", ["the whole body", "message_data"])
def test_ten_thousand_levels_of_nesting_are_refused_cleanly(
        api: httpx.Client, ready_target: dict[str, str], where: str) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    raw = deep if where == "the whole body" else with_target(
        ready_target, f'"message_data": {{"deep": {deep}}}')

    started = time.monotonic()
    reply = api.post("/v1/notifications", content=raw,
                     headers={"content-type": "application/json"})

    assert_clean_refusal(reply, (400, 422), ("invalid_json", "validation_error"))
    assert time.monotonic() - started < 5
    assert_still_serving(api, ready_target)


INVALID_UTF8 = [
    (b'{"user_id": "\xff\xfe", "template_key": "t"}', "bytes that are not UTF-8"),
    (b'{"user_id": "u", "template_key": "\xc3\x28"}', "a broken two-byte sequence"),
    (b'{"user_id": "u", "template_key": "\xed\xa0\x80"}', "an encoded surrogate"),
    (b"\xef\xbb\xbf{}", "a UTF-8 byte order mark"),
]


@pytest.mark.parametrize("raw", [u[0] for u in INVALID_UTF8], ids=[u[1] for u in INVALID_UTF8])
def test_a_body_that_is_not_utf8_is_refused_cleanly(api: httpx.Client, raw: bytes) -> None:
    reply = api.post("/v1/notifications", content=raw,
                     headers={"content-type": "application/json"})

    assert_clean_refusal(reply, (400, 422), ("invalid_json", "validation_error"))


SURROGATES = [
    ("/v1/notifications", '{"user_id": "u", "template_key": "t", "\\ud800": 1}',
     "a lone surrogate as an unknown field's name"),
    ("/v1/notifications", 'TARGET "message_data": {"name": "\\ud800"}',
     "a lone surrogate in message_data"),
    ("/v1/templates/render", 'TARGET "message_data": {"name": "\\udfff"}',
     "a lone surrogate rendered in a preview"),
    ("/v1/users", '{"\\udfff": 1}', "a lone surrogate as a user field's name"),
    ("/v1/users", '{"email_address": "\\ud800@example.com"}', "a lone surrogate in an email"),
    ("/v1/templates", '{"template_key": "k", "subject": "\\ud800", "body": "b"}',
     "a lone surrogate in a template"),
]


@pytest.mark.parametrize("path,raw", [s[:2] for s in SURROGATES], ids=[s[2] for s in SURROGATES])
def test_a_lone_surrogate_escape_is_refused_or_stored_never_a_server_error(
        api: httpx.Client, ready_target: dict[str, str], path: str, raw: str) -> None:
    if raw.startswith("TARGET "):
        target = ready_target if path == "/v1/notifications" else {
            "template_key": ready_target["template_key"]}
        raw = with_target(target, raw.removeprefix("TARGET "))

    reply = api.post(path, content=raw, headers={"content-type": "application/json"})

    assert envelope_problems(reply.status_code, reply.headers.get("content-type", ""),
                             reply.content, raw) == [], reply.text[:500]
    assert reply.status_code < 500, reply.text[:500]


@pytest.mark.parametrize("url", ["/v1/users/%FF%FE", "/v1/users?email=%FF", "/v1/templates/%C3%28",
                                 "/v1/notifications/%ED%A0%80", "/v1/outbox?channel=%FF",
                                 "/v1/dlq?error_code=%C0%80"])
def test_invalid_utf8_in_the_url_is_answered_cleanly(api: httpx.Client, url: str) -> None:
    reply = api.get(url)

    assert envelope_problems(reply.status_code, reply.headers.get("content-type", ""),
                             reply.content, url) == [], reply.text[:500]
    assert reply.status_code < 500, reply.text[:500]


NUL = [
    ("GET", "/v1/users/a%00b", None),
    ("GET", "/v1/users?email=a%00b", None),
    ("GET", "/v1/templates/a%00b", None),
    ("GET", "/v1/templates/a%00b/versions", None),
    ("GET", "/v1/notifications?user_id=a%00b", None),
    ("GET", "/v1/dlq?error_code=a%00b", None),
    ("PATCH", "/v1/users/a%00b", {"preferred_language": "en"}),
    ("DELETE", "/v1/users/a%00b", None),
    ("DELETE", "/v1/templates/a%00b", None),
    ("POST", "/v1/users", {"email_address": "a\x00b@example.com"}),
    ("POST", "/v1/templates", {"template_key": "nul", "subject": "a\x00b", "body": "b"}),
    ("POST", "/v1/dlq/replay", {"error_code": "a\x00b"}),
    ("POST", "/v1/notifications", {"message_data": {"name": "a\x00b"}}),
    ("POST", "/v1/notifications", {"message_data": {"name": "Ada", "a\x00b": 1}}),
]


@pytest.mark.parametrize("method,url,body", NUL,
                         ids=[f"{m} {u} {json.dumps(b)[:40] if b else ''}" for m, u, b in NUL])
def test_a_nul_character_anywhere_is_refused_never_a_server_error(
        api: httpx.Client, ready_target: dict[str, str], method: str, url: str,
        body: dict[str, Any] | None) -> None:
    # PostgreSQL's text and jsonb cannot hold U+0000: it must be refused before it gets there.
    if body is not None and url == "/v1/notifications":
        body = {**ready_target, **body}

    reply = api.request(method, url, json=body)

    assert envelope_problems(reply.status_code, reply.headers.get("content-type", ""),
                             reply.content, url) == [], reply.text[:500]
    assert reply.status_code < 500, reply.text[:500]
