"""`Clarion`, the synchronous client: sends each `Call` with httpx and sleeps between attempts.

Everything else (what each operation sends, what is retried, how answers are read) is shared
with `AsyncClarion`; this module is the loop that does the I/O, and the namespaces callers use
(`clarion.notifications.send(...)`, `clarion.users.get(...)`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Self, TypeVar

import httpx

from clarion_client import endpoints
from clarion_client._version import __version__
from clarion_client.attempts import Attempts, Outcome
from clarion_client.bodies import (
    UNSET,
    CallbackRegistration,
    NewNotification,
    NewSuppression,
    NewTemplate,
    NewUser,
    RenderRequest,
    ReplayFilter,
    UserChanges,
    _Unset,
)
from clarion_client.models import (
    BatchResult,
    CallbackEndpoint,
    Cancellation,
    Notification,
    NotificationAccepted,
    Page,
    Replayed,
    Suppression,
    SuppressionRemoval,
    SuppressionStatus,
    Template,
    TemplateVersion,
    User,
)
from clarion_client.retry import RetryPolicy
from clarion_client.routes import Call

T = TypeVar("T")

# Clarion answers 504 after CLARION_REQUEST_TIMEOUT (10 s by default): wait a little longer, so
# that its answer, not our own timeout, says what happened.
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


def default_headers(api_key: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    if not api_key:
        raise ValueError("an API key is needed (clarion apikey create NAME --scope send|admin)")
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json",
            "User-Agent": f"clarion-client/{__version__}", **(extra or {})}


class Clarion:
    """Clarion's HTTP API. Use it as a context manager, or call `close()`.

    `retry` bounds the attempts of each call (`RetryPolicy(max_attempts=1)`: none); `transport`
    is httpx's (a proxy, a test double); `sleep` is how the client waits between attempts.
    """

    def __init__(self, base_url: str, api_key: str, *,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, headers=default_headers(api_key, headers),
                                  timeout=timeout, transport=transport, follow_redirects=False)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self.notifications = Notifications(self)
        self.users = Users(self)
        self.templates = Templates(self)
        self.suppressions = Suppressions(self)
        self.callbacks = Callbacks(self)
        self.dead_letters = DeadLetters(self)

    def __repr__(self) -> str:  # never the key
        return f"Clarion({self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def run(self, call: Call[T]) -> T:
        """Make one call, with its retries; its result, or the ClarionError it ended with."""
        attempts = Attempts(call, self._retry)
        while True:
            outcome: Outcome
            try:
                outcome = self._http.send(attempts.request(self._http))
            except httpx.TransportError as exc:
                outcome = exc
            delay = attempts.next_delay(outcome)
            if delay is None:
                return attempts.result(outcome)
            self._sleep(delay)

    def pages(self, call_for: Callable[[int], Call[Page[T]]]) -> Iterator[T]:
        """Every item of every page, fetching the next page while `meta.has_next`."""
        number: int | None = 1
        while number is not None:
            page = self.run(call_for(number))
            yield from page.items
            number = page.next_page


class _Namespace:
    def __init__(self, client: Clarion) -> None:
        self._client = client


class Notifications(_Namespace):
    def send(self, user_id: str, template_key: str,
             message_data: Mapping[str, Any] | None = None, *,
             channels: Sequence[str] | None = None, language: str | None = None,
             template_version: int | None = None, priority: str | None = None,
             category: str | None = None, send_at: dt.datetime | str | None = None,
             fallback_channels: Sequence[str] | None = None, request_id: str | None = None,
             idempotency_key: str | None = None) -> NotificationAccepted:
        """Send one notification (202: committed, to be delivered). Retried safely: every
        attempt carries the same idempotency key (`idempotency_key`, or one made here)."""
        notification = NewNotification(user_id, template_key, message_data, channels, language,
                                       template_version, priority, request_id, category,
                                       send_at, fallback_channels)
        return self._client.run(endpoints.send(notification, idempotency_key))

    def send_batch(self, notifications: Sequence[NewNotification | Mapping[str, Any]],
                   ) -> BatchResult:
        """Up to 1,000 notifications, each answered alone (priority defaults to bulk). A batch
        has no idempotency key: it is retried only when Clarion did nothing with it."""
        return self._client.run(endpoints.send_batch(notifications))

    def get(self, notification_id: str) -> Notification:
        return self._client.run(endpoints.get_notification(notification_id))

    def list(self, *, user_id: str | None = None, status: str | None = None, page: int = 1,
             limit: int = 50) -> Page[Notification]:
        return self._client.run(endpoints.list_notifications(user_id, status, page, limit))

    def iterate(self, *, user_id: str | None = None, status: str | None = None,
                limit: int = 100) -> Iterator[Notification]:
        """Every notification, newest first (one sent meanwhile shifts the pages)."""
        return self._client.pages(
            lambda page: endpoints.list_notifications(user_id, status, page, limit))

    def cancel(self, notification_id: str) -> Cancellation:
        """Cancel what is still scheduled; `Conflict` (`not_cancellable`) once it went out."""
        return self._client.run(endpoints.cancel_notification(notification_id))

    def outbox(self, *, notification_id: str | None = None, channel: str | None = None,
               limit: int = 50) -> Sequence[dict[str, Any]]:
        """What the local outbox received (no provider configured), newest first."""
        return self._client.run(endpoints.outbox(notification_id, channel, limit))


class Users(_Namespace):
    def create(self, user_id: str | None = None, *, email_address: str | None = None,
               phone_number: str | None = None, preferred_language: str | None = None,
               preferences: Mapping[str, Any] | None = None,
               push_tokens: Sequence[str] | None = None) -> User:
        return self._client.run(endpoints.create_user(NewUser(
            user_id, email_address, phone_number, preferred_language, preferences,
            push_tokens)))

    def get(self, user_id: str) -> User:
        return self._client.run(endpoints.get_user(user_id))

    def list(self, *, email: str | None = None, page: int = 1, limit: int = 20) -> Page[User]:
        return self._client.run(endpoints.list_users(email, page, limit))

    def iterate(self, *, email: str | None = None, limit: int = 100) -> Iterator[User]:
        return self._client.pages(lambda page: endpoints.list_users(email, page, limit))

    def update(self, user_id: str, *, email_address: str | None | _Unset = UNSET,
               phone_number: str | None | _Unset = UNSET,
               preferred_language: str | _Unset = UNSET,
               preferences: Mapping[str, Any] | _Unset = UNSET,
               push_tokens: Sequence[str] | _Unset = UNSET) -> User:
        """Change only what is given; None clears email_address or phone_number."""
        return self._client.run(endpoints.update_user(user_id, UserChanges(
            email_address, phone_number, preferred_language, preferences, push_tokens)))

    def delete(self, user_id: str) -> None:
        self._client.run(endpoints.delete_user(user_id))

    def add_push_token(self, user_id: str, token: str) -> User:
        return self._client.run(endpoints.add_push_token(user_id, token))

    def remove_push_token(self, user_id: str, token: str) -> User:
        return self._client.run(endpoints.remove_push_token(user_id, token))


class Templates(_Namespace):
    def create(self, template_key: str, *, subject: str, body: str,
               language: str | None = None, html_body: str | None = None,
               push_title: str | None = None, push_body: str | None = None,
               sms_body: str | None = None, description: str | None = None,
               fallback_channels: Sequence[str] | None = None,
               variables: Sequence[str] | None = None) -> TemplateVersion:
        """Version 1 of a template in a language (`Conflict` if the key has that language)."""
        return self._client.run(endpoints.create_template(NewTemplate(
            template_key, subject, body, language, html_body, push_title, push_body, sms_body,
            description, fallback_channels, variables)))

    def new_version(self, template_key: str, *, subject: str, body: str,
                    language: str | None = None, html_body: str | None = None,
                    push_title: str | None = None, push_body: str | None = None,
                    sms_body: str | None = None, description: str | None = None,
                    fallback_channels: Sequence[str] | None = None,
                    variables: Sequence[str] | None = None) -> TemplateVersion:
        """The next version in that language (versions never change)."""
        return self._client.run(endpoints.new_template_version(NewTemplate(
            template_key, subject, body, language, html_body, push_title, push_body, sms_body,
            description, fallback_channels, variables)))

    def get(self, template_key: str, *, language: str | None = None,
            version: int | None = None) -> Template:
        return self._client.run(endpoints.get_template(template_key, language, version))

    def versions(self, template_key: str) -> Sequence[TemplateVersion]:
        """Every version of every language, newest first."""
        return self._client.run(endpoints.template_versions(template_key))

    def list(self, *, page: int = 1, limit: int = 20) -> Page[dict[str, Any]]:
        """Template keys with their languages and latest versions."""
        return self._client.run(endpoints.list_templates(page, limit))

    def iterate(self, *, limit: int = 100) -> Iterator[dict[str, Any]]:
        return self._client.pages(lambda page: endpoints.list_templates(page, limit))

    def retire(self, template_key: str) -> None:
        """The key can no longer be sent; a later `create` revives it."""
        self._client.run(endpoints.retire_template(template_key))

    def render(self, template_key: str, message_data: Mapping[str, Any] | None = None, *,
               language: str | None = None, version: int | None = None) -> dict[str, Any]:
        """A preview, rendered as a notification would be; nothing is sent."""
        return self._client.run(endpoints.render_template(RenderRequest(
            template_key, message_data, language, version)))


class Suppressions(_Namespace):
    def list(self, *, channel: str | None = None, reason: str | None = None,
             address: str | None = None, page: int = 1, limit: int = 50) -> Page[Suppression]:
        return self._client.run(endpoints.list_suppressions(channel, reason, address, page,
                                                            limit))

    def iterate(self, *, channel: str | None = None, reason: str | None = None,
                address: str | None = None, limit: int = 100) -> Iterator[Suppression]:
        return self._client.pages(lambda page: endpoints.list_suppressions(
            channel, reason, address, page, limit))

    def add(self, address: str, *, reason: str | None = None,
            note: str | None = None) -> Suppression:
        """Put an address on the list (its first entry is kept if it is there)."""
        return self._client.run(endpoints.add_suppression(NewSuppression(address, reason, note)))

    def get(self, address: str) -> SuppressionStatus:
        return self._client.run(endpoints.get_suppression(address))

    def remove(self, address: str, *, reason: str) -> SuppressionRemoval:
        """Take an address off the list; the reason is kept in the audit."""
        return self._client.run(endpoints.remove_suppression(address, reason))

    def removals(self, *, address: str | None = None, page: int = 1,
                 limit: int = 50) -> Page[SuppressionRemoval]:
        return self._client.run(endpoints.list_removals(address, page, limit))

    def iterate_removals(self, *, address: str | None = None,
                         limit: int = 100) -> Iterator[SuppressionRemoval]:
        return self._client.pages(lambda page: endpoints.list_removals(address, page, limit))


class Callbacks(_Namespace):
    def register(self, url: str, *, secret: str | None = None) -> CallbackEndpoint:
        """Where this key's status changes go. Without `secret` Clarion makes one and shows it
        in this answer only (`CallbackEndpoint.secret`)."""
        return self._client.run(endpoints.register_callback(CallbackRegistration(url, secret)))

    def get(self) -> CallbackEndpoint:
        return self._client.run(endpoints.get_callback())

    def remove(self) -> None:
        self._client.run(endpoints.remove_callback())

    def log(self, notification_id: str) -> Sequence[dict[str, Any]]:
        """One notification's callbacks, in order, with their attempts and last error."""
        return self._client.run(endpoints.callback_log(notification_id))


class DeadLetters(_Namespace):
    def list(self, *, channel: str | None = None, error_code: str | None = None,
             page: int = 1, limit: int = 50) -> Page[dict[str, Any]]:
        return self._client.run(endpoints.list_dead_letters(channel, error_code, page, limit))

    def iterate(self, *, channel: str | None = None, error_code: str | None = None,
                limit: int = 100) -> Iterator[dict[str, Any]]:
        return self._client.pages(lambda page: endpoints.list_dead_letters(
            channel, error_code, page, limit))

    def replay(self, dead_letter_id: int) -> Replayed:
        return self._client.run(endpoints.replay_dead_letter(dead_letter_id))

    def replay_matching(self, *, ids: Sequence[int] | None = None, channel: str | None = None,
                        error_code: str | None = None, limit: int | None = None) -> Replayed:
        """Replay every dead letter matching the filter (1,000 at most per call)."""
        return self._client.run(endpoints.replay_dead_letters(
            ReplayFilter(ids, channel, error_code, limit)))

    def discard(self, dead_letter_id: int) -> None:
        self._client.run(endpoints.discard_dead_letter(dead_letter_id))
