"""A status callback's `Clarion-Signature` is accepted when it signs the raw body with the secret
within the tolerance, and refused otherwise."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from clarion_client import InvalidSignature, parse_callback, verify_signature

SECRET = "whsec_" + "k" * 32
BODY = json.dumps({"id": "cb_1", "type": "channel.status_changed", "sequence": 1,
                   "notification_id": "n-1", "channel": "email", "status": "sent",
                   "previous_status": "queued", "error_code": None,
                   "occurred_at": "2026-12-02T11:30:00+00:00"}, separators=(",", ":")).encode()
NOW = 1_800_000_000


def sign(body: bytes, secret: str = SECRET, at: int = NOW) -> str:
    # As README "Status callbacks" and the server's callback_poster.signature compute it.
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def test_a_callback_signed_with_the_secret_is_accepted_and_parsed() -> None:
    verify_signature(BODY, sign(BODY), SECRET, now=NOW + 10)

    assert parse_callback(BODY, sign(BODY), SECRET, now=NOW)["id"] == "cb_1"
    assert parse_callback(BODY.decode(), sign(BODY), SECRET, now=NOW)["status"] == "sent"


def test_one_matching_signature_among_several_is_enough() -> None:
    header = sign(BODY, "another-secret-of-24-chars!") + "," + sign(BODY).split(",")[1]

    verify_signature(BODY, header, SECRET, now=NOW)


@pytest.mark.parametrize(("body", "header", "why"), [
    (BODY, sign(BODY, secret="whsec_" + "x" * 32), "does not match"),
    (BODY.replace(b'"sent"', b'"delivered"'), sign(BODY), "does not match"),
    (BODY, sign(BODY, at=NOW - 301), "tolerance"),
    (BODY, sign(BODY, at=NOW + 301), "tolerance"),
    (BODY, "v1=abc", "t=<unix seconds>"),
    (BODY, f"t={NOW}", "t=<unix seconds>"),
    (BODY, "", "no Clarion-Signature"),
])
def test_a_forged_altered_stale_or_malformed_callback_is_refused(
        body: bytes, header: str, why: str) -> None:
    with pytest.raises(InvalidSignature, match=why):
        verify_signature(body, header, SECRET, now=NOW)
