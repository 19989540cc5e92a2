"""Every route the client calls, in one table, and `Call`: one use of a route.

The table is what keeps the client honest: the end-to-end tests check each (method, path) and
each query parameter against the running server's `/openapi.json`. A route is `repeatable` when
doing it twice leaves Clarion as doing it once: only those (and a send, made repeatable by its
idempotency key) are tried again after an answer that leaves the outcome unknown (a 504, a cut
connection).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    """A (method, path) of Clarion's API, in OpenAPI form, and the query parameters it takes."""

    method: str
    path: str
    query: tuple[str, ...] = ()
    idempotent: bool = False  # besides GET: repeating it changes nothing more

    @property
    def repeatable(self) -> bool:
        return self.method == "GET" or self.idempotent

    def url(self, params: Mapping[str, str | int]) -> str:
        """The path with each `{name}` filled in, percent-encoded whole (a push token or an
        address may hold `/`, `+` or `@`)."""
        path = self.path
        for name, value in params.items():
            path = path.replace("{" + name + "}", quote(str(value), safe=""))
        if "{" in path:
            raise ValueError(f"{self.method} {self.path}: missing path parameters")
        return path


# -- notifications
SEND = Route("POST", "/v1/notifications")  # repeatable through its idempotency key
SEND_BATCH = Route("POST", "/v1/notifications/batch")  # takes no idempotency key
LIST_NOTIFICATIONS = Route("GET", "/v1/notifications", ("page", "limit", "status", "user_id"))
GET_NOTIFICATION = Route("GET", "/v1/notifications/{notification_id}")
CANCEL_NOTIFICATION = Route("DELETE", "/v1/notifications/{notification_id}")
OUTBOX = Route("GET", "/v1/outbox", ("notification_id", "channel", "limit"))
# -- users
CREATE_USER = Route("POST", "/v1/users")
LIST_USERS = Route("GET", "/v1/users", ("page", "limit", "email"))
GET_USER = Route("GET", "/v1/users/{user_id}")
UPDATE_USER = Route("PATCH", "/v1/users/{user_id}")
DELETE_USER = Route("DELETE", "/v1/users/{user_id}")
# README: "add (idempotent; at most 20)": 201 added, 200 already there.
ADD_PUSH_TOKEN = Route("POST", "/v1/users/{user_id}/push-tokens", idempotent=True)
REMOVE_PUSH_TOKEN = Route("DELETE", "/v1/users/{user_id}/push-tokens/{token}")
# -- templates
CREATE_TEMPLATE = Route("POST", "/v1/templates")
LIST_TEMPLATES = Route("GET", "/v1/templates", ("page", "limit"))
RENDER_TEMPLATE = Route("POST", "/v1/templates/render", idempotent=True)  # a preview: a read
NEW_TEMPLATE_VERSION = Route("PUT", "/v1/templates/{template_key}")  # each PUT is a version
GET_TEMPLATE = Route("GET", "/v1/templates/{template_key}", ("language", "version"))
RETIRE_TEMPLATE = Route("DELETE", "/v1/templates/{template_key}")
TEMPLATE_VERSIONS = Route("GET", "/v1/templates/{template_key}/versions")
# -- suppressions
LIST_SUPPRESSIONS = Route("GET", "/v1/suppressions",
                          ("page", "limit", "channel", "reason", "address"))
# "201, or 200 if it was there": adding twice keeps the first entry.
ADD_SUPPRESSION = Route("POST", "/v1/suppressions", idempotent=True)
LIST_REMOVALS = Route("GET", "/v1/suppressions/removals", ("page", "limit", "address"))
GET_SUPPRESSION = Route("GET", "/v1/suppressions/{address}")
REMOVE_SUPPRESSION = Route("DELETE", "/v1/suppressions/{address}", ("reason",))
# -- status callbacks
# PUT replaces this key's endpoint: twice is once (a generated secret is the last one shown).
REGISTER_CALLBACK = Route("PUT", "/v1/callbacks", idempotent=True)
GET_CALLBACK = Route("GET", "/v1/callbacks")
REMOVE_CALLBACK = Route("DELETE", "/v1/callbacks")
CALLBACK_LOG = Route("GET", "/v1/callbacks/log", ("notification_id",))
# -- dead letters
LIST_DEAD_LETTERS = Route("GET", "/v1/dlq", ("page", "limit", "channel", "error_code"))
REPLAY_DEAD_LETTERS = Route("POST", "/v1/dlq/replay")
REPLAY_DEAD_LETTER = Route("POST", "/v1/dlq/{dead_letter_id}/replay")
DISCARD_DEAD_LETTER = Route("DELETE", "/v1/dlq/{dead_letter_id}")

ROUTES: tuple[Route, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Route))


@dataclass(frozen=True)
class Call(Generic[T]):
    """One use of a route: its path parameters, query, body, and how to read the answer's
    `data` (and `meta`) into what the caller gets. The same Call drives the sync and the async
    client, so the two cannot differ in what they send."""

    route: Route
    parse: Callable[[Any, Any], T]
    path_params: Mapping[str, str | int] = field(default_factory=dict)
    query: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None
    idempotency_key: str | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.query) - set(self.route.query)
        if unknown:  # the table above must list every parameter the client sends
            raise ValueError(f"{self.route.method} {self.route.path} takes no {unknown}")

    @property
    def repeatable(self) -> bool:
        """Whether sending it again is safe whatever became of the previous attempt."""
        return self.route.repeatable or self.idempotency_key is not None

    @property
    def path(self) -> str:
        return self.route.url(self.path_params)

    @property
    def params(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.query.items() if v is not None}
