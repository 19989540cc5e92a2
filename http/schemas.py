"""Request bodies, validated with pydantic: a bad field is a 422 that names it."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from clarion.persistence.users import MAX_PUSH_TOKENS

_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_LANGUAGE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_HH_MM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_VARIABLE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
SEND_AT_HORIZON = timedelta(days=30)  # how far ahead `send_at` may be
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    """Only an RFC 3339 date-time string: pydantic would also take a number (epoch seconds),
    which the API does not document."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with its offset, such as"
                         " 2026-12-24T09:00:00+01:00")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NotificationIn(_Strict):
    user_id: str = Field(pattern=_KEY)
    template_key: str = Field(pattern=_KEY)
    message_data: dict[str, Any] = Field(default_factory=dict)
    channels: list[Literal["email", "push", "sms"]] | None = Field(default=None, min_length=1)
    language: str | None = Field(default=None, pattern=_LANGUAGE)
    template_version: int | None = Field(default=None, ge=1)
    # high: goes out even in quiet hours; bulk: the bulk lane (README "Lanes"); "low" is the
    # old name of bulk. Left out: normal for a single POST, bulk for the batch endpoint.
    priority: Literal["high", "normal", "bulk", "low"] | None = None
    request_id: str | None = Field(default=None, max_length=128)
    # What kind of message this is ("marketing", "security", ...): users can opt out of one.
    category: str | None = Field(default=None, min_length=1, max_length=64)
    # When to deliver it (RFC 3339 with its offset, at most 30 days ahead): until then it is
    # `scheduled`, and `DELETE /v1/notifications/{id}` cancels it. A past time means now.
    send_at: Annotated[AwareDatetime, BeforeValidator(_rfc3339)] | None = None
    # Where the content goes if an email or SMS cannot be (its address is suppressed, or it
    # bounced or was not delivered): the first of these the user can receive and that is not
    # one of `channels`. Off unless given (README "Fallback channels").
    fallback_channels: list[Literal["email", "push", "sms"]] | None = Field(
        default=None, min_length=1, max_length=3)

    @field_validator("send_at")
    @classmethod
    def _within_horizon(cls, value: datetime | None) -> datetime | None:
        if value is not None and value - datetime.now(timezone.utc) > SEND_AT_HORIZON:
            raise ValueError("send_at must be at most 30 days ahead")
        return value

    @field_validator("channels", "fallback_channels")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("channels must not repeat")
        return value


# --- users -----------------------------------------------------------------------------------


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not an email address")
    return value.lower()


def _push_tokens(value: list[str]) -> list[str]:
    if any(not t or len(t) > 4096 for t in value):
        raise ValueError("each push token must be 1 to 4096 characters")
    return list(dict.fromkeys(value))


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone name (such as 'Europe/Lisbon')") from None
    return value


Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]
Phone = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$")]  # E.164
Language = Annotated[str, Field(pattern=_LANGUAGE)]  # BCP 47, such as "pt-BR"
PushTokens = Annotated[list[str], Field(max_length=MAX_PUSH_TOKENS), AfterValidator(_push_tokens)]
Category = Annotated[str, Field(min_length=1, max_length=64)]


class QuietHours(_Strict):
    """A daily window (local time in `timezone`) in which nothing should be pushed."""

    start: str = Field(pattern=_HH_MM)
    end: str = Field(pattern=_HH_MM)  # earlier than `start`: the window spans midnight
    timezone: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_time_zone)]

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class Preferences(_Strict):
    """A user's notification preferences: exactly this shape, stored as JSONB."""

    email_enabled: StrictBool = True
    push_enabled: StrictBool = True
    sms_enabled: StrictBool = True
    quiet_hours: QuietHours | None = None
    opt_outs: list[Category] = Field(default_factory=list, max_length=50)  # categories

    @field_validator("opt_outs")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class NotificationBatchIn(_Strict):
    """`POST /v1/notifications/batch`: many notifications in one request, each answered alone."""

    notifications: list[NotificationIn] = Field(min_length=1, max_length=1000)


class UserIn(_Strict):
    user_id: str | None = Field(default=None, pattern=_KEY)
    email_address: Email | None = None
    phone_number: Phone | None = None
    preferred_language: Language = "en"
    preferences: Preferences = Field(default_factory=Preferences)
    push_tokens: PushTokens = Field(default_factory=list)


class UserPatch(_Strict):
    """A partial update: a field left out stays as it is, `null` clears an optional one
    (email_address, phone_number, preferences.quiet_hours), and `preferences` is merged key by
    key (JSON Merge Patch). `push_tokens`, when given, replaces the whole list."""

    email_address: Email | None = None
    phone_number: Phone | None = None
    preferred_language: Language = "en"
    preferences: Preferences = Field(default_factory=Preferences)
    push_tokens: PushTokens = Field(default_factory=list)

    def changes(self) -> dict[str, Any]:
        """Only what the request set (nested too), as JSON."""
        return self.model_dump(mode="json", exclude_unset=True)


class PushTokenIn(_Strict):
    token: str = Field(min_length=1, max_length=4096)


# --- templates -------------------------------------------------------------------------------


class TemplateIn(_Strict):
    template_key: str = Field(pattern=_KEY)
    language: Language = "en"
    subject: str = Field(min_length=1, max_length=1000)
    body: str = Field(min_length=1, max_length=100_000)
    html_body: str | None = Field(default=None, max_length=200_000)
    push_title: str | None = Field(default=None, max_length=1000)
    push_body: str | None = Field(default=None, max_length=4000)
    # The SMS text; without it an SMS carries the push body, or else the text body. Twilio
    # takes up to 1,600 characters (ten segments or more, see the preview's `sms_segments`).
    sms_body: str | None = Field(default=None, max_length=1600)
    description: str | None = Field(default=None, max_length=1000)
    # Where this template's content goes if an email or SMS of it cannot be delivered (README
    # "Fallback channels"); a request's own `fallback_channels` wins.
    fallback_channels: list[Literal["email", "push", "sms"]] | None = Field(
        default=None, min_length=1, max_length=3)
    # The variables the template expects. Given, the template may use no other (checked when it
    # is created); left out, it is not checked.
    variables: list[Annotated[str, Field(pattern=_VARIABLE)]] | None = Field(
        default=None, max_length=100)

    @field_validator("variables", "fallback_channels")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))


class RenderIn(_Strict):
    """POST /v1/templates/render: a preview, nothing is sent."""

    template_key: str = Field(pattern=_KEY)
    message_data: dict[str, Any] = Field(default_factory=dict)
    language: Language | None = None
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


# --- query strings ---------------------------------------------------------------------------


class PageQuery(BaseModel):
    """`?page=&limit=`; other parameters are ignored."""

    page: int = Field(default=1, ge=1, le=1_000_000)
    limit: int = Field(default=20, ge=1, le=100)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit

    def meta(self, total: int) -> dict[str, Any]:
        """The pagination `meta` of a list response."""
        return page_meta(total, self.page, self.limit)


def page_meta(total: int, page: int, limit: int, min_pages: int = 0) -> dict[str, Any]:
    """The pagination `meta` of a list response. (`GET /v1/notifications` and `/v1/dlq` count
    an empty list as one page: `min_pages=1`; the users and templates lists as none.)"""
    pages = max(min_pages, -(-total // limit))
    return {"total": total, "limit": limit, "page": page, "total_pages": pages,
            "has_next": page < pages, "has_previous": page > 1}


class UserQuery(PageQuery):
    email: Annotated[str, Field(max_length=254)] | None = None

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.strip().lower() if value else None


class TemplateQuery(BaseModel):
    """`GET /v1/templates/{key}?language=&version=`."""

    language: Language | None = None
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


def field_errors(exc: Any) -> list[dict[str, str]]:
    """pydantic's errors as [{field, message}], without echoing the rejected input."""
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in exc.errors()
    ]
