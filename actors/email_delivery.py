"""EmailDelivery actor: consumes `email.queue`, sends through SendGrid (or the local outbox).

Takes: Configure, WatchMessage (broker traffic and finished sends), its tick. Answers nothing:
outcomes go to PostgreSQL, and each message is acked once its outcome is committed.
"""

from __future__ import annotations

from clarion.actors.delivery import ChannelDelivery
from clarion.actors.providers import email_providers
from clarion.actors.providers.base import Provider


class EmailDelivery(ChannelDelivery):
    CHANNEL = "email"

    def make_providers(self) -> list[Provider]:
        return email_providers(self.settings)
