"""SMS delivery through Twilio's Programmable Messaging API, via the official `twilio` library.

Owns turning a Clarion SMS message dict into one `Messages.create` call and every possible
outcome (Twilio error code, HTTP status, timeout, refused connection, bad input) into a
`DeliveryResult`. The library never retries 429 or 5xx; retry policy belongs to the delivery
actor, so nothing here retries either (the transport's adapter has `max_retries=0`).

The library builds the request (URL, form fields, Basic auth, its `TwilioRestException` for
non-2xx answers) and hands it to its documented `http_client`: here a `TwilioHttpClient`
whose `requests.Session` keeps `pool_size` keep-alive connections, and which rebases the
absolute `https://api.twilio.com/...` URLs onto `host` (the provider simulator, or a proxy).
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from .base import DeliveryResult, environment_proxy, failure

logger = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.twilio.com"

# Twilio error codes that mean this message can never go out as it is: retrying cannot help.
PERMANENT_CODES = {
    21211,  # invalid 'To' phone number
    21610,  # the recipient replied STOP: unsubscribed until they send START
    21614,  # 'To' is not a mobile number (a landline cannot receive SMS)
}
# Besides these, every 4xx but 429 is permanent (400 bad request, 401/403 credentials or account
# configuration, 404 wrong account or host); 429, 5xx and anything unknown are transient.


class _RebasingHttpClient(TwilioHttpClient):
    """The library's requests-based transport, with a sized keep-alive pool, no retries, a
    default timeout, and every URL's scheme and host replaced by `host` when it is not
    Twilio's own."""

    def __init__(self, host: str, timeout: float, pool_size: int) -> None:
        base = urlsplit(host)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ValueError(f"host must be an http:// or https:// URL, not {host!r}")
        self._base = None if host == DEFAULT_HOST else base
        # proxy: looked up once below instead of by requests on every call.
        super().__init__(pool_connections=True, timeout=timeout, proxy=_proxies(host))
        session = self.session
        assert session is not None  # pool_connections=True
        # max_retries=0: one request per send (requests' default, stated); pool_block=False: a
        # thread beyond `pool_size` opens a connection of its own instead of waiting.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        for prefix in ("https://", "http://"):
            previous = session.adapters.get(prefix)
            session.mount(prefix, adapter)
            if previous is not None:
                previous.close()
        # With trust_env, requests reads the environment on every call (proxy variables,
        # no_proxy, ~/.netrc, CA bundle variables). The proxy is looked up once (above) and the
        # CA bundle here, as requests would; a ~/.netrc entry could only replace the Basic auth.
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if self._base is not None:
            parts = urlsplit(url)
            path = self._base.path.rstrip("/") + parts.path
            url = urlunsplit((self._base.scheme, self._base.netloc, path, parts.query, parts.fragment))
        return super().request(method, url, *args, **kwargs)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()  # closes the adapters and their idle keep-alive connections


class TwilioSmsProvider:
    """Sends one SMS per `send()` call; thread-safe (the client keeps no per-call state that
    matters, and the connection pool is thread-safe)."""

    channel = "sms"
    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        host: str = DEFAULT_HOST,
        timeout: float = 5.0,
        *,
        pool_size: int = 32,
        name: str = "twilio",
        status_callback: str | None = None,
    ) -> None:
        """Exactly one sender: `from_number` (E.164, a number of the account) or
        `messaging_service_sid` (Twilio picks the number from the service's pool).
        `host`: where the REST API is reached (the simulator in tests); `pool_size`: keep-alive
        connections kept open, sized to the worker threads calling `send()` at once; `name`:
        what attempts and breakers call it ("twilio-backup" for a second account);
        `status_callback`: where Twilio reports what became of each SMS (Clarion's
        /v1/providers/twilio/status), the notification's id in its query."""
        self.name = name
        if not account_sid or not auth_token:
            # The library would silently fall back to $TWILIO_ACCOUNT_SID / $TWILIO_AUTH_TOKEN.
            raise ValueError("account_sid and auth_token are required")
        if bool(from_number) == bool(messaging_service_sid):
            raise ValueError("give exactly one sender: from_number or messaging_service_sid")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._sender: dict[str, str] = (
            {"from_": from_number} if from_number else {"messaging_service_sid": messaging_service_sid or ""}
        )
        self._status_callback = status_callback
        self._host = host.rstrip("/")
        self._timeout = timeout
        self._http = _RebasingHttpClient(self._host, timeout, pool_size)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._messages = self._client.api.v2010.accounts(account_sid).messages

    def __repr__(self) -> str:
        # Never the token: reprs end up in logs and tracebacks.
        sender = self._sender.get("from_") or self._sender.get("messaging_service_sid")
        return f"TwilioSmsProvider(host={self._host!r}, from={sender!r})"

    def send(self, message: dict) -> DeliveryResult:
        try:
            return self._send(message)
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            logger.exception("unexpected error in Twilio provider")
            return self._fail("internal_error", f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._http.close()

    def _send(self, message: dict) -> DeliveryResult:
        to, body = message.get("to"), message.get("body")
        if not isinstance(to, str) or not to or not isinstance(body, str) or not body:
            return self._fail("twilio_invalid_message", "an SMS needs a 'to' number and a non-empty 'body'",
                              permanent=True)
        optional = {}
        if message.get("status_callback"):
            optional["status_callback"] = str(message["status_callback"])
        elif self._status_callback and message.get("notification_id"):
            optional["status_callback"] = callback_url(self._status_callback,
                                                       str(message["notification_id"]))
        try:
            created = self._messages.create(to=to, body=body, **self._sender, **optional)
        except (TwilioRestException, TwilioServiceException) as exc:
            return self._twilio_failure(exc)
        except requests.exceptions.Timeout as exc:
            # Before ConnectionError: a ConnectTimeout is both.
            return self._fail("timeout", f"no reply from Twilio within {self._timeout}s: {type(exc).__name__}")
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # Refused, unreachable, reset or closed mid-reply: the SMS may or may not have been accepted.
            return self._fail("connection_error", f"cannot reach Twilio: {type(exc).__name__}: {exc}")
        return DeliveryResult(ok=True, provider_message_id=created.sid)

    def _twilio_failure(self, exc: TwilioRestException | TwilioServiceException) -> DeliveryResult:
        status = int(exc.status) if exc.status is not None else 0
        # `code` is Twilio's error code, or the HTTP status when the body had none.
        code = exc.code if exc.code is not None else status
        permanent = code in PERMANENT_CODES or (400 <= status < 500 and status != 429)
        if isinstance(exc, TwilioRestException):
            detail = exc.msg  # not str(exc): on a terminal it is ANSI-coloured
        else:
            detail = f"{exc.title}: {exc.detail}" if exc.detail else exc.title
        return self._fail(f"twilio_{code}", f"Twilio answered {status} (error {code}): {detail}",
                          permanent=permanent)

    def _fail(self, code: str, error: str, *, permanent: bool = False) -> DeliveryResult:
        return failure(code, error, permanent=permanent, secrets=(self._auth_token,))


def callback_url(base: str, notification_id: str) -> str:
    """The status callback URL of one SMS: `base` with the notification's id in its query.
    Twilio signs this whole URL, so the id in it is as trustworthy as the callback."""
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'notification_id': notification_id})}"


def _proxies(url: str) -> dict[str, str] | None:
    """The environment's proxy for `url` (`https_proxy`, `no_proxy`...) as requests would pick it."""
    proxy = environment_proxy(url)
    return {urlsplit(url).scheme: proxy} if proxy else None
