"""The contract between delivery actors and provider clients.

Owns `DeliveryResult` (what one delivery attempt produced, in provider-neutral
terms), the `Provider` protocol, and small helpers the clients share. Provider
clients never raise from `send()`: every outcome, including bugs, becomes a
`DeliveryResult` so a worker thread cannot die on one bad message.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

# Longest error text kept: enough to diagnose, short enough for logs and DB rows.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    provider_message_id: str | None = None
    error_code: str | None = None  # stable short code, e.g. "sendgrid_http_503", "fcm_unregistered", "timeout"
    error: str | None = None  # human message, never containing secrets/api keys
    permanent: bool = False  # True: retrying cannot help (invalid address, unregistered token, 400)
    retry_after: float | None = None  # seconds, from Retry-After or X-RateLimit-Reset when present
    details: tuple = ()  # e.g. per-token results for push


@runtime_checkable
class Provider(Protocol):
    channel: str  # "email" or "push"
    name: str  # recorded with each attempt: "sendgrid", "fcm", "outbox"

    def send(self, message: dict) -> DeliveryResult:  # thread-safe, called from worker threads, NEVER raises
        ...

    def close(self) -> None: ...


def failure(
    error_code: str,
    error: str,
    *,
    permanent: bool = False,
    retry_after: float | None = None,
    details: tuple = (),
    secrets: tuple[str, ...] = (),
) -> DeliveryResult:
    """A failed `DeliveryResult` with `error` scrubbed of `secrets` and truncated."""
    return DeliveryResult(
        ok=False,
        error_code=error_code,
        error=scrub(error, secrets),
        permanent=permanent,
        retry_after=retry_after,
        details=details,
    )


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with every secret replaced and cut to MAX_ERROR_CHARS."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def parse_retry_after(value: Any, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP date); None if absent/unparsable."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def seconds_until_epoch(value: Any, now: float | None = None) -> float | None:
    """Seconds from now until an epoch-seconds header value (e.g. X-RateLimit-Reset); None if unparsable."""
    if value is None:
        return None
    try:
        epoch = float(str(value).strip())
    except ValueError:
        return None
    return max(0.0, epoch - (time.time() if now is None else now))


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (`https_proxy`, ... unless `no_proxy` covers
    its host), as urllib and requests would choose it; None for a direct connection."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return proxy
    return None
