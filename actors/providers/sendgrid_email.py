"""Email delivery through SendGrid's v3 Mail Send API, via the official `sendgrid` library.

Owns turning a Clarion email message dict into one Mail Send request and every
possible outcome (HTTP status, timeout, refused connection, bad input) into a
`DeliveryResult`. The library never retries; retry policy belongs to the
delivery actor, so nothing here retries either.

The library builds the request (`Mail(...).get()`, its URL and headers, its
`HTTPError` classes for non-2xx answers); a pooled keep-alive urllib3 client
sends it. The library's own transport (python_http_client over urllib) opens a
TCP connection per call with `Connection: close`. Measured with
`bench/provider_calls.py` against the simulator (32 and 128 threads, 0 and 100 ms):
580-740 µs of CPU per call through the library vs. 250-420 µs through urllib3's
pool; a `requests.Session` costs 700 µs (its per-call overhead eats what keep-alive
saves). At 1,000 emails/s that is a third of a core on a two-core node, and no TCP
handshake (nor TLS handshake, for the real API) per email.
"""

from __future__ import annotations

import http.client
import json
import logging
from email.utils import parseaddr
from typing import Any

import urllib3
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from python_http_client.exceptions import err_dict as sendgrid_http_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

from .base import DeliveryResult, environment_proxy, failure, parse_retry_after, seconds_until_epoch

logger = logging.getLogger(__name__)

# Statuses where sending the same request again cannot succeed without a human
# changing something, so the message should fail now instead of burning retries.
PERMANENT_STATUSES = {
    400,  # malformed or invalid request (bad address, missing field): identical bytes get the same answer
    401,  # API key missing, invalid or revoked: needs a new key in config
    403,  # key lacks the mail.send scope or the sender identity is unverified: account config
    404,  # wrong host or path: deployment config, not a transient outage
    405,  # method not allowed: a client/URL bug
    413,  # payload too large: the same message will always be too large
    415,  # unsupported media type: a client bug
}
# Everything else (408, 429, 5xx, unknown) is treated as transient.


class SendGridEmailProvider:
    """Sends one email per `send()` call; thread-safe (the connection pool is)."""

    channel = "email"
    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        from_email: str,
        host: str = "https://api.sendgrid.com",
        timeout: float = 5.0,
        *,
        pool_size: int = 32,
    ) -> None:
        """`pool_size`: keep-alive connections kept open; size it to the number of worker
        threads calling `send()` at once (beyond it, extra connections are opened and then
        dropped, and urllib3 logs "Connection pool is full")."""
        if not api_key:
            # SendGridAPIClient would silently fall back to $SENDGRID_API_KEY.
            raise ValueError("api_key is required")
        if not from_email:
            raise ValueError("from_email is required")
        self._api_key = api_key
        self._from_email = from_email
        # A trailing "/" makes the library request "//v3/mail/send", which 404s.
        self._client = SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        # The library's URL and headers (Authorization, User-Agent, Accept), sent by our pool.
        self._url = self._client.client.mail.send._build_url(None)
        self._headers = {**self._client.client.request_headers, "Content-Type": "application/json"}
        self._pool = _connection_pool(self._url, pool_size)
        # Like urllib's socket timeout: bounds the connect and each read, so one stuck socket
        # cannot park a worker forever.
        self._timeout = timeout
        self._timeouts = urllib3.Timeout(connect=timeout, read=timeout)

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs and tracebacks.
        return f"SendGridEmailProvider(host={self._client.host!r}, from_email={self._from_email!r})"

    def send(self, message: dict) -> DeliveryResult:
        try:
            return self._send(message)
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            logger.exception("unexpected error in SendGrid provider")
            return self._fail("internal_error", f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._pool.clear()  # closes the idle keep-alive connections

    def _send(self, message: dict) -> DeliveryResult:
        try:
            body = self._build_body(message)
        except Exception as exc:  # noqa: BLE001 - any helper validation error means bad input
            # Includes the helper's ApiKeyIncludedException (content looks like an API key).
            return self._fail("sendgrid_invalid_message", f"cannot build mail: {type(exc).__name__}: {exc}", permanent=True)
        try:
            # retries=False: one request, and errors raised as themselves; redirect=False: the
            # API does not redirect, and following one would turn the POST into a GET.
            response = self._pool.request(
                "POST", self._url, body=json.dumps(body).encode(), headers=self._headers,
                timeout=self._timeouts, retries=False, redirect=False)
        except urllib3.exceptions.NewConnectionError as exc:
            # Refused, unreachable, DNS: nothing was sent. (A ConnectTimeoutError subclass.)
            return self._fail("connection_error", f"cannot reach SendGrid: {exc.__cause__ or exc}")
        except urllib3.exceptions.ConnectTimeoutError:
            return self._fail("timeout", f"no connection to SendGrid within {self._timeout}s")
        except urllib3.exceptions.ReadTimeoutError as exc:
            return self._fail("timeout", f"no reply from SendGrid within {self._timeout}s: {exc}")
        except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
            # Connection reset / closed mid-reply (ProtocolError), TLS failure: the request may
            # or may not have been accepted.
            return self._fail("connection_error", f"connection to SendGrid failed: {type(exc).__name__}: {exc}")
        status = response.status
        if 200 <= status < 300:
            return DeliveryResult(ok=True, provider_message_id=response.headers.get("X-Message-Id"))
        if status >= 400:
            # The exception the library raises for this status, so its mapping stays one place.
            error_class = sendgrid_http_errors.get(status, SendGridHTTPError)
            return self._http_failure(error_class(status, response.reason, response.data, response.headers))
        return self._fail(f"sendgrid_http_{status}", f"unexpected status {status}")

    def _build_body(self, message: dict) -> dict[str, Any]:
        to = message.get("to")
        # The helper silently drops an address it cannot parse and then fails
        # with a bare KeyError('email'); say what is wrong instead.
        if not isinstance(to, str) or "@" not in parseaddr(to)[1]:
            raise ValueError("'to' is not an email address")
        html_body = message.get("html_body")
        mail = Mail(
            from_email=self._from_email,
            to_emails=to,
            subject=message["subject"],
            plain_text_content=message["body"],
            html_content=html_body or None,
        )
        # custom_args come back on SendGrid event webhooks, tying events to our ids.
        for key in ("notification_id", "request_id"):
            if message.get(key) is not None:
                mail.custom_arg = CustomArg(key, str(message[key]))
        return mail.get()

    def _http_failure(self, exc: SendGridHTTPError) -> DeliveryResult:
        status = int(exc.status_code)
        retry_after = None
        if status == 429 or status >= 500:
            headers = exc.headers
            if headers is not None:
                # SendGrid documents X-RateLimit-Reset (epoch); honour Retry-After too if a proxy adds it.
                retry_after = parse_retry_after(headers.get("Retry-After"))
                if retry_after is None:
                    retry_after = seconds_until_epoch(headers.get("X-RateLimit-Reset"))
        return self._fail(
            f"sendgrid_http_{status}",
            f"SendGrid answered {status}: {_error_messages(exc.body)}",
            permanent=status in PERMANENT_STATUSES,
            retry_after=retry_after,
        )

    def _fail(self, code: str, error: str, *, permanent: bool = False, retry_after: float | None = None) -> DeliveryResult:
        return failure(code, error, permanent=permanent, retry_after=retry_after, secrets=(self._api_key,))


def _connection_pool(url: str, size: int) -> urllib3.PoolManager:
    """Keep-alive connections to the API's host, through the environment's proxy as urllib
    would (`https_proxy`, `no_proxy`)."""
    proxy = environment_proxy(url)
    if proxy:
        return urllib3.ProxyManager(proxy, num_pools=1, maxsize=size)
    # block=False: a thread beyond `size` opens a connection of its own instead of waiting.
    return urllib3.PoolManager(num_pools=1, maxsize=size, block=False)


def _error_messages(body: Any) -> str:
    """The `errors[].message` texts of a SendGrid error body, or a short raw excerpt."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("errors"), list):
        parts = []
        for item in parsed["errors"]:
            if isinstance(item, dict):
                field = f" ({item['field']})" if item.get("field") else ""
                parts.append(f"{item.get('message', '')}{field}")
        if parts:
            return "; ".join(parts)
    return str(body or "")[:200] or "(empty body)"
