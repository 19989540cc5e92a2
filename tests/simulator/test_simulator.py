"""The provider simulator over real HTTP: SendGrid, OAuth2 token, FCM, Twilio SMS and /_sim control routes."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import httpx
import pytest
from google.oauth2 import service_account

from clarion.simulator.app import FCM_ERROR_TYPE, JWT_BEARER_GRANT, TWILIO_MAGIC_TO
from clarion.simulator.credentials import write_service_account
from clarion.simulator.server import SimulatorServer
from clarion.simulator.state import SimulatorState


def _mail(to: str = "ada@example.com", html: str | None = "<p>Hello</p>") -> dict:
    content = [{"type": "text/plain", "value": "Hello"}]
    if html is not None:
        content.append({"type": "text/html", "value": html})
    return {
        "personalizations": [{"to": [{"email": to}]}],
        "from": {"email": "noreply@clarion.test"},
        "subject": "Greetings",
        "content": content,
    }


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _fake_jwt() -> str:
    return f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64({'iss': 'x@y', 'aud': 'z'})}.c2lnbmF0dXJl"


def _access_token(http: httpx.Client) -> str:
    reply = http.post("/token", data={"grant_type": JWT_BEARER_GRANT, "assertion": _fake_jwt()})
    assert reply.status_code == 200
    return reply.json()["access_token"]


def _push(http: httpx.Client, token: str, body: dict, project: str = "clarion-sim") -> httpx.Response:
    return http.post(f"/v1/projects/{project}/messages:send", json=body, headers={"Authorization": f"Bearer {token}"})


ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-test-token"


def _sms(
    http: httpx.Client,
    form: dict | None = None,
    *,
    account_sid: str = ACCOUNT_SID,
    auth: tuple[str, str] | None = (ACCOUNT_SID, TWILIO_TOKEN),
) -> httpx.Response:
    form = {"To": "+15551230001", "From": "+15005550006", "Body": "Your code is 1234"} if form is None else form
    return http.post(f"/2010-04-01/Accounts/{account_sid}/Messages.json", data=form, auth=auth)


def _assert_twilio_error(reply: httpx.Response, status: int, code: int) -> None:
    assert reply.status_code == status
    body = reply.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert body["message"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- SendGrid -------------------------------------------------------------------


def test_health_answers_ok(http: httpx.Client) -> None:
    assert http.get("/_sim/health").json() == {"ok": True}


def test_a_valid_mail_is_accepted_with_202_an_empty_body_and_a_message_id(sim: SimulatorServer, http: httpx.Client) -> None:
    reply = http.post("/v3/mail/send", json=_mail(), headers={"Authorization": "Bearer anything"})

    assert reply.status_code == 202
    assert reply.content == b""
    [record] = http.get("/_sim/messages", params={"channel": "email"}).json()["messages"]
    assert record["id"] == reply.headers["X-Message-Id"]
    assert record["to"] == "ada@example.com"
    assert (record["subject"], record["body"], record["html_body"]) == ("Greetings", "Hello", "<p>Hello</p>")
    assert record["raw"] == _mail()
    assert isinstance(record["received_at"], float)


def test_a_mail_without_html_is_recorded_with_a_null_html_body(http: httpx.Client) -> None:
    http.post("/v3/mail/send", json=_mail(html=None), headers={"Authorization": "Bearer k"})

    [record] = http.get("/_sim/messages").json()["messages"]
    assert record["html_body"] is None


@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic abc"])
def test_mail_without_a_bearer_key_is_refused_with_a_sendgrid_401(
    sim: SimulatorServer, http: httpx.Client, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    reply = http.post("/v3/mail/send", json=_mail(), headers=headers)

    assert reply.status_code == 401
    assert reply.json()["errors"][0]["message"]
    assert sim.state.messages() == []
    assert [r["status"] for r in sim.state.rejected("email")] == [401]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda m: m["personalizations"][0]["to"][0].update(email="not-an-address"), "personalizations.0.to.0.email"),
        (lambda m: m.pop("from"), "from.email"),
        (lambda m: m.pop("subject"), "subject"),
        (lambda m: m.update(content=[]), "content"),
        (lambda m: m.update(personalizations=[]), "personalizations"),
    ],
)
def test_an_incomplete_mail_is_refused_with_a_400_naming_the_field(http: httpx.Client, mutate, field: str) -> None:
    body = _mail()
    mutate(body)

    reply = http.post("/v3/mail/send", json=body, headers={"Authorization": "Bearer k"})

    assert reply.status_code == 400
    assert reply.json()["errors"][0]["field"] == field
    assert http.get("/_sim/rejected").json()["rejected"][0]["status"] == 400


def test_fail_next_makes_exactly_that_many_mail_calls_fail_with_fail_status(http: httpx.Client) -> None:
    http.put("/_sim/config", json={"fail_next": {"email": 2}, "fail_status": 500})
    auth = {"Authorization": "Bearer k"}

    statuses = [http.post("/v3/mail/send", json=_mail(), headers=auth).status_code for _ in range(3)]

    assert statuses == [500, 500, 202]
    assert len(http.get("/_sim/rejected", params={"channel": "email"}).json()["rejected"]) == 2
    assert http.get("/_sim/config").json()["fail_next"] == {"email": 0, "push": 0, "sms": 0}


def test_rate_limited_mail_gets_429_with_sendgrid_rate_limit_headers(http: httpx.Client) -> None:
    http.put("/_sim/config", json={"rate_limit_next": {"email": 1}})

    reply = http.post("/v3/mail/send", json=_mail(), headers={"Authorization": "Bearer k"})

    assert reply.status_code == 429
    assert reply.headers["X-RateLimit-Remaining"] == "0"
    assert int(reply.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert reply.json() == {"errors": [{"message": "too many requests", "field": None, "help": None}]}


def test_latency_delays_provider_calls(http: httpx.Client) -> None:
    http.put("/_sim/config", json={"latency_ms": 150})

    started = time.monotonic()
    http.post("/v3/mail/send", json=_mail(), headers={"Authorization": "Bearer k"})

    assert time.monotonic() - started >= 0.15


# -- OAuth2 token endpoint --------------------------------------------------------


def test_the_token_endpoint_issues_bearer_tokens_for_a_jwt_assertion(sim: SimulatorServer, http: httpx.Client) -> None:
    reply = http.post("/token", data={"grant_type": JWT_BEARER_GRANT, "assertion": _fake_jwt()})

    assert reply.status_code == 200
    body = reply.json()
    assert body["access_token"].startswith("sim-")
    assert (body["expires_in"], body["token_type"]) == (3600, "Bearer")
    assert sim.state.token_is_valid(body["access_token"])


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password", "assertion": "a.b.c"}, "unsupported_grant_type"),
        ({"grant_type": JWT_BEARER_GRANT, "assertion": "not-a-jwt"}, "invalid_grant"),
        ({"grant_type": JWT_BEARER_GRANT, "assertion": "!!.??.sig"}, "invalid_grant"),
    ],
)
def test_the_token_endpoint_refuses_anything_but_a_jwt_bearer_grant(http: httpx.Client, form: dict, error: str) -> None:
    reply = http.post("/token", data=form)

    assert reply.status_code == 400
    assert reply.json()["error"] == error


# -- FCM ------------------------------------------------------------------------------


def test_a_push_with_an_issued_token_is_accepted_and_recorded(sim: SimulatorServer, http: httpx.Client) -> None:
    message = {"message": {"token": "device-1", "notification": {"title": "T", "body": "B"}, "data": {"k": "v"}}}

    reply = _push(http, _access_token(http), message, project="proj-7")

    assert reply.status_code == 200
    [record] = sim.state.messages("push")
    assert reply.json() == {"name": f"projects/proj-7/messages/{record['id']}"}
    assert (record["to"], record["title"], record["body"], record["data"]) == ("device-1", "T", "B", {"k": "v"})
    assert record["raw"] == message


def test_a_push_may_name_its_target_fid_instead_of_token(sim: SimulatorServer, http: httpx.Client) -> None:
    reply = _push(http, _access_token(http), {"message": {"fid": "install-9", "notification": {"title": "T", "body": "B"}}})

    assert reply.status_code == 200
    assert sim.state.messages("push")[0]["to"] == "install-9"


@pytest.mark.parametrize("token", [None, "sim-never-issued"])
def test_a_push_without_an_issued_token_gets_fcm_unauthenticated(http: httpx.Client, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = http.post("/v1/projects/p/messages:send", json={"message": {"token": "d"}}, headers=headers)

    assert reply.status_code == 401
    assert reply.json()["error"]["status"] == "UNAUTHENTICATED"


def test_an_unregistered_token_gets_fcm_not_found_with_the_unregistered_error_code(http: httpx.Client) -> None:
    reply = _push(http, _access_token(http), {"message": {"token": "unregistered-abc"}})

    assert reply.status_code == 404
    assert reply.json() == {
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "status": "NOT_FOUND",
            "details": [{"@type": FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}],
        }
    }


@pytest.mark.parametrize(
    "message",
    [
        {"token": "invalid-abc"},
        {},
        {"token": "a", "fid": "b"},
        {"token": "ok", "data": {"n": 1}},
    ],
)
def test_an_invalid_push_gets_invalid_argument(http: httpx.Client, message: dict) -> None:
    reply = _push(http, _access_token(http), {"message": message})

    assert reply.status_code == 400
    assert reply.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_injected_push_failures_use_the_google_error_shape(http: httpx.Client) -> None:
    token = _access_token(http)
    http.put("/_sim/config", json={"fail_next": {"push": 1}, "rate_limit_next": {"push": 1}})

    throttled = _push(http, token, {"message": {"token": "d"}})
    failed = _push(http, token, {"message": {"token": "d"}})
    fine = _push(http, token, {"message": {"token": "d"}})

    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert throttled.json()["error"]["details"][0]["errorCode"] == "QUOTA_EXCEEDED"
    assert failed.status_code == 503
    assert failed.json()["error"]["status"] == "UNAVAILABLE"
    assert fine.status_code == 200


# -- Twilio SMS ------------------------------------------------------------------------


def test_an_sms_is_accepted_with_201_and_a_twilio_message_resource(sim: SimulatorServer, http: httpx.Client) -> None:
    reply = _sms(http, {"To": "+15551230001", "From": "+15005550006", "Body": "Your code is 1234",
                        "StatusCallback": "https://clarion.test/hooks/twilio"})

    assert reply.status_code == 201
    resource = reply.json()
    assert resource["sid"].startswith("SM") and len(resource["sid"]) == 34
    int(resource["sid"][2:], 16)
    assert (resource["account_sid"], resource["to"], resource["from"]) == (ACCOUNT_SID, "+15551230001", "+15005550006")
    assert (resource["body"], resource["status"], resource["num_segments"]) == ("Your code is 1234", "queued", "1")
    assert resource["error_code"] is None and resource["date_created"].endswith("+0000")
    assert resource["uri"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{resource['sid']}.json"
    [record] = http.get("/_sim/messages", params={"channel": "sms"}).json()["messages"]
    assert (record["id"], record["channel"], record["to"], record["body"]) == (
        resource["sid"], "sms", "+15551230001", "Your code is 1234")
    assert record["status_callback"] == "https://clarion.test/hooks/twilio"
    assert sim.state.wait_for(1, channel="sms", timeout=1)[0]["from"] == "+15005550006"
    assert TWILIO_TOKEN not in json.dumps(record)


def test_an_sms_through_a_messaging_service_has_no_from_and_is_accepted(sim: SimulatorServer, http: httpx.Client) -> None:
    service = "MG" + "ab" * 16
    reply = _sms(http, {"To": "+15551230001", "MessagingServiceSid": service, "Body": "ж" * 71})

    assert reply.status_code == 201
    resource = reply.json()
    assert (resource["from"], resource["messaging_service_sid"], resource["status"]) == (None, service, "accepted")
    assert resource["num_segments"] == "2"  # UCS-2: 70 per single segment, 67 per part
    assert sim.state.messages("sms")[0]["messaging_service_sid"] == service


@pytest.mark.parametrize(("to", "code"), [(to, code) for to, (code, _) in TWILIO_MAGIC_TO.items()])
def test_twilios_magic_numbers_give_their_documented_errors(
    sim: SimulatorServer, http: httpx.Client, to: str, code: int
) -> None:
    reply = _sms(http, {"To": to, "From": "+15005550006", "Body": "hi"})

    _assert_twilio_error(reply, 400, code)
    assert sim.state.messages() == []
    [rejected] = sim.state.rejected("sms")
    assert (rejected["status"], rejected["code"], rejected["to"]) == (400, code, to)


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": "+15005550006", "Body": "hi"}, 21604),
        ({"To": "+15551230001", "From": "+15005550006"}, 21602),
        ({"To": "+15551230001", "From": "+15005550006", "Body": ""}, 21602),
        ({"To": "+15551230001", "Body": "hi"}, 21603),
        ({"To": "5551230001", "From": "+15005550006", "Body": "hi"}, 21211),
        ({"To": "+0551230001", "From": "+15005550006", "Body": "hi"}, 21211),
        ({"To": "+1555123000123456", "From": "+15005550006", "Body": "hi"}, 21211),
        ({"To": "+15551230001", "From": "+15005550006", "Body": "x" * 1601}, 21617),
    ],
)
def test_an_incomplete_sms_is_refused_with_twilios_error_code(http: httpx.Client, form: dict, code: int) -> None:
    _assert_twilio_error(_sms(http, form), 400, code)


@pytest.mark.parametrize(
    ("account_sid", "auth"),
    [
        (ACCOUNT_SID, None),
        (ACCOUNT_SID, (ACCOUNT_SID, "")),
        (ACCOUNT_SID, ("AC" + "f" * 32, TWILIO_TOKEN)),  # credentials of another account
        ("AC" + "f" * 32, (ACCOUNT_SID, TWILIO_TOKEN)),
    ],
)
def test_an_sms_without_matching_basic_credentials_gets_twilio_20003(
    sim: SimulatorServer, http: httpx.Client, account_sid: str, auth: tuple[str, str] | None
) -> None:
    reply = _sms(http, account_sid=account_sid, auth=auth)

    _assert_twilio_error(reply, 401, 20003)
    assert reply.headers["WWW-Authenticate"].startswith("Basic")
    assert sim.state.messages() == []
    assert [(r["status"], r["reason"]) for r in sim.state.rejected("sms")] == [(401, "unauthorized")]


def test_expected_twilio_credentials_refuse_any_other_token_until_reset(sim: SimulatorServer, http: httpx.Client) -> None:
    sim.state.expect_twilio_credentials(ACCOUNT_SID, "the-right-token")

    _assert_twilio_error(_sms(http), 401, 20003)
    assert _sms(http, auth=(ACCOUNT_SID, "the-right-token")).status_code == 201
    sim.state.reset()
    assert _sms(http).status_code == 201
    with pytest.raises(ValueError):
        sim.state.expect_twilio_credentials(ACCOUNT_SID)


def test_a_state_made_with_twilio_credentials_keeps_them_across_resets() -> None:
    state = SimulatorState(twilio_credentials=(ACCOUNT_SID, "t"))
    state.reset()

    assert state.twilio_credentials_valid(ACCOUNT_SID, "t")
    assert not state.twilio_credentials_valid(ACCOUNT_SID, "u")


def test_injected_sms_failures_use_the_twilio_error_shape(sim: SimulatorServer, http: httpx.Client) -> None:
    http.put("/_sim/config", json={"fail_next": {"sms": 1}, "rate_limit_next": {"sms": 1}, "fail_status": 500})

    throttled, failed, fine = _sms(http), _sms(http), _sms(http)

    _assert_twilio_error(throttled, 429, 20429)
    _assert_twilio_error(failed, 500, 20500)
    assert fine.status_code == 201
    assert [(r["status"], r["reason"]) for r in sim.state.rejected("sms")] == [
        (429, "rate_limited"), (500, "injected_failure")]
    assert http.get("/_sim/config").json()["rate_limit_next"] == {"email": 0, "push": 0, "sms": 0}


def test_sms_faults_leave_the_other_channels_alone(http: httpx.Client) -> None:
    http.put("/_sim/config", json={"fail_ratio": {"sms": 1.0}})

    assert _sms(http).status_code == 503  # the default fail_status
    assert http.post("/v3/mail/send", json=_mail(), headers={"Authorization": "Bearer k"}).status_code == 202


def test_latency_delays_sms_calls(http: httpx.Client) -> None:
    http.put("/_sim/config", json={"latency_ms": 150})

    started = time.monotonic()
    reply = _sms(http)

    assert reply.status_code == 201 and time.monotonic() - started >= 0.15


# -- control and inspection -------------------------------------------------------------


def test_config_updates_merge_per_channel_and_bad_updates_change_nothing(http: httpx.Client) -> None:
    http.put("/_sim/config", json={"fail_next": {"email": 3}})
    merged = http.put("/_sim/config", json={"fail_next": {"push": 1}, "latency_ms": 5}).json()

    assert merged["fail_next"] == {"email": 3, "push": 1, "sms": 0}
    assert merged["latency_ms"] == 5
    for bad in ({"latency_ms": -1}, {"fail_status": 200}, {"fail_next": {"fax": 1}}, {"nope": 1}, [1]):
        assert http.put("/_sim/config", json=bad).status_code == 400
    assert http.get("/_sim/config").json() == merged


def test_delete_messages_clears_accepted_and_rejected_records(http: httpx.Client) -> None:
    http.post("/v3/mail/send", json=_mail(), headers={"Authorization": "Bearer k"})
    http.post("/v3/mail/send", json=_mail())

    assert http.delete("/_sim/messages").status_code == 204

    assert http.get("/_sim/messages").json() == {"messages": []}
    assert http.get("/_sim/rejected").json() == {"rejected": []}


def test_messages_can_be_filtered_by_channel(http: httpx.Client) -> None:
    http.post("/v3/mail/send", json=_mail(), headers={"Authorization": "Bearer k"})
    _push(http, _access_token(http), {"message": {"token": "d"}})

    _sms(http)

    assert [m["channel"] for m in http.get("/_sim/messages", params={"channel": "push"}).json()["messages"]] == ["push"]
    assert [m["channel"] for m in http.get("/_sim/messages", params={"channel": "sms"}).json()["messages"]] == ["sms"]
    assert http.get("/_sim/messages", params={"channel": "fax"}).status_code == 400


def test_state_can_be_read_and_awaited_from_another_thread(sim: SimulatorServer, http: httpx.Client) -> None:
    sender = threading.Thread(
        target=lambda: http.post("/v3/mail/send", json=_mail(), headers={"Authorization": "Bearer k"})
    )
    sender.start()

    records = sim.state.wait_for(1, channel="email", timeout=5)
    sender.join()

    assert records[0]["to"] == "ada@example.com"
    with pytest.raises(TimeoutError):
        sim.state.wait_for(2, channel="email", timeout=0.05)


# -- credentials and server lifecycle ------------------------------------------------------


def test_written_service_accounts_are_private_and_load_in_google_auth(tmp_path) -> None:
    path = write_service_account(tmp_path / "sa.json", "http://127.0.0.1:1/token", project_id="p-1")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = json.loads(path.read_text())
    assert info["client_email"] == "clarion@p-1.iam.gserviceaccount.com"
    assert info["token_uri"] == "http://127.0.0.1:1/token"
    cred = service_account.Credentials.from_service_account_file(str(path))
    assert cred.project_id == "p-1"


def test_a_stopped_server_frees_its_port_and_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    server = SimulatorServer(SimulatorState()).start()
    port = int(server.base_url.rsplit(":", 1)[1])
    assert httpx.get(f"{server.base_url}/_sim/health").status_code == 200

    server.stop()
    server.stop()  # idempotent

    assert set(threading.enumerate()) <= before
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/_sim/health")


def test_a_server_cannot_be_started_twice(sim: SimulatorServer) -> None:
    with pytest.raises(RuntimeError):
        sim.start()


def test_the_command_serves_in_the_foreground_until_interrupted(tmp_path) -> None:
    port = _free_port()
    credentials = tmp_path / "sa.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PYTHONDONTWRITEBYTECODE": "1"}
    # Through the `clarion` command, as the README runs it: its options reach the simulator.
    process = subprocess.Popen(
        [sys.executable, "-m", "clarion.cli", "simulator", "--port", str(port), "--latency-ms", "7",
         "--write-credentials", str(credentials)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        base_url = f"http://127.0.0.1:{port}"
        assert line.strip().endswith(base_url)
        assert httpx.get(f"{base_url}/_sim/config").json()["latency_ms"] == 7
        assert json.loads(credentials.read_text())["token_uri"] == f"{base_url}/token"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_one_twilio_account_can_be_down_while_another_is_up(
        sim: SimulatorServer, http: httpx.Client) -> None:
    other = "AC" + "f" * 32
    http.put("/_sim/config", json={"twilio_down_accounts": [ACCOUNT_SID]})

    down = _sms(http)
    up = _sms(http, account_sid=other, auth=(other, TWILIO_TOKEN))

    _assert_twilio_error(down, 503, 20503)
    assert up.status_code == 201
    assert [m["account_sid"] for m in sim.state.messages("sms")] == [other]
    assert http.put("/_sim/config", json={"twilio_down_accounts": "all"}).status_code == 400
    sim.state.reset()
    assert _sms(http).status_code == 201
