"""A batch of notification requests on its way through the Gateway, and its stages.

    stage     waits on                                         a storage failure
    ───────   ──────────────────────────────────────────────   ─────────────────────────────────
    USERS     UsersResolved from Users (cache, then PostgreSQL)  retried (retry.STORAGE), then 503
              for the users the Gateway does not hold (none: the stage is skipped)
    RENDER    Rendered from Templates, for the items the         retried (retry.STORAGE), then 503
              Gateway could not render itself (none: skipped)
    PERSIST   the commit of notifications, deliveries and their  retried (retry.STORAGE), then 503
              broker messages (in the Gateway, PostgreSQL)       `storage_unavailable`

Every item gets exactly one Reply: refused at any stage with a stable error code, replayed from
its idempotency key, or accepted (202) once PERSIST committed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from clarion.actors.messages import NotificationRequest, RenderItem, Rendering, Reply
from clarion.persistence.notifications import NewNotification
from clarion.persistence.records import User


class Stage(enum.Enum):
    USERS = "users"
    RENDER = "render"
    PERSIST = "persist"


@dataclass
class PendingBatch:
    batch_id: str
    reply_to: Any
    items: list[NotificationRequest]
    deadline: float  # time.monotonic() by which every item must be answered
    stage: Stage = Stage.USERS
    users: dict[str, User] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)  # by correlation id
    accepted: dict[str, NewNotification] = field(default_factory=dict)  # by correlation id
    hops: dict[str, float] = field(default_factory=dict)  # the batch's hop times
    attempts: int = 1  # of the current stage, for retries of a storage that failed
    rendering: tuple[RenderItem, ...] = ()  # what was asked of Templates (to ask again)
    rendered: dict[str, Rendering] = field(default_factory=dict)  # done so far, by correlation id
    asked_at: float = 0.0  # when the stage's question left (for the near caches' freshness)
    reserved: set[str] = field(default_factory=set)  # items whose idempotency key we reserved
    keys: set[str] = field(default_factory=set)  # idempotency keys this batch holds in memory

    def open_items(self) -> list[NotificationRequest]:
        return [i for i in self.items if i.correlation_id not in self.replies]

    def refuse(self, item: NotificationRequest, status: int, code: str, message: str,
               retry_after: float | None = None) -> None:
        self.replies[item.correlation_id] = Reply(item.correlation_id, status, error_code=code,
                                                  message=message, retry_after=retry_after)

    def fail_open(self, status: int, code: str, message: str,
                  retry_after: float | None = None) -> None:
        """Refuse every item not answered yet."""
        for item in self.open_items():
            self.refuse(item, status, code, message, retry_after)
