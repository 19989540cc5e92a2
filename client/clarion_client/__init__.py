"""clarion-client: Clarion's HTTP API from Python, sync (`Clarion`) and async (`AsyncClarion`).

    from clarion_client import Clarion

    with Clarion("http://127.0.0.1:8000", api_key) as clarion:
        accepted = clarion.notifications.send("demo-user", "welcome", {"name": "Ada"})
        print(clarion.notifications.get(accepted.notification_id).status)

Errors are `ClarionError` subclasses carrying Clarion's stable `code`, the `request_id`, and
`retry_after`; sends are retried with one idempotency key per call; list endpoints have
`iterate()`, which walks every page. The client depends on httpx only.
"""

from clarion_client._version import __version__
from clarion_client.async_client import AsyncClarion
from clarion_client.bodies import UNSET, NewNotification
from clarion_client.client import Clarion
from clarion_client.errors import (
    BadRequest,
    ClarionError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidResponse,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from clarion_client.models import (
    BatchItem,
    BatchResult,
    CallbackEndpoint,
    Cancellation,
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
from clarion_client.retry import NO_RETRIES, RetryPolicy
from clarion_client.signatures import InvalidSignature, parse_callback, verify_signature

__all__ = [
    "NO_RETRIES", "UNSET", "AsyncClarion", "BadRequest", "BatchItem", "BatchResult",
    "CallbackEndpoint", "Cancellation", "Clarion", "ClarionError", "Conflict",
    "ConnectionFailed", "Forbidden", "InvalidResponse", "InvalidSignature", "NewNotification",
    "NotFound", "Notification", "NotificationAccepted", "Page", "PageMeta", "RateLimited",
    "Replayed", "RetryPolicy", "ServerError", "Suppression", "SuppressionRemoval",
    "SuppressionStatus", "Template", "TemplateVersion", "Unauthorized", "Unavailable", "User",
    "ValidationError", "__version__", "parse_callback", "verify_signature",
]
