"""Push delivery through Firebase Cloud Messaging (HTTP v1), via the official `firebase-admin` library.

Owns one firebase app per provider instance, pointing it at a custom endpoint
(the simulator) when asked, switching off the library's own retries, and
turning every per-token outcome into a `DeliveryResult`.

The endpoint override and the retry switch use private names of
firebase-admin (`_get_messaging_service`, `_fcm_url`, `_client`); the project
pins firebase-admin>=7.5,<8 and this module fails loudly if they move.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import firebase_admin
import requests
import requests.adapters
from firebase_admin import credentials, exceptions, messaging
from google.auth import exceptions as google_auth_exceptions

from .base import DeliveryResult, environment_proxy, failure, parse_retry_after

logger = logging.getLogger(__name__)

# Since firebase-admin 7.5 `Message(token=...)` emits a DeprecationWarning and
# `fid=` is the new name; older 7.x only know `token=`.
_MESSAGE_TARGET = "fid" if "fid" in inspect.signature(messaging.Message.__init__).parameters else "token"

# Errors that say nothing about the particular token: the next token would get
# the same answer, so the remaining tokens are skipped instead of each waiting
# out a timeout or hammering a throttled/unavailable service.
_SERVICE_WIDE_CODES = frozenset(
    {
        "timeout",
        "connection_error",
        "fcm_token_endpoint",
        "fcm_unauthenticated",
        "fcm_permission_denied",
        "fcm_quota_exceeded",
        "fcm_unavailable",
        "fcm_internal",
    }
)

# The prefix firebase-admin mounts its own retrying adapter on.
_FCM_PREFIX = "https://fcm.googleapis.com"


@dataclass(frozen=True, slots=True)
class _TokenOutcome:
    ok: bool
    message_id: str | None = None
    code: str | None = None
    error: str | None = None
    permanent: bool = False
    retry_after: float | None = None


def _shown(token: str) -> str:
    # Enough to recognise a token in logs without spreading whole device tokens.
    return token[:12] + "…"


class FcmPushProvider:
    """Sends one FCM request per device token; thread-safe."""

    channel = "push"
    name = "fcm"

    def __init__(
        self,
        credentials_file: str,
        endpoint: str | None = None,
        timeout: float = 5.0,
        app_name: str | None = None,
        *,
        pool_size: int = 32,
    ) -> None:
        """`endpoint`: base URL replacing https://fcm.googleapis.com (e.g. the simulator's).

        `pool_size`: keep-alive connections kept per host; size it to the number
        of worker threads calling `send()` concurrently.
        """
        info = json.loads(Path(credentials_file).read_text(encoding="utf-8"))
        project_id = info.get("project_id")
        if not project_id:
            raise ValueError(f"{credentials_file}: service account has no project_id")
        self._project_id = project_id
        self._timeout = timeout
        self._closed = False
        self._close_lock = threading.Lock()
        cred = credentials.Certificate(info)
        self._app = firebase_admin.initialize_app(
            cred,
            # Options given explicitly so nothing is read from $FIREBASE_CONFIG.
            {"httpTimeout": timeout, "projectId": project_id},
            name=app_name or f"clarion-fcm-{uuid.uuid4().hex}",
        )
        try:
            self._service = self._configure_service(endpoint, pool_size)
            if endpoint is not None:
                self._keep_auth_lookups_local(cred, info)
        except BaseException:
            firebase_admin.delete_app(self._app)
            raise

    def __repr__(self) -> str:
        return f"FcmPushProvider(project_id={self._project_id!r}, app={self._app.name!r})"

    @property
    def app_name(self) -> str:
        return self._app.name

    def _configure_service(self, endpoint: str | None, pool_size: int) -> Any:
        service = messaging._get_messaging_service(self._app)
        missing = [name for name in ("_fcm_url", "_fcm_topic_url", "_client") if not hasattr(service, name)]
        session = getattr(getattr(service, "_client", None), "session", None)
        if missing or not isinstance(session, requests.Session):
            raise RuntimeError(
                f"firebase-admin {firebase_admin.__version__} changed its private messaging API "
                f"(missing: {', '.join(missing) or '_client.session'}); Clarion needs firebase-admin>=7.5,<8"
            )
        if endpoint is not None:
            base = endpoint.rstrip("/")
            service._fcm_url = f"{base}/v1/projects/{self._project_id}/messages:send"
            service._fcm_topic_url = f"{base}/v1/projects/{self._project_id}/registrations"
        # Replace the library's retrying adapters: by default it retries 500/503
        # four times (~7 s) and sleeps on any Retry-After (capped only at 6 h),
        # which would stall a worker thread. The delivery actor owns retries.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        for prefix in (_FCM_PREFIX, "https://", "http://"):
            previous = session.adapters.get(prefix)
            session.mount(prefix, adapter)
            if previous is not None and previous is not adapter:
                previous.close()
        # With trust_env, requests reads the environment on every call (proxy variables,
        # no_proxy, ~/.netrc, CA bundle variables): 720-900 µs of CPU per push instead of
        # 600-720 against the simulator, a quarter of a core at 1,000 pushes/s. The proxy is
        # looked up once here instead (proxy, CA bundle, as requests would); a ~/.netrc entry
        # could only have replaced the bearer token.
        session.trust_env = False
        proxy = environment_proxy(service._fcm_url)
        if proxy:
            session.proxies = {urlsplit(service._fcm_url).scheme: proxy}
        if session.verify is True:
            session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        return service

    def _keep_auth_lookups_local(self, cred: credentials.Certificate, info: dict[str, Any]) -> None:
        """Sends google-auth's post-refresh "allowed locations" lookup to the token endpoint's host.

        google-auth otherwise starts a background request to
        iamcredentials.googleapis.com after each token refresh. Overridden on this
        credential object only (not the module function), so other Google clients
        in the process keep their normal behaviour.
        """
        g_cred = cred.get_credential()
        token_uri = info.get("token_uri", "")
        origin = urlsplit(token_uri)
        email = info.get("client_email", "")
        if not hasattr(g_cred, "_build_regional_access_boundary_lookup_url") or not origin.netloc:
            return  # google-auth without the feature, or nothing local to point at
        url = f"{origin.scheme}://{origin.netloc}/v1/projects/-/serviceAccounts/{email}/allowedLocations"

        def lookup_url(*_args: Any, **_kwargs: Any) -> str:
            return url

        g_cred._build_regional_access_boundary_lookup_url = lookup_url

    # -- sending ----------------------------------------------------------

    def send(self, message: dict) -> DeliveryResult:
        try:
            return self._send(message)
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            logger.exception("unexpected error in FCM provider")
            return failure("internal_error", f"{type(exc).__name__}: {exc}")

    def _send(self, message: dict) -> DeliveryResult:
        if self._closed:
            return failure("provider_closed", "FCM provider is closed")
        tokens = message.get("tokens")
        if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) and t for t in tokens):
            return failure("fcm_invalid_message", "tokens must be a list of non-empty strings", permanent=True)
        if not tokens:
            return failure("fcm_no_tokens", "message has no device tokens", permanent=True)
        data = message.get("data") or {}
        # FCM only carries string values; fail here rather than once per token.
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            return failure("fcm_invalid_message", "data must map strings to strings", permanent=True)
        notification = messaging.Notification(title=message.get("title"), body=message.get("body"))

        details: list[dict[str, Any]] = []
        failed: list[_TokenOutcome] = []
        first_id: str | None = None
        # One request per token, sequentially on the caller's worker thread:
        # send_each() would spawn a thread per token.
        for index, token in enumerate(tokens):
            outcome = self._send_one(token, notification, data)
            if outcome.ok:
                first_id = first_id or outcome.message_id
                details.append({"token": _shown(token), "ok": True, "message_id": outcome.message_id})
                continue
            failed.append(outcome)
            details.append(self._failure_detail(token, outcome))
            if outcome.code in _SERVICE_WIDE_CODES:
                for skipped in tokens[index + 1 :]:
                    detail = self._failure_detail(skipped, outcome)
                    detail["skipped"] = True
                    details.append(detail)
                break

        if not failed:
            return DeliveryResult(ok=True, provider_message_id=first_id, details=tuple(details))
        return self._aggregate(failed, details, len(tokens))

    def _send_one(self, token: str, notification: messaging.Notification, data: dict[str, str]) -> _TokenOutcome:
        try:
            fcm_message = messaging.Message(notification=notification, data=data or None, **{_MESSAGE_TARGET: token})
            name = messaging.send(fcm_message, app=self._app)
        except Exception as exc:  # noqa: BLE001 - classified below, never propagated
            return _classify(exc)
        return _TokenOutcome(ok=True, message_id=name)

    @staticmethod
    def _failure_detail(token: str, outcome: _TokenOutcome) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "token": _shown(token),
            "ok": False,
            "error_code": outcome.code,
            "permanent": outcome.permanent,
            # The caller needs the whole token to drop it (unregistered) or to
            # retry only the tokens that failed.
            "full_token": token,
        }
        if outcome.code == "fcm_unregistered":
            detail["unregistered"] = True
        return detail

    @staticmethod
    def _aggregate(failed: list[_TokenOutcome], details: list[dict[str, Any]], total: int) -> DeliveryResult:
        # Retryable failures win: if any token can still succeed, a retry is worth it.
        retryable = [f for f in failed if not f.permanent]
        lead = retryable[0] if retryable else failed[0]
        waits = [f.retry_after for f in retryable if f.retry_after is not None]
        failed_count = sum(1 for d in details if not d["ok"])
        return failure(
            lead.code or "fcm_error",
            f"{failed_count} of {total} token(s) failed; first: {lead.error}",
            permanent=not retryable,
            retry_after=max(waits) if waits else None,
            details=tuple(details),
        )

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Deletes the firebase app and closes its connections; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        client = getattr(self._service, "_client", None)
        try:
            # delete_app() closes only the async client; the requests session
            # (and its keep-alive sockets) would otherwise linger until GC.
            if client is not None and client.session is not None:
                client.session.close()
        except Exception:  # noqa: BLE001 - closing must not fail the caller
            logger.debug("closing FCM session failed", exc_info=True)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            _delete_app(self._app)
        else:
            # delete_app() calls asyncio.run(), which refuses to run inside a
            # running loop: do it from a short-lived helper thread.
            helper = threading.Thread(target=_delete_app, args=(self._app,), name="clarion-fcm-close")
            helper.start()
            helper.join()


def _delete_app(app: firebase_admin.App) -> None:
    try:
        firebase_admin.delete_app(app)
    except Exception:  # noqa: BLE001 - already deleted or cleanup failed; nothing to do
        logger.debug("deleting firebase app %s failed", app.name, exc_info=True)


def _status_of(exc: exceptions.FirebaseError) -> int | None:
    response = exc.http_response
    return response.status_code if response is not None else None


def _retry_after_of(exc: exceptions.FirebaseError) -> float | None:
    response = exc.http_response
    return parse_retry_after(response.headers.get("Retry-After")) if response is not None else None


def _classify(exc: Exception) -> _TokenOutcome:
    """Maps one failed `messaging.send()` to a stable error code and retry advice."""
    text = f"{type(exc).__name__}: {exc}"

    def outcome(code: str, permanent: bool = False, retry_after: float | None = None) -> _TokenOutcome:
        return _TokenOutcome(ok=False, code=code, error=text, permanent=permanent, retry_after=retry_after)

    # Subclasses before their bases: UnregisteredError is a NotFoundError, etc.
    if isinstance(exc, messaging.UnregisteredError):
        return outcome("fcm_unregistered", permanent=True)  # the app was uninstalled / token expired
    if isinstance(exc, messaging.SenderIdMismatchError):
        return outcome("fcm_sender_id_mismatch", permanent=True)  # token belongs to another project
    if isinstance(exc, messaging.QuotaExceededError):
        return outcome("fcm_quota_exceeded", retry_after=_retry_after_of(exc))
    if isinstance(exc, messaging.ThirdPartyAuthError):
        # APNs certificate / web-push key missing or invalid: project config, same answer until fixed.
        return outcome("fcm_auth", permanent=True)
    if isinstance(exc, exceptions.FirebaseError):
        cause = exc.cause
        if isinstance(exc, exceptions.DeadlineExceededError) or isinstance(cause, requests.exceptions.Timeout):
            return outcome("timeout")
        if isinstance(cause, requests.exceptions.ConnectionError):
            # firebase-admin reports refused/reset connections as UnavailableError.
            return outcome("connection_error")
        if isinstance(exc, exceptions.InvalidArgumentError):
            return outcome("fcm_invalid_argument", permanent=True)  # malformed message or token
        if isinstance(exc, exceptions.UnavailableError):
            return outcome("fcm_unavailable", retry_after=_retry_after_of(exc))
        if isinstance(exc, exceptions.InternalError):
            return outcome("fcm_internal", retry_after=_retry_after_of(exc))
        if isinstance(exc, exceptions.ResourceExhaustedError):
            return outcome("fcm_quota_exceeded", retry_after=_retry_after_of(exc))
        if isinstance(exc, exceptions.UnauthenticatedError):
            # Still 401 after google-auth's own refresh-and-retry; may be key rotation in progress.
            return outcome("fcm_unauthenticated")
        if isinstance(exc, exceptions.PermissionDeniedError):
            return outcome("fcm_permission_denied", permanent=True)  # service account lacks FCM rights
        if isinstance(exc, exceptions.NotFoundError):
            return outcome("fcm_not_found", permanent=True)  # unknown project / wrong endpoint
        status = _status_of(exc)
        # Other 4xx (except timeouts/throttling) repeat identically; 5xx and unknown may pass later.
        permanent = status is not None and 400 <= status < 500 and status not in (408, 429)
        return outcome(f"fcm_{str(exc.code).lower()}", permanent=permanent, retry_after=_retry_after_of(exc))
    if isinstance(exc, google_auth_exceptions.GoogleAuthError):
        # Raised before any FCM request when the OAuth2 token cannot be fetched.
        # google-auth marks e.g. invalid_grant (bad/revoked key) as not retryable.
        permanent = isinstance(exc, google_auth_exceptions.RefreshError) and not exc.retryable
        return outcome("fcm_token_endpoint", permanent=permanent)
    if isinstance(exc, requests.exceptions.Timeout):
        return outcome("timeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return outcome("connection_error")
    if isinstance(exc, ValueError):
        # The SDK validates the message while encoding it (e.g. a non-string data value).
        return outcome("fcm_invalid_message", permanent=True)
    return outcome("internal_error")
