"""`AsyncClarion`, the asyncio client: the same calls as `Clarion`, awaited.

What each operation sends, what is retried and how answers are read come from the same
`endpoints` and `Attempts` as the sync client; only the loop that sends and sleeps is its own
(`client/tests/test_parity.py` checks that both clients offer the same methods with the same
parameters).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

import httpx

from clarion_client import endpoints
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
from clarion_client.client import DEFAULT_TIMEOUT, default_headers
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


class AsyncClarion:
    """Clarion's HTTP API for asyncio. Use it with `async with`, or await `aclose()`."""

    def __init__(self, base_url: str, api_key: str, *,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.base_url = base_url
        self._http = httpx.AsyncClient(base_url=base_url,
                                       headers=default_headers(api_key, headers),
                                       timeout=timeout, transport=transport,
                                       follow_redirects=False)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self.notifications = AsyncNotifications(self)
        self.users = AsyncUsers(self)
        self.templates = AsyncTemplates(self)
        self.suppressions = AsyncSuppressions(self)
        self.callbacks = AsyncCallbacks(self)
        self.dead_letters = AsyncDeadLetters(self)

    def __repr__(self) -> str:  # never the key
        return f"AsyncClarion({self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self, call: Call[T]) -> T:
        """Make one call, with its retries; its result, or the ClarionError it ended with."""
        attempts = Attempts(call, self._retry)
        while True:
            outcome: Outcome
            try:
                outcome = await self._http.send(attempts.request(self._http))
            except httpx.TransportError as exc:
                outcome = exc
            delay = attempts.next_delay(outcome)
            if delay is None:
                return attempts.result(outcome)
            await self._sleep(delay)

    async def pages(self, call_for: Callable[[int], Call[Page[T]]]) -> AsyncIterator[T]:
        """Every item of every page, fetching the next page while `meta.has_next`."""
        number: int | None = 1
        while number is not None:
            page = await self.run(call_for(number))
            for item in page.items:
                yield item
            number = page.next_page


class _AsyncNamespace:
    def __init__(self, client: AsyncClarion) -> None:
        self._client = client


class AsyncNotifications(_AsyncNamespace):
    async def send(self, user_id: str, template_key: str,
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
        return await self._client.run(endpoints.send(notification, idempotency_key))

    async def send_batch(self, notifications: Sequence[NewNotification | Mapping[str, Any]],
                         ) -> BatchResult:
        """Up to 1,000 notifications, each answered alone (priority defaults to bulk). A batch
        has no idempotency key: it is retried only when Clarion did nothing with it."""
        return await self._client.run(endpoints.send_batch(notifications))

    async def get(self, notification_id: str) -> Notification:
        return await self._client.run(endpoints.get_notification(notification_id))

    async def list(self, *, user_id: str | None = None, status: str | None = None, page: int = 1,
                   limit: int = 50) -> Page[Notification]:
        return await self._client.run(endpoints.list_notifications(user_id, status, page, limit))

    def iterate(self, *, user_id: str | None = None, status: str | None = None,
                limit: int = 100) -> AsyncIterator[Notification]:
        """Every notification, newest first (one sent meanwhile shifts the pages)."""
        return self._client.pages(
            lambda page: endpoints.list_notifications(user_id, status, page, limit))

    async def cancel(self, notification_id: str) -> Cancellation:
        """Cancel what is still scheduled; `Conflict` (`not_cancellable`) once it went out."""
        return await self._client.run(endpoints.cancel_notification(notification_id))

    async def outbox(self, *, notification_id: str | None = None, channel: str | None = None,
                     limit: int = 50) -> Sequence[dict[str, Any]]:
        """What the local outbox received (no provider configured), newest first."""
        return await self._client.run(endpoints.outbox(notification_id, channel, limit))


class AsyncUsers(_AsyncNamespace):
    async def create(self, user_id: str | None = None, *, email_address: str | None = None,
                     phone_number: str | None = None, preferred_language: str | None = None,
                     preferences: Mapping[str, Any] | None = None,
                     push_tokens: Sequence[str] | None = None) -> User:
        return await self._client.run(endpoints.create_user(NewUser(
            user_id, email_address, phone_number, preferred_language, preferences,
            push_tokens)))

    async def get(self, user_id: str) -> User:
        return await self._client.run(endpoints.get_user(user_id))

    async def list(self, *, email: str | None = None, page: int = 1, limit: int = 20) -> Page[User]:
        return await self._client.run(endpoints.list_users(email, page, limit))

    def iterate(self, *, email: str | None = None, limit: int = 100) -> AsyncIterator[User]:
        return self._client.pages(lambda page: endpoints.list_users(email, page, limit))

    async def update(self, user_id: str, *, email_address: str | None | _Unset = UNSET,
                     phone_number: str | None | _Unset = UNSET,
                     preferred_language: str | _Unset = UNSET,
                     preferences: Mapping[str, Any] | _Unset = UNSET,
                     push_tokens: Sequence[str] | _Unset = UNSET) -> User:
        """Change only what is given; None clears email_address or phone_number."""
        return await self._client.run(endpoints.update_user(user_id, UserChanges(
            email_address, phone_number, preferred_language, preferences, push_tokens)))

    async def delete(self, user_id: str) -> None:
        await self._client.run(endpoints.delete_user(user_id))

    async def add_push_token(self, user_id: str, token: str) -> User:
        return await self._client.run(endpoints.add_push_token(user_id, token))

    async def remove_push_token(self, user_id: str, token: str) -> User:
        return await self._client.run(endpoints.remove_push_token(user_id, token))


class AsyncTemplates(_AsyncNamespace):
    async def create(self, template_key: str, *, subject: str, body: str,
                     language: str | None = None, html_body: str | None = None,
                     push_title: str | None = None, push_body: str | None = None,
                     sms_body: str | None = None, description: str | None = None,
                     fallback_channels: Sequence[str] | None = None,
                     variables: Sequence[str] | None = None) -> TemplateVersion:
        """Version 1 of a template in a language (`Conflict` if the key has that language)."""
        return await self._client.run(endpoints.create_template(NewTemplate(
            template_key, subject, body, language, html_body, push_title, push_body, sms_body,
            description, fallback_channels, variables)))

    async def new_version(self, template_key: str, *, subject: str, body: str,
                          language: str | None = None, html_body: str | None = None,
                          push_title: str | None = None, push_body: str | None = None,
                          sms_body: str | None = None, description: str | None = None,
                          fallback_channels: Sequence[str] | None = None,
                          variables: Sequence[str] | None = None) -> TemplateVersion:
        """The next version in that language (versions never change)."""
        return await self._client.run(endpoints.new_template_version(NewTemplate(
            template_key, subject, body, language, html_body, push_title, push_body, sms_body,
            description, fallback_channels, variables)))

    async def get(self, template_key: str, *, language: str | None = None,
                  version: int | None = None) -> Template:
        return await self._client.run(endpoints.get_template(template_key, language, version))

    async def versions(self, template_key: str) -> Sequence[TemplateVersion]:
        """Every version of every language, newest first."""
        return await self._client.run(endpoints.template_versions(template_key))

    async def list(self, *, page: int = 1, limit: int = 20) -> Page[dict[str, Any]]:
        """Template keys with their languages and latest versions."""
        return await self._client.run(endpoints.list_templates(page, limit))

    def iterate(self, *, limit: int = 100) -> AsyncIterator[dict[str, Any]]:
        return self._client.pages(lambda page: endpoints.list_templates(page, limit))

    async def retire(self, template_key: str) -> None:
        """The key can no longer be sent; a later `create` revives it."""
        await self._client.run(endpoints.retire_template(template_key))

    async def render(self, template_key: str, message_data: Mapping[str, Any] | None = None, *,
                     language: str | None = None, version: int | None = None) -> dict[str, Any]:
        """A preview, rendered as a notification would be; nothing is sent."""
        return await self._client.run(endpoints.render_template(RenderRequest(
            template_key, message_data, language, version)))


class AsyncSuppressions(_AsyncNamespace):
    async def list(self, *, channel: str | None = None, reason: str | None = None,
                   address: str | None = None, page: int = 1, limit: int = 50) -> Page[Suppression]:
        return await self._client.run(endpoints.list_suppressions(channel, reason, address, page,
                                                            limit))

    def iterate(self, *, channel: str | None = None, reason: str | None = None,
                address: str | None = None, limit: int = 100) -> AsyncIterator[Suppression]:
        return self._client.pages(lambda page: endpoints.list_suppressions(
            channel, reason, address, page, limit))

    async def add(self, address: str, *, reason: str | None = None,
                  note: str | None = None) -> Suppression:
        """Put an address on the list (its first entry is kept if it is there)."""
        return await self._client.run(endpoints.add_suppression(
            NewSuppression(address, reason, note)))

    async def get(self, address: str) -> SuppressionStatus:
        return await self._client.run(endpoints.get_suppression(address))

    async def remove(self, address: str, *, reason: str) -> SuppressionRemoval:
        """Take an address off the list; the reason is kept in the audit."""
        return await self._client.run(endpoints.remove_suppression(address, reason))

    async def removals(self, *, address: str | None = None, page: int = 1,
                       limit: int = 50) -> Page[SuppressionRemoval]:
        return await self._client.run(endpoints.list_removals(address, page, limit))

    def iterate_removals(self, *, address: str | None = None,
                         limit: int = 100) -> AsyncIterator[SuppressionRemoval]:
        return self._client.pages(lambda page: endpoints.list_removals(address, page, limit))


class AsyncCallbacks(_AsyncNamespace):
    async def register(self, url: str, *, secret: str | None = None) -> CallbackEndpoint:
        """Where this key's status changes go. Without `secret` Clarion makes one and shows it
        in this answer only (`CallbackEndpoint.secret`)."""
        return await self._client.run(endpoints.register_callback(
            CallbackRegistration(url, secret)))

    async def get(self) -> CallbackEndpoint:
        return await self._client.run(endpoints.get_callback())

    async def remove(self) -> None:
        await self._client.run(endpoints.remove_callback())

    async def log(self, notification_id: str) -> Sequence[dict[str, Any]]:
        """One notification's callbacks, in order, with their attempts and last error."""
        return await self._client.run(endpoints.callback_log(notification_id))


class AsyncDeadLetters(_AsyncNamespace):
    async def list(self, *, channel: str | None = None, error_code: str | None = None,
                   page: int = 1, limit: int = 50) -> Page[dict[str, Any]]:
        return await self._client.run(endpoints.list_dead_letters(channel, error_code, page, limit))

    def iterate(self, *, channel: str | None = None, error_code: str | None = None,
                limit: int = 100) -> AsyncIterator[dict[str, Any]]:
        return self._client.pages(lambda page: endpoints.list_dead_letters(
            channel, error_code, page, limit))

    async def replay(self, dead_letter_id: int) -> Replayed:
        return await self._client.run(endpoints.replay_dead_letter(dead_letter_id))

    async def replay_matching(self, *, ids: Sequence[int] | None = None, channel: str | None = None,
                              error_code: str | None = None, limit: int | None = None) -> Replayed:
        """Replay every dead letter matching the filter (1,000 at most per call)."""
        return await self._client.run(endpoints.replay_dead_letters(
            ReplayFilter(ids, channel, error_code, limit)))

    async def discard(self, dead_letter_id: int) -> None:
        await self._client.run(endpoints.discard_dead_letter(dead_letter_id))
