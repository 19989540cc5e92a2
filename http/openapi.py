"""The OpenAPI 3.1 description of Clarion's HTTP API, built from the app's own routes.

Request bodies and query strings are described by the same pydantic models that validate them
(`http/schemas.py`, `ReplayFilter`), so the document cannot drift from the validation. What a
model cannot say (a summary, the success status, the stable error codes a route answers) lives in
`OPERATIONS`, one row per (method, path); `build_openapi` refuses an app route missing from it
(tests build it strictly, so a new route cannot ship undescribed; serving it only logs the gap).
Who may call a route is derived by the rules `ApiKeyMiddleware` and the admin console apply.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.routing import BaseRoute, Mount, Route

from clarion.http.auth import PUBLIC, rule_for
from clarion.http.routes.admin import COOKIE
from clarion.http.routes.callbacks import CallbackIn
from clarion.http.routes.console_templates import DraftIn
from clarion.http.routes.dlq import ReplayFilter
from clarion.http.routes.suppressions import NewSuppression
from clarion.http.schemas import (
    NotificationBatchIn,
    NotificationIn,
    PageQuery,
    PushTokenIn,
    RenderIn,
    TemplateIn,
    TemplateQuery,
    UserIn,
    UserPatch,
    UserQuery,
)
from clarion.persistence.records import Template, User

log = logging.getLogger(__name__)

Schema = dict[str, Any]

REF = "#/components/schemas/{model}"

# Every stable error code: its one HTTP status and what it means.
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "the body is not valid JSON"),
    "unauthorized": (401, "missing or invalid credentials (one answer, whatever was wrong)"),
    "forbidden": (403, "the API key's scope (send) does not reach this route: it needs admin"),
    "not_found": (404, "no such route, or no such asset"),
    "notification_not_found": (404, "no notification with this id"),
    "invalid_signature": (403, "the request is not signed with the configured key"),
    "stale_signature": (403, "signed more than 10 minutes ago: refused as a replay"),
    "webhook_not_configured": (403, "the provider's verification key is not configured"),
    "not_cancellable": (409, "nothing of the notification is still scheduled: it has gone out"),
    "user_not_found": (404, "no user with this id"),
    "template_not_found": (404, "no live template with this key (or this version)"),
    "push_token_not_found": (404, "the user has no such push token"),
    "dead_letter_not_found": (404, "no dead letter with this id waiting for an operator"),
    "suppression_not_found": (404, "the address is not on the suppression list"),
    "callback_not_registered": (404, "this API key has no callback URL"),
    "callback_url_refused": (422, "not http(s), or the host is on a loopback, link-local or"
                                  " private address (CLARION_CALLBACKS_ALLOW_PRIVATE)"),
    "reason_required": (422, "removing a suppression needs a reason (kept in the audit)"),
    "method_not_allowed": (405, "the route does not take this method"),
    "user_exists": (409, "a user with this user_id or email_address already exists"),
    "template_exists": (409, "the key already exists in this language: PUT makes a new version"),
    "idempotency_in_progress": (409, "a request with this idempotency key is still in flight"),
    "payload_too_large": (413, "the body exceeds the configured limit (CLARION_MAX_BODY_BYTES)"),
    "unsupported_media_type": (415, "send the body as application/json"),
    "validation_error": (422, "invalid fields; `data.fields` lists each as {field, message}"),
    "invalid_idempotency_key": (422, "the idempotency key is not 1-255 printable ASCII"),
    "idempotency_key_reused": (422, "this idempotency key was used for a different request"),
    "no_deliverable_channel": (422, "the user can receive none of the requested channels"),
    "template_language_unavailable": (422, "the template exists, in none of the languages tried"),
    "template_variable_missing": (422, "message_data lacks a variable the template uses"),
    "template_render_error": (422, "the template failed to render"),
    "template_output_too_large": (422, "the rendered output exceeds the limit"),
    "template_unsafe": (422, "the template tried something the sandbox forbids"),
    "template_syntax_error": (422, "the template does not parse; `data.field` names the field"),
    "template_variable_undeclared": (422, "the template uses variables it does not declare"),
    "push_token_limit_reached": (422, "the user already has the most push tokens allowed"),
    "rate_limited": (429, ("over this API key's rate limit (a batch of N costs N), or too many"
                           " unknown keys from this address; retry after `Retry-After`"
                           " seconds")),
    "internal_error": (500, "the request could not be completed (details are in the log)"),
    "auth_unavailable": (503, "credentials cannot be checked right now; retry"),
    "storage_unavailable": (503, "PostgreSQL is unavailable; nothing was kept, retry"),
    "actors_unavailable": (503, "Clarion's actors are unavailable; retry"),
    "actor_restarted": (503, "an internal actor restarted during the request; retry"),
    "not_ready": (503, "Clarion is starting; retry"),
    "overloaded": (503, "too many requests are waiting for the actors in this worker; retry"),
    "shutting_down": (503, "Clarion is shutting down; retry elsewhere"),
    "unhealthy": (503, "a dependency or an actor is down; `data.checks` says which"),
    "cluster_view_unavailable": (503, "the hosts' heartbeats cannot be read (Redis); retry"),
    "stats_timeout": (503, ("counting the window's traffic took too long; try the shorter"
                            " window")),
    "timeout": (504, "no answer in time; the outcome is unknown: retry with the same key"),
}

AUTH = ("unauthorized", "forbidden", "rate_limited", "auth_unavailable")  # on every secured route
BODY = ("invalid_json", "payload_too_large", "unsupported_media_type", "validation_error")
ACTORS = ("actors_unavailable", "not_ready", "overloaded", "shutting_down", "timeout")  # bridge
WRITE = (*ACTORS, "storage_unavailable")
RENDER = ("template_not_found", "template_language_unavailable", "template_variable_missing",
          "template_render_error", "template_output_too_large", "template_unsafe")


@dataclass(frozen=True)
class Param:
    """A query parameter a handler parses by hand (no model describes it), or a header."""

    name: str
    schema: Schema
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """What the OpenAPI document says about one (method, path) beyond its models."""

    summary: str
    tag: str
    status: int = 200
    body: type[BaseModel] | None = None
    form: Schema | None = None  # an application/x-www-form-urlencoded body (a browser's form)
    query: type[BaseModel] | tuple[Param, ...] = ()
    path: Mapping[str, Schema] = field(default_factory=dict)  # default: any string
    errors: tuple[str, ...] = ()
    data: Schema | None = None  # the success envelope's `data`; None: not described
    meta: Schema | None = None
    media_type: str | None = "application/json"  # of the success answer (None: no body)
    enveloped: bool = True  # a JSON success answer is the envelope, `data` inside it
    also: tuple[int, ...] = ()  # other success statuses
    headers: tuple[Param, ...] = ()
    example: Schema | None = None  # of the request body
    description: str = ""


def _field(model: type[BaseModel], name: str) -> Schema:
    """One field's schema in `model`, without its `null` branch (a path or query string is
    never null) and without pydantic's title."""
    schema = dict(model.model_json_schema(ref_template=REF)["properties"][name])
    branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    schema.pop("title", None)
    if schema.get("default") is None:
        schema.pop("default", None)
    return schema


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _object(required: Iterable[str] = (), **properties: Schema) -> Schema:
    return {"type": "object", "required": list(required), "properties": properties}


STRING: Schema = {"type": "string"}
USER_ID = {**_field(UserIn, "user_id"), "description": "a user id"}
TEMPLATE_KEY = {**_field(TemplateIn, "template_key"), "description": "a template key"}
DEAD_LETTER_ID = {"type": "integer", "format": "int64", "minimum": 0,
                  "maximum": 2**63 - 1, "description": "a dead letter id"}
CHANNEL = {"type": "string", "enum": ["email", "push", "sms"]}
SUPPRESSION_REASON = {"type": "string", "enum": ["hard_bounce", "invalid_address",
                                                 "spam_report", "unsubscribed", "manual"]}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
# A suppressed address: an email (with an "@", so never the word "removals") or an E.164 number.
ADDRESS: Schema = {"type": "string", "pattern": r"^(\+[1-9][0-9]{6,14}|[^@\s]+@[^@\s]+)$",
                   "description": "an email address or an E.164 number"}
TIME: Schema = {"type": "string", "format": "date-time"}
# What a provider webhook answers: how many events were new, moved a delivery, were about nothing
# Clarion sent, suppressed an address, or were not for Clarion at all.
EVENTS_RECORDED = _object(["recorded", "moved", "unknown"], recorded={"type": "integer"},
                          moved={"type": "integer"}, unknown={"type": "integer"},
                          suppressed={"type": "integer"}, ignored={"type": "integer"})
PAGING = (Param("page", {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}),
          Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}))

OPERATIONS: dict[tuple[str, str], Operation] = {
    # -- health and system ----------------------------------------------------------------------
    ("GET", "/health"): Operation(
        "Liveness: 200 while this process answers", "health",
        data=_object(["status"], status={"const": "ok"})),
    ("GET", "/health/ready"): Operation(
        "Readiness: PostgreSQL, Redis, RabbitMQ and the actors, each up or down", "health",
        errors=("unhealthy",), data=_ref("Readiness"),
        description="Public, so it names no host, address, port or pid; the services are"
                    " probed at most once a second, and answers in between repeat the last"
                    " result."),
    ("GET", "/v1/alerts"): Operation(
        "The Supervisor's alerts: active ones and recent ones", "system", errors=ACTORS,
        data=_object(["active", "recent"], active=_array({"type": "object"}),
                     recent=_array({"type": "object"}))),
    ("GET", "/v1/system/actors"): Operation(
        "The actor tree: each actor's pid, state, restarts and last exit", "system",
        errors=ACTORS, data=_ref("ActorTree")),
    ("GET", "/v1/system/providers"): Operation(
        "Each channel's providers in failover order: breaker state and share of the last"
        " hour's attempts", "system", errors=("storage_unavailable",),
        data=_object(["window_seconds", "channels"], window_seconds={"type": "integer"},
                     channels={"type": "object", "additionalProperties": _array(_object(
                         ["provider", "breaker", "attempts", "sent", "failed", "share"],
                         provider=STRING, order={"type": ["integer", "null"]},
                         breaker={"enum": ["closed", "half_open", "open", "unknown"]},
                         attempts={"type": "integer"}, sent={"type": "integer"},
                         failed={"type": "integer"}, share={"type": "number"}))}),
        description="`order` is null for a provider no longer configured that still has"
                    " attempts in the window. The breaker is the worst state among this host's"
                    " delivery actors of the channel."),
    ("GET", "/v1/system/cluster"): Operation(
        "Every host of the cluster: role, channels, providers, heartbeat age and its actors",
        "system", errors=("cluster_view_unavailable",), data=_ref("Cluster"),
        description="A host is `down` when its heartbeat is older than"
                    " CLARION_HOST_DOWN_AFTER seconds, `stopped` after an orderly stop."),
    ("GET", "/metrics"): Operation(
        "Prometheus metrics of every worker and actor process", "system",
        media_type="text/plain"),
    # -- notifications --------------------------------------------------------------------------
    ("POST", "/v1/notifications/batch"): Operation(
        "Send up to 1,000 notifications in one request; each item gets its own result",
        "notifications", status=200, body=NotificationBatchIn,
        description="Items are answered in order with {index, status, success, data, error,"
                    " message}; an item refused does not refuse the others. `meta` counts"
                    " accepted and refused items.",
    ),
    ("POST", "/v1/notifications"): Operation(
        "Send a notification: 202 once it is committed with its broker messages (the outbox)",
        "notifications",
        status=202, body=NotificationIn,
        errors=("invalid_idempotency_key", "user_not_found", *RENDER, "no_deliverable_channel",
                "idempotency_in_progress", "idempotency_key_reused", "storage_unavailable",
                "actor_restarted", "internal_error", *ACTORS),
        data=_ref("NotificationAccepted"),
        headers=(
            Param("X-Idempotency-Key", {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                  "makes a retry safe: a repeat gets the first answer (24 hours, per API key)"),
            Param("Idempotency-Key", {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                  "the standard name of X-Idempotency-Key"),
        ),
        example={"user_id": "u-1001", "template_key": "welcome",
                 "message_data": {"name": "Ada"}, "channels": ["email"], "language": "en",
                 "priority": "normal"},
        description="Errors: 503 and 504 carry `Retry-After`; after a 504 the outcome is"
                    " unknown, retry with the same idempotency key."),
    ("GET", "/v1/notifications"): Operation(
        "Notifications, newest first, optionally of one user or in one status",
        "notifications",
        query=(Param("page", {"type": "integer", "minimum": 1, "default": 1}),
               Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
               Param("status", {"type": "string", "enum": ["queued", "scheduled", "cancelled",
                                                           "sent", "delivered", "partially_sent",
                                                           "failed"]}),
               Param("user_id", {"type": "string", "minLength": 1, "maxLength": 128})),
        errors=("validation_error",), data=_array({"type": "object"}), meta=_ref("PageMeta")),
    ("GET", "/v1/notifications/{notification_id}"): Operation(
        "A notification: its status and, per channel, status, recipient, provider and every"
        " attempt", "notifications",
        path={"notification_id": {"type": "string", "format": "uuid"}},
        errors=("notification_not_found",), data=_ref("Notification")),
    ("POST", "/v1/providers/twilio/status"): Operation(
        "Twilio's signed status callback: what became of an SMS after Twilio accepted it",
        "notifications",
        query=(Param("notification_id", {"type": "string", "format": "uuid"},
                     "put there by Clarion when it sent the SMS"),),
        form=_object(["MessageSid", "MessageStatus", "AccountSid"], MessageSid=STRING,
                     MessageStatus=STRING, AccountSid=STRING, ErrorCode=STRING, To=STRING),
        errors=("invalid_signature", "webhook_not_configured", "storage_unavailable",
                *ACTORS),
        data=EVENTS_RECORDED,
        description="No API key: the request must carry `X-Twilio-Signature` made with the"
                    " auth token of the account that sent the SMS over the URL of"
                    " CLARION_TWILIO_STATUS_CALLBACK_URL (with this query) and the form."
                    " `delivered` moves the SMS channel to delivered; `undelivered` and"
                    " `failed` to undelivered, with Twilio's `ErrorCode`; error 21610 (STOP)"
                    " also suppresses the number. Other statuses are acknowledged and"
                    " ignored."),
    ("POST", "/v1/providers/sendgrid/events"): Operation(
        "SendGrid's signed Event Webhook: what happened to each email after SendGrid accepted it",
        "notifications",
        form=None, errors=("invalid_signature", "stale_signature", "webhook_not_configured",
                           "invalid_json", "validation_error", "storage_unavailable", *ACTORS),
        data=EVENTS_RECORDED,
        description="No API key: the request must carry SendGrid's ECDSA signature"
                    " (`X-Twilio-Email-Event-Webhook-Signature` and `-Timestamp`) made with the"
                    " key of CLARION_SENDGRID_WEBHOOK_PUBLIC_KEY, at most 10 minutes old. The body"
                    " is SendGrid's JSON array of events; `delivered`, `deferred`, `bounce`,"
                    " `dropped` and `spamreport` about a Clarion email (its `notification_id`"
                    " custom argument) are recorded once each, and move its email channel to"
                    " delivered, bounced, undelivered or complained."),
    ("DELETE", "/v1/notifications/{notification_id}"): Operation(
        "Cancel a scheduled notification (`send_at`, quiet hours) before it goes out",
        "notifications",
        path={"notification_id": {"type": "string", "format": "uuid"}},
        errors=("notification_not_found", "not_cancellable", *WRITE),
        data=_object(["notification_id", "status", "cancelled_channels"],
                     notification_id={"type": "string", "format": "uuid"},
                     status={"type": "string"}, cancelled_channels=_array(STRING)),
        description="Every channel still `scheduled` becomes `cancelled`, and so does the"
                    " notification when no other channel went out. A `send` key cancels only"
                    " its own notifications."),
    # -- users ----------------------------------------------------------------------------------
    ("POST", "/v1/users"): Operation(
        "Create a user (user_id given or generated)", "users", status=201, body=UserIn,
        errors=("user_exists", *WRITE), data=_ref("User"),
        example={"user_id": "u-1001", "email_address": "ada@example.com",
                 "preferred_language": "en", "push_tokens": ["device-token-1"]}),
    ("GET", "/v1/users"): Operation(
        "A page of users in creation order, optionally by email address", "users",
        query=UserQuery, data=_array(_ref("User")), meta=_ref("PageMeta")),
    ("GET", "/v1/users/{user_id}"): Operation(
        "A user", "users", path={"user_id": USER_ID}, errors=("user_not_found",),
        data=_ref("User")),
    ("PATCH", "/v1/users/{user_id}"): Operation(
        "Update a user: fields left out stay, null clears, preferences merge key by key",
        "users", path={"user_id": USER_ID}, body=UserPatch,
        errors=("user_not_found", "user_exists", *WRITE), data=_ref("User")),
    ("DELETE", "/v1/users/{user_id}"): Operation(
        "Delete a user (notifications sent to them keep their history)", "users",
        path={"user_id": USER_ID}, errors=("user_not_found", *WRITE),
        data=_object(["user_id", "deleted"], user_id=STRING, deleted={"const": True})),
    ("POST", "/v1/users/{user_id}/push-tokens"): Operation(
        "Add a push token: 201 added, 200 already there", "users", status=201, also=(200,),
        path={"user_id": USER_ID}, body=PushTokenIn,
        errors=("user_not_found", "push_token_limit_reached", *WRITE), data=_ref("User")),
    ("DELETE", "/v1/users/{user_id}/push-tokens/{token}"): Operation(
        "Remove a push token", "users",
        path={"user_id": USER_ID, "token": _field(PushTokenIn, "token")},
        errors=("user_not_found", "push_token_not_found", *WRITE), data=_ref("User")),
    # -- templates ------------------------------------------------------------------------------
    ("POST", "/v1/templates"): Operation(
        "Create version 1 of a template in a language", "templates", status=201,
        body=TemplateIn, errors=("template_syntax_error", "template_variable_undeclared",
                                 "template_exists", *WRITE),
        data=_ref("TemplateVersion"),
        example={"template_key": "welcome", "language": "en",
                 "subject": "Welcome, {{ name }}!", "body": "Hello {{ name }}.",
                 "variables": ["name"]}),
    ("GET", "/v1/templates"): Operation(
        "A page of template keys: their languages and latest versions", "templates",
        query=PageQuery, data=_array({"type": "object"}), meta=_ref("PageMeta")),
    ("POST", "/v1/templates/render"): Operation(
        "Preview: render a template as a notification would, send nothing", "templates",
        body=RenderIn, errors=(*RENDER, *WRITE), data={"type": "object"}),
    ("PUT", "/v1/templates/{template_key}"): Operation(
        "Create the next version of a template in a language", "templates", status=201,
        path={"template_key": TEMPLATE_KEY}, body=TemplateIn,
        errors=("template_syntax_error", "template_variable_undeclared", "template_not_found",
                "template_exists", *WRITE),
        data=_ref("TemplateVersion"),
        description="`template_key` in the body must match the URL (else 422"
                    " validation_error)."),
    ("GET", "/v1/templates/{template_key}"): Operation(
        "Each language's latest (or the given) version of a template", "templates",
        path={"template_key": TEMPLATE_KEY}, query=TemplateQuery,
        errors=("template_not_found",),
        data=_object(["template_key", "languages"], template_key=STRING,
                     languages={"type": "object",
                                "additionalProperties": _ref("TemplateVersion")})),
    ("DELETE", "/v1/templates/{template_key}"): Operation(
        "Retire a template key (sent notifications keep their content)", "templates",
        path={"template_key": TEMPLATE_KEY}, errors=("template_not_found", *WRITE),
        data=_object(["template_key", "retired"], template_key=STRING,
                     retired={"const": True}, versions_retired={"type": "integer"})),
    ("GET", "/v1/templates/{template_key}/versions"): Operation(
        "Every version x language of a template, newest first", "templates",
        path={"template_key": TEMPLATE_KEY}, errors=("template_not_found",),
        data=_array(_ref("TemplateVersion"))),
    # -- outbox and dead letters ----------------------------------------------------------------
    ("GET", "/v1/outbox"): Operation(
        "What the local outbox received (no provider configured), newest first", "outbox",
        query=(Param("notification_id", {"type": "string", "format": "uuid"}),
               Param("channel", CHANNEL),
               Param("limit", {"type": "integer", "minimum": 1, "maximum": 500,
                               "default": 50})),
        errors=("validation_error",), data=_array({"type": "object"})),
    ("GET", "/v1/dlq"): Operation(
        "Dead letters waiting for an operator, with their reason and attempts", "dead letters",
        query=(*PAGING,
               Param("channel", {"type": "string",
                                 "enum": ["email", "push", "sms", "callback"]}),
               Param("error_code", STRING, "only dead letters with this error code")),
        errors=("validation_error",), data=_array({"type": "object"}), meta=_ref("PageMeta")),
    ("POST", "/v1/dlq/replay"): Operation(
        "Replay every dead letter matching the filter (1,000 at most per call)",
        "dead letters", body=ReplayFilter,
        errors=("dead_letter_not_found", *WRITE),
        data=_ref("Replayed"), example={"channel": "email", "limit": 100}),
    ("POST", "/v1/dlq/{dead_letter_id}/replay"): Operation(
        "Put one dead letter back on its queue with a fresh attempt count", "dead letters",
        path={"dead_letter_id": DEAD_LETTER_ID},
        errors=("dead_letter_not_found", *WRITE), data=_ref("Replayed")),
    ("DELETE", "/v1/dlq/{dead_letter_id}"): Operation(
        "Discard one dead letter", "dead letters", path={"dead_letter_id": DEAD_LETTER_ID},
        errors=("dead_letter_not_found", *WRITE),
        data=_object(["discarded"], discarded={"type": "integer"})),
    # -- status callbacks -----------------------------------------------------------------------
    ("PUT", "/v1/callbacks"): Operation(
        "Register (or replace) where this API key's notifications' status changes are POSTed",
        "callbacks", body=CallbackIn,
        errors=("callback_url_refused", "storage_unavailable"), data=_ref("CallbackEndpoint"),
        example={"url": "https://example.com/hooks/clarion",
                 "secret": "a-long-random-secret-of-yours"},
        description="Each change is POSTed as JSON (`id`, `type`: `channel.status_changed` or"
                    " `notification.status_changed`, `sequence`, `notification_id`, `channel`,"
                    " `status`, `previous_status`, `error_code`, `occurred_at`) with"
                    " `Clarion-Signature: t=<unix>,v1=<hex HMAC-SHA256 of \"t.body\">`, in"
                    " order per notification, retried with backoff for 24 h, then"
                    " dead-lettered (`GET /v1/dlq?channel=callback`). Without `secret` one is"
                    " made and shown in this answer only."),
    ("GET", "/v1/callbacks"): Operation(
        "This API key's callback endpoint (never its secret) and its callbacks by state",
        "callbacks", errors=("callback_not_registered", "storage_unavailable"),
        data=_ref("CallbackEndpoint")),
    ("DELETE", "/v1/callbacks"): Operation(
        "Stop callbacks for this API key; those not yet delivered are cancelled", "callbacks",
        errors=("callback_not_registered", "storage_unavailable"),
        data=_object(["removed"], removed={"type": "boolean"})),
    ("GET", "/v1/callbacks/log"): Operation(
        "One notification's callbacks, in order: state, attempts, last error", "callbacks",
        query=(Param("notification_id", {"type": "string", "format": "uuid"}),),
        errors=("validation_error", "storage_unavailable"), data=_array({"type": "object"})),
    # -- the suppression list -------------------------------------------------------------------
    ("GET", "/v1/suppressions"): Operation(
        "Addresses Clarion no longer sends to, newest first, with the reason and what put each"
        " there", "suppressions",
        query=(*PAGING,
               Param("channel", {"type": "string", "enum": ["email", "sms"]}),
               Param("reason", SUPPRESSION_REASON),
               Param("address", STRING, "one address: an email or an E.164 number")),
        errors=("validation_error", "storage_unavailable"),
        data=_array(_ref("Suppression")), meta=_ref("PageMeta")),
    ("POST", "/v1/suppressions"): Operation(
        "Put an address on the suppression list by hand", "suppressions", status=201,
        also=(200,), body=NewSuppression, errors=WRITE, data=_ref("Suppression"),
        example={"address": "someone@example.com", "reason": "manual",
                 "note": "asked by phone"},
        description="201 when the address is new on the list; 200 when it was already there"
                    " (its first entry is kept)."),
    ("GET", "/v1/suppressions/removals"): Operation(
        "Every removal from the suppression list, newest first: who removed which address,"
        " when and why", "suppressions",
        query=(*PAGING, Param("address", STRING, "one address's removals")),
        errors=("validation_error", "storage_unavailable"),
        data=_array(_ref("SuppressionRemoval")), meta=_ref("PageMeta")),
    ("GET", "/v1/suppressions/{address}"): Operation(
        "One address: its entry on the list (null if it is not on it) and its removals",
        "suppressions", path={"address": ADDRESS},
        errors=("suppression_not_found", "storage_unavailable"),
        data=_object(["channel", "address", "suppressed", "removals"], channel=STRING,
                     address=STRING,
                     suppressed={"oneOf": [_ref("Suppression"), {"type": "null"}]},
                     removals=_array(_ref("SuppressionRemoval")))),
    ("DELETE", "/v1/suppressions/{address}"): Operation(
        "Take an address off the suppression list; the reason is required and kept",
        "suppressions", path={"address": ADDRESS},
        query=(Param("reason", STRING, "why it may be sent to again (or in a JSON body)"),),
        errors=("suppression_not_found", "reason_required", *BODY, *WRITE),
        data=_ref("SuppressionRemoval")),
    # -- the admin console ----------------------------------------------------------------------
    ("GET", "/admin"): Operation(
        "The admin console: a sign-in form, or the console once signed in", "admin console",
        media_type="text/html", query=(Param("notice", STRING, "a notice to show"),)),
    ("POST", "/admin/login"): Operation(
        "Sign in to the console with an API key or the internal secret: a session cookie",
        "admin console", status=303, media_type=None,
        form=_object(["credential"], credential={"type": "string", "maxLength": 4096})),
    ("POST", "/admin/logout"): Operation(
        "Sign out of the console", "admin console", status=303, media_type=None),
    ("GET", "/admin/api/host"): Operation(
        "Where this server runs, and its clock", "admin console",
        data=_object(["hostname", "pid", "now"], hostname=STRING, pid={"type": "integer"},
                     now={"type": "number"})),
    ("GET", "/admin/api/stats"): Operation(
        "The console's live charts: traffic, latency, failures and queue depths over a window",
        "admin console",
        query=(Param("window", {"type": "string", "enum": ["15m", "24h"], "default": "15m"},
                     "the last 15 minutes (10 s buckets) or 24 hours (5 min buckets)"),),
        errors=("stats_timeout", "storage_unavailable"),
        data=_object(
            ["window", "step", "times", "accepted", "delivered", "latency", "failures",
             "queues"],
            window={"enum": ["15m", "24h"]}, step={"type": "integer"},
            since={"type": "number"}, until={"type": "number"},
            times=_array({"type": "integer", "description": "bucket starts, epoch seconds"}),
            channels=_array(STRING),
            accepted={"type": "object", "description": "channel → channels accepted per second",
                      "additionalProperties": _array({"type": "number"})},
            delivered={"type": "object", "description": "channel → provider acceptances per"
                                                        " second",
                       "additionalProperties": _array({"type": "number"})},
            latency={"type": "object", "description": "p50 and p99, seconds from the 202 to"
                                                      " the provider's acceptance",
                     "additionalProperties": _array({"type": ["number", "null"]})},
            failures={"type": "object", "description": "error code → failed attempts per"
                                                       " bucket",
                      "additionalProperties": _array({"type": "integer"})},
            queues={"type": "object", "description": "queue → deepest reading per bucket"
                                                     " (null: none taken)",
                    "additionalProperties": _array({"type": ["integer", "null"]})},
            queue_readings={"type": "integer"},
            totals={"type": "object", "additionalProperties": {"type": "integer"}})),
    ("POST", "/admin/api/templates/preview"): Operation(
        "Render an unsaved template (the console's editor): checked as a new version would be"
        " and rendered in the same sandbox; nothing is stored", "admin console", body=DraftIn,
        errors=("template_syntax_error", "template_variable_undeclared", *RENDER, *ACTORS),
        data=_object(["template_key", "language", "subject", "body"], template_key=STRING,
                     language=STRING, version={"type": "null"}, subject=STRING, body=STRING,
                     html_body=NULLABLE_STRING, push_title=STRING, push_body=STRING,
                     sms_body=STRING, sms_segments={"type": "object"})),
    ("GET", "/admin/assets/{name}"): Operation(
        "The console's script and styles", "admin console", media_type="*/*",
        path={"name": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"}},
        errors=("not_found",)),
    # -- this description -----------------------------------------------------------------------
    ("GET", "/openapi.json"): Operation(
        "This OpenAPI document", "docs", enveloped=False, data={"type": "object"}),
    ("GET", "/docs"): Operation(
        "A page that renders this document (Swagger UI, served from this app)", "docs",
        media_type="text/html"),
    ("GET", "/docs/assets/{path}"): Operation(
        "Swagger UI's scripts and styles", "docs", media_type="*/*",
        errors=("not_found",)),
}

# Schemas that are not a request model: the envelope and the shapes of some answers.
_ENVELOPE: Schema = {
    "type": "object",
    "description": "Every JSON answer. An error has `success` false, a stable `error` code and"
                   " a human `message`.",
    "required": ["success", "data", "error", "message", "meta"],
    "properties": {
        "success": {"type": "boolean"},
        "data": {"description": "the answer; on an error, details (or null)"},
        "error": {"type": ["string", "null"], "description": "a stable code; null on success"},
        "message": {"type": "string"},
        "meta": {"type": ["object", "null"], "description": "pagination, counts"},
    },
}
_SHAPES: dict[str, Schema] = {
    "Envelope": _ENVELOPE,
    "ErrorEnvelope": {
        "allOf": [_ref("Envelope")],
        "properties": {"success": {"const": False},
                       "error": {"type": "string", "minLength": 1, "enum": sorted(ERRORS)}},
    },
    "FieldErrors": {
        "description": "`data` of a 422 validation_error: one entry per bad field",
        **_object(["fields"], fields=_array(_object(["field", "message"], field=STRING,
                                                     message=STRING))),
    },
    "PageMeta": _object(["total", "limit", "page", "total_pages", "has_next", "has_previous"],
                        total={"type": "integer"}, limit={"type": "integer"},
                        page={"type": "integer"}, total_pages={"type": "integer"},
                        has_next={"type": "boolean"}, has_previous={"type": "boolean"}),
    "NotificationAccepted": _object(
        ["notification_id", "status"], notification_id={"type": "string", "format": "uuid"},
        status={"type": "string",
                "description": "queued, or scheduled (send_at or quiet hours)"},
        scheduled_for={"type": ["string", "null"], "format": "date-time"},
        channels={"type": "object", "additionalProperties": STRING,
                  "description": "each channel's status: queued, scheduled or skipped"},
        language=STRING, template_version={"type": "integer"},
        request_id={"type": ["string", "null"]}),
    "Notification": _object(
        ["notification_id", "status", "channels"],
        notification_id={"type": "string", "format": "uuid"}, user_id=STRING,
        template_key=STRING, template_version={"type": "integer"}, language=STRING,
        status={"type": "string",
                "description": "queued, scheduled, cancelled, sent, delivered,"
                               " partially_sent or failed"},
        priority=STRING, request_id={"type": ["string", "null"]},
        scheduled_for={"type": ["string", "null"], "format": "date-time",
                       "description": "while scheduled: when it goes out (send_at, quiet hours)"},
        channels={"type": "object", "additionalProperties": {"type": "object"},
                  "description": "per channel: status, recipient, provider, provider message"
                                 " id, error, and `attempt_log`"}),
    "TemplateVersion": {"allOf": [_ref("Template")],
                        "properties": {"variables": {"type": ["array", "null"],
                                                     "items": STRING}}},
    "Readiness": _object(["status", "checks"], status={"enum": ["ok", "degraded"]},
                         checks={"type": "object", "additionalProperties": _object(
                             ["status"], status={"enum": ["up", "down"]},
                             latency_ms={"type": "number"}, error=STRING)},
                         hosts={"type": ["object", "null"],
                                "description": "how many hosts of the cluster are up, down"
                                               " and stopped (which ones: /v1/system/cluster);"
                                               " null when Redis cannot say",
                                "properties": {s: {"type": "integer"}
                                               for s in ("up", "down", "stopped")}},
                         checked_at={"type": "number",
                                     "description": "when the services were probed (epoch"
                                                    " seconds): at most once a second"}),
    "Host": _object(
        ["node", "status", "heartbeat_age"], node=STRING,
        status={"enum": ["up", "down", "stopped"]}, heartbeat_age={"type": "number"},
        role={"enum": ["all", "gateway", "delivery"]}, channels=_array(STRING),
        providers={"type": "object", "additionalProperties": STRING}, address=STRING,
        leader={"type": "boolean"}, convention={"type": ["string", "null"]},
        actors=_array(_object(["name", "state"], name=STRING, state=STRING,
                              pid={"type": ["integer", "null"]},
                              node={"type": ["string", "null"]}, placed={"type": "boolean"}))),
    "Cluster": _object(["hosts", "up", "down"], hosts=_array(_ref("Host")),
                       up={"type": "integer"}, down={"type": "integer"}),
    "ActorTree": _object(["children"], children=_array(_object(
        ["name", "state"], name=STRING, state=STRING, pid={"type": ["integer", "null"]},
        restarts={"type": "integer"}))),
    "Replayed": _object(["replayed", "count"], replayed=_array({"type": "integer"}),
                        count={"type": "integer"}),
    "CallbackEndpoint": _object(
        ["principal", "url", "created_at", "updated_at"], principal=STRING, url=STRING,
        created_at=TIME, updated_at=TIME,
        secret={"type": "string", "description": "only when Clarion made it, only this once"},
        callbacks={"type": "object", "additionalProperties": {"type": "integer"}}),
    "Suppression": _object(
        ["channel", "address", "reason", "source", "created_by", "created_at"],
        channel={"type": "string", "enum": ["email", "sms"]}, address=STRING,
        reason=SUPPRESSION_REASON, source=STRING, notification_id=NULLABLE_STRING,
        note=NULLABLE_STRING, created_by=STRING, created_at=TIME),
    "SuppressionRemoval": _object(
        ["removal_id", "channel", "address", "reason", "removed_by", "why", "removed_at"],
        removal_id={"type": "integer"}, channel={"type": "string", "enum": ["email", "sms"]},
        address=STRING, reason=SUPPRESSION_REASON, source=STRING, suppressed_at=TIME,
        suppressed_by=STRING, removed_by=STRING, why=STRING, removed_at=TIME),
}
_RECORDS = (User, Template)  # dataclasses answers are made of


# -- walking the app ----------------------------------------------------------------------------


def app_operations(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (method, path) the app routes, paths in OpenAPI form. HEAD, which Starlette adds
    to every GET, is left out; a mounted app (static files) is `GET <mount>/{path}`."""
    for route in routes:
        if isinstance(route, Route):
            # `{address:path}` is Starlette's; OpenAPI names the parameter alone.
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield method, path
        elif isinstance(route, Mount):
            inner = route.routes
            if inner:
                yield from app_operations(inner, prefix + route.path)
            else:
                yield "GET", f"{prefix}{route.path}/{{path}}"


def missing_operations(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """App routes that `OPERATIONS` does not describe."""
    return [key for key in app_operations(routes) if key not in OPERATIONS]


# What a route gets while it has no row (only when the document is built with strict=False).
_UNDESCRIBED = Operation("Not described yet", "undescribed", media_type="*/*",
                         description="This route has no row in OPERATIONS (http/openapi.py).")


# -- building the document ----------------------------------------------------------------------


class _Components:
    """Collects the schemas operations refer to: each model with its `$defs`, once."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = copy.deepcopy(_SHAPES)
        for record in _RECORDS:
            self.add(record.__name__, TypeAdapter(record).json_schema(
                mode="serialization", ref_template=REF))

    def add(self, name: str, schema: Schema) -> None:
        schema = dict(schema)
        for inner, definition in schema.pop("$defs", {}).items():
            self.add(inner, definition)
        known = self.schemas.get(name)
        if known is not None and known != schema:
            raise ValueError(f"two different schemas are both named {name!r}")
        self.schemas[name] = schema

    def model(self, model: type[BaseModel]) -> Schema:
        self.add(model.__name__, model.model_json_schema(ref_template=REF))
        return _ref(model.__name__)


def _security(method: str, path: str) -> list[dict[str, list[str]]] | None:
    """Who may call a route, from the access table ApiKeyMiddleware applies (None: anyone).
    The bearer requirement names the key scopes that reach it (OpenAPI 3.1 "role names")."""
    # A path template stands for its concrete paths: "1" fits every parameter pattern used.
    rule = rule_for(method, re.sub(r"{[^}]+}", "1", path))
    if rule.need == PUBLIC:
        return None
    scopes = ["send", "admin"] if rule.need == "send" else ["admin"]
    schemes: list[dict[str, list[str]]] = [{"bearer": scopes}]
    if rule.internal:
        schemes.append({"internalSecret": []})
    if rule.console:
        schemes.append({"consoleSession": []})
    return schemes


def _parameters(path: str, op: Operation) -> list[Schema]:
    params: list[Schema] = []
    for name in _path_names(path):
        params.append({"name": name, "in": "path", "required": True,
                       "schema": dict(op.path.get(name, STRING))})
    if isinstance(op.query, type):
        schema = op.query.model_json_schema(ref_template=REF)
        for name in schema["properties"]:
            params.append({"name": name, "in": "query",
                           "required": name in schema.get("required", ()),
                           "schema": _field(op.query, name)})
    else:
        params += [{"name": p.name, "in": "query", "required": False, "schema": p.schema,
                    **({"description": p.description} if p.description else {})}
                   for p in op.query]
    params += [{"name": h.name, "in": "header", "required": False, "schema": h.schema,
                "description": h.description} for h in op.headers]
    params.append({"$ref": "#/components/parameters/RequestId"})
    return params


def _path_names(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/")
            if part.startswith("{") and part.endswith("}")]


def _success(op: Operation) -> Schema:
    if op.media_type is None:
        return {"headers": {"Location": {"schema": STRING}}} if 300 <= op.status < 400 else {}
    if op.media_type != "application/json" or not op.enveloped:
        return {"content": {op.media_type: {"schema": op.data or {}}}}
    properties: Schema = {"success": {"const": True}, "error": {"type": "null"}}
    if op.data is not None:
        properties["data"] = op.data
    if op.meta is not None:
        properties["meta"] = op.meta
    return {"content": {"application/json": {"schema": {
        "allOf": [_ref("Envelope")], "properties": properties}}}}


def _errors(codes: Iterable[str]) -> dict[str, Schema]:
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ERRORS[code][0], []).append(code)
    responses: dict[str, Schema] = {}
    for status, found in sorted(by_status.items()):
        response: Schema = {
            "description": "\n".join(f"- `{c}`: {ERRORS[c][1]}" for c in found),
            "content": {"application/json": {"schema": {
                "allOf": [_ref("ErrorEnvelope")], "properties": {"error": {"enum": found}}}}},
        }
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": STRING}}
        responses[str(status)] = response
    return responses


def _operation(method: str, path: str, op: Operation, components: _Components) -> Schema:
    security = _security(method, path)
    codes = [*op.errors]
    if op.body is not None:
        codes = [*BODY, *codes]
    if security is not None:
        codes = [*AUTH, *codes]
    if "validation_error" not in codes:
        # The query model refused a parameter, or the URL carried a NUL (UrlSanityMiddleware).
        codes.append("validation_error")
    if op.form is not None:
        codes.insert(0, "payload_too_large")
    responses = {str(s): {"description": op.summary, **_success(op)}
                 for s in (op.status, *op.also)}
    responses.update(_errors(codes))
    operation: Schema = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _parameters(path, op),
        "responses": responses,
        "security": security if security is not None else [],
    }
    if op.description:
        operation["description"] = op.description
    if op.body is not None:
        media: Schema = {"schema": components.model(op.body)}
        if op.example is not None:
            media["example"] = op.example
        operation["requestBody"] = {"required": True, "content": {"application/json": media}}
    if op.form is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": op.form}}}
    return operation


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}").replace("-", "_").replace(".", "_") for w in path.split("/") if w]
    return "_".join([method.lower(), *words])


def build_openapi(app_routes: Iterable[BaseRoute], strict: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app with these routes.

    A route missing from OPERATIONS is a ValueError; with strict=False (serving the document)
    it is logged and listed as not described yet, so a new route never breaks /openapi.json.
    """
    routes = list(app_routes)
    missing = missing_operations(routes)
    if missing:
        names = ", ".join(f"{m} {p}" for m, p in missing)
        if strict:
            raise ValueError(f"routes missing from clarion.http.openapi.OPERATIONS: {names}")
        log.warning("routes missing from the OpenAPI document", extra={"routes": names})
    components = _Components()
    paths: dict[str, dict[str, Schema]] = {}
    for method, path in app_operations(routes):
        paths.setdefault(path, {})[method.lower()] = _operation(
            method, path, OPERATIONS.get((method, path), _UNDESCRIBED), components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clarion",
            "version": "1",
            "description": (
                "One HTTP API for email, push and SMS notifications. Every JSON answer is the"
                " envelope `{success, data, error, message, meta}`; an error has a stable"
                " `error` code. Routes under /v1 and /metrics need `Authorization: Bearer"
                " <api key>`: a `send` key posts notifications and reads its own, an `admin`"
                " key does everything; management routes also take `X-Internal-Secret`."
                " Answers to"
                " an API key carry `RateLimit-Limit`, `RateLimit-Remaining` and"
                " `RateLimit-Reset`. `X-Request-ID` is accepted (or made) and returned."),
        },
        "tags": [{"name": t} for t in dict.fromkeys(  # in the table's order
            [o.tag for o in OPERATIONS.values()] + [_UNDESCRIBED.tag])
            if any(op["tags"] == [t] for item in paths.values() for op in item.values())],
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "an API key (`clarion apikey create NAME --scope"
                                          " send|admin`); the requirement lists the scopes"
                                          " that reach the route"},
                "consoleSession": {"type": "apiKey", "in": "cookie", "name": COOKIE,
                                   "description": "the admin console's session (POST"
                                                  " /admin/login), on the calls the console"
                                                  " makes; its writes also need"
                                                  " `X-Clarion-Console: 1`"},
                "internalSecret": {"type": "apiKey", "in": "header",
                                   "name": "X-Internal-Secret",
                                   "description": "the shared service secret"
                                                  " (CLARION_INTERNAL_SECRET), management"
                                                  " routes only"},
            },
            "parameters": {"RequestId": {
                "name": "X-Request-ID", "in": "header", "required": False,
                "description": "your id for this request, returned and logged (1-128 of"
                               " A-Z a-z 0-9 . _ : -; another value is replaced)",
                "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"}}},
            "headers": {"RetryAfter": {"description": "seconds to wait before retrying",
                                       "schema": {"type": "integer", "minimum": 1}}},
        },
    }
