"""Checking a status callback's `Clarion-Signature` (README "Status callbacks").

Clarion signs each callback as Stripe signs its webhooks: `t=<unix seconds>,v1=<hex>`, the hex
being HMAC-SHA256, keyed with the endpoint's secret, of `"<t>." + raw body`. The receiver must
check it on the raw bytes it received (a re-serialised JSON differs), compare in constant time,
and refuse an old `t`, which would be someone replaying a callback they saw.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

SIGNATURE_HEADER = "Clarion-Signature"
DEFAULT_TOLERANCE = 300.0  # seconds between `t` and this clock


class InvalidSignature(ValueError):
    """The callback is not signed with this secret, or was signed too long ago."""


def verify_signature(payload: bytes | str, header: str | None, secret: str, *,
                     tolerance: float = DEFAULT_TOLERANCE, now: float | None = None) -> None:
    """Raise InvalidSignature unless `header` signs `payload` with `secret` within `tolerance`
    seconds of `now`. Several `v1` values are accepted (one matching is enough)."""
    if not header:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    raw = payload.encode() if isinstance(payload, str) else payload
    timestamp, signatures = _parse(header)
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + raw,
                        hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise InvalidSignature("the signature does not match this secret and body")
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance:
        raise InvalidSignature(f"signed {clock - timestamp:.0f} s from now: outside the"
                               f" {tolerance:.0f} s tolerance (a replay?)")


def parse_callback(payload: bytes | str, header: str | None, secret: str, *,
                   tolerance: float = DEFAULT_TOLERANCE,
                   now: float | None = None) -> dict[str, Any]:
    """The callback's JSON (`id`, `type`, `sequence`, `notification_id`, `channel`, `status`,
    `previous_status`, `error_code`, `occurred_at`), once its signature is verified. Callbacks
    come at least once: deduplicate on `id`."""
    verify_signature(payload, header, secret, tolerance=tolerance, now=now)
    data: dict[str, Any] = json.loads(payload)
    return data


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value.strip())
    if timestamp is None or not signatures:
        raise InvalidSignature(f"{SIGNATURE_HEADER} must be t=<unix seconds>,v1=<hex>")
    return timestamp, signatures
