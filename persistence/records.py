"""Plain records that storage returns and actors pass around (they pickle and turn into JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email_address: str | None = None
    phone_number: str | None = None
    preferred_language: str = "en"
    preferences: dict[str, Any] = field(default_factory=dict)
    push_tokens: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["push_tokens"] = list(self.push_tokens)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> User:
        return cls(**{**data, "push_tokens": tuple(data.get("push_tokens") or ())})


@dataclass(frozen=True, slots=True)
class Template:
    template_key: str
    language: str
    version: int
    subject: str
    body: str
    html_body: str | None = None
    push_title: str | None = None
    push_body: str | None = None
    description: str | None = None
    sms_body: str | None = None  # last: older positional constructions stay valid
    # Where the content goes if an email or SMS cannot be delivered (README "Fallback
    # channels"); None: nowhere, unless the request says.
    fallback_channels: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Template:
        return cls(**data)
