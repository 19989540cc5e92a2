"""Each API operation as a `Call`: which route, what it sends, how its answer is read.

Both clients are thin over these functions, so what the sync and the async client send is the
same by construction. A send gets its idempotency key here, once per call, so that every retry
of it carries the same key (README "Idempotency").
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from clarion_client import routes
from clarion_client.bodies import (
    CallbackRegistration,
    NewNotification,
    NewSuppression,
    NewTemplate,
    NewUser,
    PushToken,
    RenderRequest,
    ReplayFilter,
    UserChanges,
)
from clarion_client.models import (
    BatchItem,
    BatchResult,
    CallbackEndpoint,
    Cancellation,
    Model,
    Notification,
    NotificationAccepted,
    Page,
    PageMeta,
    Replayed,
    Suppression,
    SuppressionRemoval,
    SuppressionStatus,
    Template,
    TemplateVersion,
    User,
)
from clarion_client.routes import Call, Route

M = TypeVar("M", bound=Model)
Query = Mapping[str, Any]

# What Clarion accepts as X-Request-ID (http/middleware.py); another value it would replace.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _one(model: type[M]) -> Callable[[Any, Any], M]:
    return lambda data, meta: model.from_json(data)


def _many(model: type[M]) -> Callable[[Any, Any], list[M]]:
    return lambda data, meta: [model.from_json(item) for item in data]


def _page(model: type[M]) -> Callable[[Any, Any], Page[M]]:
    return lambda data, meta: Page([model.from_json(i) for i in data], PageMeta.from_json(meta))


def _dicts(data: Any, meta: Any) -> list[dict[str, Any]]:
    return [dict(item) for item in data]


def _dict_page(data: Any, meta: Any) -> Page[dict[str, Any]]:
    return Page([dict(item) for item in data], PageMeta.from_json(meta))


def _nothing(data: Any, meta: Any) -> None:
    return None


def _call(route: Route, parse: Callable[[Any, Any], Any], body: Any = None,
          query: Query | None = None, **path: str | int) -> Call[Any]:
    return Call(route, parse, path, dict(query or {}), body)


# -- notifications ------------------------------------------------------------------------------


def send(notification: NewNotification, idempotency_key: str | None = None,
         ) -> Call[NotificationAccepted]:
    # A key per call unless the caller brings one: every retry below reuses it, so a send that
    # timed out and is tried again is answered with the first answer, never sent twice.
    key = idempotency_key or uuid.uuid4().hex
    rid = notification.request_id
    return Call(routes.SEND, _one(NotificationAccepted), body=notification.to_json(),
                idempotency_key=key,
                request_id=rid if rid is not None and _REQUEST_ID.match(rid) else None)


def send_batch(notifications: Sequence[NewNotification | Mapping[str, Any]],
               ) -> Call[BatchResult]:
    items = [n.to_json() if isinstance(n, NewNotification) else dict(n) for n in notifications]

    def parse(data: Any, meta: Any) -> BatchResult:
        meta = meta or {}
        found = [BatchItem.from_json(item) for item in data]
        accepted = int(meta.get("accepted", sum(i.success for i in found)))
        return BatchResult(found, accepted, int(meta.get("refused", len(found) - accepted)))

    return _call(routes.SEND_BATCH, parse, {"notifications": items})


def get_notification(notification_id: str) -> Call[Notification]:
    return _call(routes.GET_NOTIFICATION, _one(Notification), notification_id=notification_id)


def list_notifications(user_id: str | None = None, status: str | None = None, page: int = 1,
                       limit: int = 50) -> Call[Page[Notification]]:
    return _call(routes.LIST_NOTIFICATIONS, _page(Notification),
                 query={"user_id": user_id, "status": status, "page": page, "limit": limit})


def cancel_notification(notification_id: str) -> Call[Cancellation]:
    return _call(routes.CANCEL_NOTIFICATION, _one(Cancellation),
                 notification_id=notification_id)


def outbox(notification_id: str | None = None, channel: str | None = None,
           limit: int = 50) -> Call[list[dict[str, Any]]]:
    return _call(routes.OUTBOX, _dicts, query={"notification_id": notification_id,
                                               "channel": channel, "limit": limit})


# -- users --------------------------------------------------------------------------------------


def create_user(user: NewUser) -> Call[User]:
    return _call(routes.CREATE_USER, _one(User), user.to_json())


def get_user(user_id: str) -> Call[User]:
    return _call(routes.GET_USER, _one(User), user_id=user_id)


def list_users(email: str | None = None, page: int = 1, limit: int = 20) -> Call[Page[User]]:
    return _call(routes.LIST_USERS, _page(User),
                 query={"email": email, "page": page, "limit": limit})


def update_user(user_id: str, changes: UserChanges) -> Call[User]:
    return _call(routes.UPDATE_USER, _one(User), changes.to_json(), user_id=user_id)


def delete_user(user_id: str) -> Call[None]:
    return _call(routes.DELETE_USER, _nothing, user_id=user_id)


def add_push_token(user_id: str, token: str) -> Call[User]:
    return _call(routes.ADD_PUSH_TOKEN, _one(User), PushToken(token).to_json(), user_id=user_id)


def remove_push_token(user_id: str, token: str) -> Call[User]:
    return _call(routes.REMOVE_PUSH_TOKEN, _one(User), user_id=user_id, token=token)


# -- templates ----------------------------------------------------------------------------------


def create_template(template: NewTemplate) -> Call[TemplateVersion]:
    return _call(routes.CREATE_TEMPLATE, _one(TemplateVersion), template.to_json())


def new_template_version(template: NewTemplate) -> Call[TemplateVersion]:
    return _call(routes.NEW_TEMPLATE_VERSION, _one(TemplateVersion), template.to_json(),
                 template_key=template.template_key)


def get_template(template_key: str, language: str | None = None,
                 version: int | None = None) -> Call[Template]:
    return _call(routes.GET_TEMPLATE, _one(Template),
                 query={"language": language, "version": version}, template_key=template_key)


def template_versions(template_key: str) -> Call[list[TemplateVersion]]:
    return _call(routes.TEMPLATE_VERSIONS, _many(TemplateVersion), template_key=template_key)


def list_templates(page: int = 1, limit: int = 20) -> Call[Page[dict[str, Any]]]:
    return _call(routes.LIST_TEMPLATES, _dict_page, query={"page": page, "limit": limit})


def retire_template(template_key: str) -> Call[None]:
    return _call(routes.RETIRE_TEMPLATE, _nothing, template_key=template_key)


def render_template(request: RenderRequest) -> Call[dict[str, Any]]:
    return _call(routes.RENDER_TEMPLATE, lambda data, meta: dict(data), request.to_json())


# -- suppressions -------------------------------------------------------------------------------


def list_suppressions(channel: str | None = None, reason: str | None = None,
                      address: str | None = None, page: int = 1,
                      limit: int = 50) -> Call[Page[Suppression]]:
    return _call(routes.LIST_SUPPRESSIONS, _page(Suppression),
                 query={"channel": channel, "reason": reason, "address": address,
                        "page": page, "limit": limit})


def add_suppression(entry: NewSuppression) -> Call[Suppression]:
    return _call(routes.ADD_SUPPRESSION, _one(Suppression), entry.to_json())


def get_suppression(address: str) -> Call[SuppressionStatus]:
    return _call(routes.GET_SUPPRESSION, _one(SuppressionStatus), address=address)


def remove_suppression(address: str, reason: str) -> Call[SuppressionRemoval]:
    return _call(routes.REMOVE_SUPPRESSION, _one(SuppressionRemoval), query={"reason": reason},
                 address=address)


def list_removals(address: str | None = None, page: int = 1,
                  limit: int = 50) -> Call[Page[SuppressionRemoval]]:
    return _call(routes.LIST_REMOVALS, _page(SuppressionRemoval),
                 query={"address": address, "page": page, "limit": limit})


# -- status callbacks ---------------------------------------------------------------------------


def register_callback(registration: CallbackRegistration) -> Call[CallbackEndpoint]:
    return _call(routes.REGISTER_CALLBACK, _one(CallbackEndpoint), registration.to_json())


def get_callback() -> Call[CallbackEndpoint]:
    return _call(routes.GET_CALLBACK, _one(CallbackEndpoint))


def remove_callback() -> Call[None]:
    return _call(routes.REMOVE_CALLBACK, _nothing)


def callback_log(notification_id: str) -> Call[list[dict[str, Any]]]:
    return _call(routes.CALLBACK_LOG, _dicts, query={"notification_id": notification_id})


# -- dead letters -------------------------------------------------------------------------------


def list_dead_letters(channel: str | None = None, error_code: str | None = None, page: int = 1,
                      limit: int = 50) -> Call[Page[dict[str, Any]]]:
    return _call(routes.LIST_DEAD_LETTERS, _dict_page,
                 query={"channel": channel, "error_code": error_code, "page": page,
                        "limit": limit})


def replay_dead_letter(dead_letter_id: int) -> Call[Replayed]:
    return _call(routes.REPLAY_DEAD_LETTER, _one(Replayed), dead_letter_id=dead_letter_id)


def replay_dead_letters(matching: ReplayFilter) -> Call[Replayed]:
    return _call(routes.REPLAY_DEAD_LETTERS, _one(Replayed), matching.to_json())


def discard_dead_letter(dead_letter_id: int) -> Call[None]:
    return _call(routes.DISCARD_DEAD_LETTER, _nothing, dead_letter_id=dead_letter_id)
