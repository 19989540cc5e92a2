"""CallbackPoster: POSTs one status callback to a caller's endpoint, signed (README "Status
callbacks"). A provider like the others (`send(message)` on SendPool's worker threads, never
raises), whose "recipient" is the caller's own URL.

The signature is Stripe's scheme: `Clarion-Signature: t=<unix seconds>,v1=<hex>` where the hex
is HMAC-SHA256, keyed with the endpoint's secret, of `"<t>.<raw body>"`. A receiver recomputes
it, compares in constant time, and refuses a `t` too far from its clock (a replay).

Before each POST the destination is checked again (supervision/destinations.py): a name that
now resolves inside the network is refused, and the POST goes to the address that was checked
(DNS rebinding cannot swap it). Redirects are not followed, the proxy environment is ignored,
and nothing of the answer but its status is read.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from clarion.actors.providers.base import DeliveryResult, failure, parse_retry_after
from clarion.supervision.destinations import checked_address

SIGNATURE_HEADER = "Clarion-Signature"
USER_AGENT = "Clarion-Callbacks/1"


def signature(secret: str, timestamp: int, body: str) -> str:
    """The `Clarion-Signature` header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


class CallbackPoster:
    channel = "callback"
    name = "callbacks"

    def __init__(self, timeout: float, allow_private: bool, pool_size: int = 32) -> None:
        self._allow_private = allow_private
        self._client = httpx.Client(
            timeout=timeout, follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=pool_size,
                                max_keepalive_connections=pool_size),
            headers={"User-Agent": USER_AGENT})

    def send(self, message: dict[str, Any]) -> DeliveryResult:
        """`message`: {"url", "secret", "callback_id", "body" (the JSON text)}."""
        secret = str(message["secret"])
        try:
            return self._post(message, secret)
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            return failure("callback_error", f"{type(exc).__name__}: {exc}", secrets=(secret,))

    def _post(self, message: dict[str, Any], secret: str) -> DeliveryResult:
        url, body = str(message["url"]), str(message["body"])
        problem, address = checked_address(url, self._allow_private)
        if problem is not None or address is None:
            return failure("callback_destination_refused", problem or "no address")
        parts = urlsplit(url)
        # Connect to the address just checked, not to what the name resolves to next; the
        # name still goes in Host and, for TLS, in SNI and the certificate check.
        pinned = urlunsplit(parts._replace(netloc=_netloc(address, parts.port)))
        headers = {"Content-Type": "application/json", "Host": parts.netloc,
                   SIGNATURE_HEADER: signature(secret, int(time.time()), body),
                   "Clarion-Callback-Id": str(message["callback_id"])}
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        try:
            # Streamed and never read: only the status counts, so an endpoint trickling a body
            # cannot hold the call past its timeouts.
            with self._client.stream("POST", pinned, content=body.encode(), headers=headers,
                                     extensions=extensions) as answer:
                status, retry_after = answer.status_code, answer.headers.get("retry-after")
        except httpx.TimeoutException:
            return failure("timeout", "the endpoint did not answer in time")
        except httpx.HTTPError as exc:
            return failure("connection_error", f"cannot reach the endpoint: {type(exc).__name__}")
        if 200 <= status < 300:
            return DeliveryResult(ok=True)
        return failure(f"http_{status}", f"the endpoint answered {status}",
                       retry_after=parse_retry_after(retry_after))

    def close(self) -> None:
        self._client.close()


def _netloc(address: str, port: int | None) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" if port else host
