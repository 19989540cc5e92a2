"""Request bodies, validated with pydantic: a bad field is a 422 that names it."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_LANGUAGE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NotificationIn(_Strict):
    user_id: str = Field(pattern=_KEY)
    template_key: str = Field(pattern=_KEY)
    message_data: dict[str, Any] = Field(default_factory=dict)
    channels: list[Literal["email", "push"]] | None = Field(default=None, min_length=1)
    language: str | None = Field(default=None, pattern=_LANGUAGE)
    template_version: int | None = Field(default=None, ge=1)
    priority: Literal["low", "normal", "high"] = "normal"
    request_id: str | None = Field(default=None, max_length=128)

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("channels must not repeat")
        return value


class UserIn(_Strict):
    user_id: str | None = Field(default=None, pattern=_KEY)
    email_address: str | None = Field(default=None, max_length=254)
    phone_number: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{6,14}$")
    preferred_language: str = Field(default="en", pattern=_LANGUAGE)
    preferences: dict[str, Any] = Field(default_factory=dict)
    push_tokens: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("email_address")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("not an email address")
        return value.lower() if value else value

    @field_validator("push_tokens")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        if any(not t or len(t) > 4096 for t in value):
            raise ValueError("each push token must be 1 to 4096 characters")
        return list(dict.fromkeys(value))


class TemplateIn(_Strict):
    template_key: str = Field(pattern=_KEY)
    language: str = Field(default="en", pattern=_LANGUAGE)
    subject: str = Field(min_length=1, max_length=1000)
    body: str = Field(min_length=1, max_length=100_000)
    html_body: str | None = Field(default=None, max_length=200_000)
    push_title: str | None = Field(default=None, max_length=1000)
    push_body: str | None = Field(default=None, max_length=4000)
    description: str | None = Field(default=None, max_length=1000)


def field_errors(exc: Any) -> list[dict[str, str]]:
    """pydantic's errors as [{field, message}], without echoing the rejected input."""
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in exc.errors()
    ]
