"""Every message Clarion's actors exchange, in one place.

Commands are imperative (`SendBatch`, `RenderBatch`), answers and events past tense (`Rendered`,
`UsersResolved`). All are frozen, slotted dataclasses that pickle: multiprocTCPBase pickles every
message between processes.

The hot path is batch-shaped: a Thespian hop costs about 1 ms whatever it carries
(notes/thespian.md), so one message carries a whole batch of items, even when the batch holds one.

    bridge ──SendBatch──▶ Gateway ──ResolveUsers──▶ Users ──UsersResolved──▶ Gateway
                                  ──RenderBatch───▶ Templates ──Rendered───▶ Gateway
           ◀──Replies────────────  (once the batch and its broker messages are committed)
                                  ──RelayOutbox───▶ Publisher ──▶ RabbitMQ

Management commands (`CreateUser`, `StatusRequest`, ...) travel the same way inside a `SendBatch`;
the Gateway hands each to the actor that owns it, which answers the bridge directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from clarion.persistence.records import Template, User

_M = TypeVar("_M")
_SHOWN = 60  # characters of a field's value a message's repr shows


def _short(value: Any) -> str:
    if isinstance(value, (tuple, list, dict, set, frozenset)):
        return f"<{len(value)} items>"
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _compact_repr(self: Any) -> str:
    # The field names are looked up once per class: `fields()` rebuilt them on every call, and
    # Thespian formats every message it sends (py-spy: 3 % of the HTTP worker under load).
    cls = type(self)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(self))
    shown = ", ".join(f"{name}={_short(getattr(self, name))}" for name in names)
    return f"{cls.__name__}({shown})"


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def message(cls: type[_M]) -> type[_M]:
    """A frozen, slotted dataclass with a short repr. Thespian formats every message it sends
    and receives for a debug line, whether or not debug logging is on (`identify()`): the full
    repr of a batch of rendered notifications cost a quarter of the Gateway's time."""
    cls.__repr__ = _compact_repr  # type: ignore[method-assign,assignment]
    return dataclass(frozen=True, slots=True, repr=False)(cls)


# --- life cycle (Supervisor ⇄ children) ------------------------------------------------------


@message
class Configure:
    """Sent by a parent to a child it just created: the child's name in the tree, and for a
    child placed on another host (through the convention), the node whose Supervisor placed it.

    It carries no settings: every actor reads its own from its host's environment (the launcher
    starts the admin with them, and every actor process inherits them), so the database URL, the
    internal secret and provider keys never travel in a message, between processes or hosts."""

    name: str
    placed_by: str | None = None


@message
class ChildReady:
    """A child finished `Configure`: it is connected and serving, on host `node`."""

    name: str
    pid: int
    node: str = ""


@message
class SystemReady:
    """The Supervisor's answer to its own `Configure` once every child is ready."""

    children: tuple[str, ...]
    # Thespian's admin starts its own session (setsid): every actor process is in this group,
    # not in the launcher's, so this is the group to reap when stopping.
    process_group: int = 0


@message
class Peers:
    """The Supervisor tells the Gateway where its collaborators are (again after a restart)."""

    users: Any
    templates: Any
    publisher: Any
    events: Any = None  # the ProviderEvents actor (None: an older Supervisor)


@message
class BreakerChanged:
    """A child tells the Supervisor one of its circuit breakers changed state."""

    name: str  # the child
    dependency: str
    state: str  # closed, half_open, open


@message
class Observations:
    """The Monitor's latest look at the outside: for the Supervisor's alerts."""

    dependencies: dict[str, bool]  # postgresql, redis, rabbitmq → answering
    queues: dict[str, int]  # queue → messages waiting
    delivery_attempts: tuple[int, int]  # (attempts, failures) in the last 5 minutes
    consumers: dict[str, int] = field(default_factory=dict)  # queue → consumers attached


@message
class LocateGateway:
    """Asked of the Supervisor by each HTTP bridge."""


@message
class GatewayLocated:
    address: Any  # None while the Gateway is (re)starting


# --- requests from the HTTP bridge ----------------------------------------------------------


@message
class NotificationRequest:
    """One `POST /v1/notifications`, validated by the HTTP layer."""

    OWNER: ClassVar[str] = "gateway"
    correlation_id: str
    user_id: str
    template_key: str
    message_data: dict[str, Any]
    channels: tuple[str, ...] | None = None  # None: every channel the user can receive
    language: str | None = None
    template_version: int | None = None
    priority: str = "normal"
    request_id: str | None = None
    idempotency_key: str | None = None
    category: str | None = None  # e.g. "marketing": users can opt out of a category
    received_at: float = 0.0  # when the HTTP layer received it (epoch seconds): the first hop
    principal: str | None = None  # who asked (the authenticated caller, e.g. "key:billing")
    send_at: float | None = None  # deliver no earlier than this (epoch seconds); None: now
    # Where the content goes if an email or SMS bounces or is suppressed (README "Fallback
    # channels"): the first of these the user can receive; () off.
    fallback_channels: tuple[str, ...] = ()


# Management commands name the actor that owns them (`OWNER`): the Gateway hands each one there,
# and that actor answers the bridge directly. A new command needs no change in the Gateway.


def owner_of(item: Any) -> str:
    """The actor that handles a request item: the one rule the bridge and the Gateway route by.

    The bridge sends "supervisor" items (status questions) to the Supervisor itself, so they are
    answered while the Gateway restarts, and everything else to the Gateway; the Gateway runs
    its own ("gateway": notifications) and hands the others to their owner."""
    return str(getattr(type(item), "OWNER", ""))


@message
class CreateUser:
    OWNER: ClassVar[str] = "users"
    correlation_id: str
    user: User


@message
class StatusRequest:
    """Ask the Supervisor for the actor tree (names, pids, restarts)."""

    OWNER: ClassVar[str] = "supervisor"
    correlation_id: str


@message
class SendBatch:
    """Items from the bridge (or from the Gateway to the actor that owns them).

    `reply_to` is the bridge endpoint that waits for the `Replies`.
    """

    batch_id: str
    items: tuple[Any, ...]
    reply_to: Any


@message
class Reply:
    """The answer to one item: an HTTP status, a stable error code, and the response data."""

    correlation_id: str
    status: int
    data: dict[str, Any] | None = None
    error_code: str | None = None
    message: str = ""
    replayed: bool = False  # the stored answer to an earlier request with the same idempotency key
    retry_after: float | None = None  # for 429/503: seconds before trying again is worthwhile


@message
class Replies:
    batch_id: str
    replies: tuple[Reply, ...]


# Users and templates management (the users and templates API), owned as `OWNER` says.


@message
class UpdateUser:
    """Change some of a user's fields (`PATCH`): `changes` holds only those, None clearing an
    optional one; its `preferences` are merged into the stored ones key by key."""

    OWNER: ClassVar[str] = "users"
    correlation_id: str
    user_id: str
    changes: dict[str, Any]


@message
class DeleteUser:
    """Delete a user's profile; the notifications sent to them keep their history."""

    OWNER: ClassVar[str] = "users"
    correlation_id: str
    user_id: str


@message
class AddPushToken:
    """Register a push token for a user (idempotent)."""

    OWNER: ClassVar[str] = "users"
    correlation_id: str
    user_id: str
    token: str


@message
class RemovePushToken:
    OWNER: ClassVar[str] = "users"
    correlation_id: str
    user_id: str
    token: str


@message
class CreateTemplateVersion:
    """Create version 1 of a key in a language, or (`new_version`) the next version, with the
    variables the template declares (None: it declares none): the Templates actor refuses a
    template that uses a variable outside the declared ones."""

    OWNER: ClassVar[str] = "templates"
    correlation_id: str
    template: Template
    variables: tuple[str, ...] | None = None
    new_version: bool = False


@message
class RetireTemplate:
    """Retire every version of a key: nothing renders it any more; sent notifications keep
    their rendered content."""

    OWNER: ClassVar[str] = "templates"
    correlation_id: str
    template_key: str


@message
class PreviewTemplate:
    """Render a template without sending anything: in `language`, its base (pt-BR → pt), or
    the default language, whichever exists first; the latest version unless `version`.

    With `draft` (the console's editor), render that unsaved template instead, in its own
    language, after the checks a new version gets (its syntax, and the `declared` variables
    when given); it is never stored, and its compiled form is never kept."""

    OWNER: ClassVar[str] = "templates"
    correlation_id: str
    template_key: str
    variables: dict[str, Any]
    language: str | None = None
    version: int | None = None
    draft: Template | None = None
    declared: tuple[str, ...] | None = None


# --- the Gateway's pipeline -----------------------------------------------------------------


@message
class ResolveUsers:
    batch_id: str
    user_ids: tuple[str, ...]


@message
class UsersResolved:
    batch_id: str
    users: dict[str, User]  # only the users that exist
    error: str | None = None  # the lookup itself failed (storage down)


@message
class RenderItem:
    correlation_id: str
    template_key: str
    languages: tuple[str, ...]  # in order of preference; the first that exists is used
    variables: dict[str, Any]
    version: int | None = None


@message
class RenderBatch:
    batch_id: str
    items: tuple[RenderItem, ...]


@message
class Rendering:
    """A template rendered for one item, or why it could not be."""

    correlation_id: str
    ok: bool
    template_version: int = 0
    language: str = ""
    subject: str = ""
    body: str = ""
    html_body: str | None = None
    push_title: str = ""
    push_body: str = ""
    sms_body: str = ""
    error_code: str | None = None
    error: str | None = None
    fallback_channels: tuple[str, ...] = ()  # the template version's


@message
class Rendered:
    batch_id: str
    results: tuple[Rendering, ...]
    error: str | None = None
    # The latest version of each language of the keys rendered (template key → language →
    # template): the Gateway keeps them and renders those keys itself next time.
    templates: dict[str, dict[str, Template]] = field(default_factory=dict)


@message
class RelayOutbox:
    """The Gateway tells the Publisher that these outbox rows were just committed: publish them
    now. Nothing answers; if the message is lost, the Publisher's sweep finds the rows.
    `due_at`: the batch also holds scheduled deliveries, the first due then (epoch seconds), so
    that the Publisher releases it on time rather than at its next tick."""

    message_ids: tuple[int, ...]
    due_at: float | None = None
    # Every message of the batch is bulk: the Publisher relays them in small chunks, between
    # which it serves the transactional batches arriving meanwhile (README "Lanes").
    bulk: bool = False


@message
class SweepOutbox:
    """The Publisher to itself: more outbox rows are waiting, relay the next chunk."""


@message
class RelayBulk:
    """The Publisher to itself: relay the next chunk of the bulk rows it was told about."""


# --- dead letters (owned by the Publisher: it holds the broker connection) -----------------


@message
class ReplayDeadLetters:
    """Put dead letters back on their work queue with a fresh attempt count.

    `ids` None: every dead letter matching `channel` and `error_code` (up to `limit`).
    """

    OWNER: ClassVar[str] = "publisher"
    correlation_id: str
    ids: tuple[int, ...] | None = None
    channel: str | None = None
    error_code: str | None = None
    limit: int = 1000


@message
class DiscardDeadLetter:
    OWNER: ClassVar[str] = "publisher"
    correlation_id: str
    dead_letter_id: int


@message
class CancelNotification:
    """`DELETE /v1/notifications/{id}`: cancel what of it is still scheduled. The Publisher owns
    it, as it owns releasing scheduled deliveries: one of the two wins each delivery's row.
    `created_by`: only a notification of this principal (a `send` key), None: any (admin)."""

    OWNER: ClassVar[str] = "publisher"
    correlation_id: str
    notification_id: str
    created_by: str | None = None


# --- what providers say happened (owned by the ProviderEvents actor) ------------------------


@message
class RecordProviderEvents:
    """Events a provider's signed webhook reported (`persistence.provider_events`)."""

    OWNER: ClassVar[str] = "events"
    correlation_id: str
    events: tuple[Any, ...]  # ProviderEvent


@message
class AddSuppression:
    """`POST /v1/suppressions`: an operator puts an address on the list (`Suppression`)."""

    OWNER: ClassVar[str] = "events"
    correlation_id: str
    entry: Any  # persistence.suppressions.Suppression


@message
class RemoveSuppression:
    """`DELETE /v1/suppressions/{address}`: take it off the list; the removal is kept, with who
    removed it and why."""

    OWNER: ClassVar[str] = "events"
    correlation_id: str
    channel: str
    address: str
    removed_by: str
    why: str
