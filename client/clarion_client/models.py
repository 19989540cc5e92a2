"""What Clarion answers, as small frozen records, each taken from the OpenAPI document.

Each model names where it comes from in `__schema__`: a component of `/openapi.json`
(`"User"`), or the (method, path) whose success `data` it is, when the document describes that
answer inline. The end-to-end tests read the running server's document and check that every
field declared here exists there, so a field the server drops or renames fails a test instead of
a caller. A field the server adds is not lost: every model keeps the whole object in `raw`.

Times stay the strings Clarion sends. A model whose answer the document does not describe yet
has `__schema__ = None`, and the tests check that it is still undescribed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Generic, Self, TypeVar

from clarion_client.errors import ClarionError, error_class

SchemaRef = str | tuple[str, str] | None
T = TypeVar("T")


@dataclass(frozen=True)
class Model:
    """A record read from Clarion's JSON: the declared fields, and `raw`, everything sent."""

    __schema__: ClassVar[SchemaRef] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        names = [f.name for f in fields(cls) if f.init and f.name != "raw"]
        values = {name: data[name] for name in names if name in data}
        return cls(**cls._nested(values), raw=dict(data))  # type: ignore[call-arg]

    @classmethod
    def _nested(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Turn nested JSON into nested models (overridden where there are any)."""
        return values

    @classmethod
    def declared_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "raw"]


def _raw() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class PageMeta(Model):
    __schema__ = "PageMeta"
    total: int
    limit: int
    page: int
    total_pages: int
    has_next: bool
    has_previous: bool
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and its `meta`. (A container, not a schema of its own.)"""

    items: list[T]
    meta: PageMeta

    @property
    def next_page(self) -> int | None:
        return self.meta.page + 1 if self.meta.has_next and self.items else None


@dataclass(frozen=True)
class NotificationAccepted(Model):
    """The 202 of a send: the notification is committed and will be delivered."""

    __schema__ = "NotificationAccepted"
    notification_id: str
    status: str  # queued, or scheduled (send_at, quiet hours)
    scheduled_for: str | None = None
    channels: Mapping[str, str] = field(default_factory=dict)  # queued, scheduled, skipped...
    language: str | None = None
    template_version: int | None = None
    request_id: str | None = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Notification(Model):
    """A notification; `channels` (each channel's status, recipient, provider, attempts) is
    filled by `get`, and empty in a list."""

    __schema__ = "Notification"
    notification_id: str
    status: str
    channels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    user_id: str | None = None
    template_key: str | None = None
    template_version: int | None = None
    language: str | None = None
    priority: str | None = None
    request_id: str | None = None
    scheduled_for: str | None = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Cancellation(Model):
    __schema__ = ("DELETE", "/v1/notifications/{notification_id}")
    notification_id: str
    status: str
    cancelled_channels: list[str]
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class BatchItem(Model):
    """One item of a batch's answer, in the order sent. `notification` when accepted; else
    `error` is the code a single send would have raised (`exception()` builds it)."""

    __schema__ = None  # POST /v1/notifications/batch: the document does not describe `data`
    index: int
    status: int
    success: bool
    error: str | None = None
    message: str = ""
    notification: NotificationAccepted | None = None
    raw: Mapping[str, Any] = _raw()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchItem:
        accepted = data.get("data") if data.get("success") else None
        return cls(int(data["index"]), int(data["status"]), bool(data["success"]),
                   data.get("error"), str(data.get("message") or ""),
                   NotificationAccepted.from_json(accepted) if accepted else None, dict(data))

    def exception(self) -> ClarionError | None:
        """The error a single send of this item would have raised, or None if accepted."""
        if self.success:
            return None
        return error_class(self.status)(self.message, status=self.status,
                                        code=self.error or "error", details=self.raw.get("data"))


@dataclass(frozen=True)
class BatchResult:
    """A batch's answer: one item per notification sent, in order, and the counts."""

    items: list[BatchItem]
    accepted: int
    refused: int


@dataclass(frozen=True)
class User(Model):
    __schema__ = "User"
    user_id: str
    email_address: str | None = None
    phone_number: str | None = None
    preferred_language: str = "en"
    preferences: Mapping[str, Any] = field(default_factory=dict)
    push_tokens: list[str] = field(default_factory=list)
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class TemplateVersion(Model):
    """One version of a template in one language (versions never change)."""

    __schema__ = "TemplateVersion"
    template_key: str
    language: str
    version: int
    subject: str
    body: str
    html_body: str | None = None
    push_title: str | None = None
    push_body: str | None = None
    sms_body: str | None = None
    description: str | None = None
    fallback_channels: list[str] | None = None
    variables: list[str] | None = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Template(Model):
    """A template key: each language's latest (or the asked) version."""

    __schema__ = ("GET", "/v1/templates/{template_key}")
    template_key: str
    languages: Mapping[str, TemplateVersion]
    raw: Mapping[str, Any] = _raw()

    @classmethod
    def _nested(cls, values: dict[str, Any]) -> dict[str, Any]:
        languages = values.get("languages") or {}
        return {**values, "languages": {k: TemplateVersion.from_json(v)
                                        for k, v in languages.items()}}


@dataclass(frozen=True)
class Suppression(Model):
    """An address Clarion no longer sends to, and what put it there."""

    __schema__ = "Suppression"
    channel: str
    address: str
    reason: str
    source: str
    created_by: str
    created_at: str
    notification_id: str | None = None
    note: str | None = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class SuppressionRemoval(Model):
    """A removal from the list: who, when, why, and the entry as it was."""

    __schema__ = "SuppressionRemoval"
    removal_id: int
    channel: str
    address: str
    reason: str
    removed_by: str
    why: str
    removed_at: str
    source: str | None = None
    suppressed_at: str | None = None
    suppressed_by: str | None = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class SuppressionStatus(Model):
    """One address: its entry (None when it is not on the list) and every removal of it."""

    __schema__ = ("GET", "/v1/suppressions/{address}")
    channel: str
    address: str
    suppressed: Suppression | None
    removals: list[SuppressionRemoval]
    raw: Mapping[str, Any] = _raw()

    @classmethod
    def _nested(cls, values: dict[str, Any]) -> dict[str, Any]:
        entry = values.get("suppressed")
        return {**values,
                "suppressed": Suppression.from_json(entry) if entry else None,
                "removals": [SuppressionRemoval.from_json(r)
                             for r in values.get("removals") or []]}


@dataclass(frozen=True)
class CallbackEndpoint(Model):
    """This key's status callback URL; `secret` only in the answer that generated it."""

    __schema__ = "CallbackEndpoint"
    principal: str
    url: str
    created_at: str
    updated_at: str
    secret: str | None = None
    callbacks: Mapping[str, int] = field(default_factory=dict)  # pending, delivered, dead
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Replayed(Model):
    __schema__ = "Replayed"
    replayed: list[int]
    count: int
    raw: Mapping[str, Any] = _raw()


# Every record read from the document (Page and BatchResult are the client's containers).
MODELS: tuple[type[Model], ...] = (
    PageMeta, NotificationAccepted, Notification, Cancellation, BatchItem, User,
    TemplateVersion, Template, Suppression, SuppressionRemoval, SuppressionStatus,
    CallbackEndpoint, Replayed,
)
