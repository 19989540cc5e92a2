"""PushDelivery actor: consumes `push.queue`, sends through Firebase Cloud Messaging (or the
local outbox).

Takes: Configure, WatchMessage (broker traffic and finished sends), its tick. Answers nothing:
outcomes go to PostgreSQL, and each message is acked once its outcome is committed.
"""

from __future__ import annotations

from clarion.actors.delivery import ChannelDelivery
from clarion.actors.providers import push_providers
from clarion.actors.providers.base import Provider


class PushDelivery(ChannelDelivery):
    CHANNEL = "push"

    def make_providers(self) -> list[Provider]:
        return push_providers(self.settings)
