"""Posting the simulator's webhooks in the background, with SendGrid-like retries.

Owns turning an accepted message into its post (reading the event config), and the POST itself:
a task on the server's event loop (the provider call that caused it has already been answered),
the delay, the retries, and the record of each post in `SimulatorState` that tests read. What is
posted and how it is signed belongs to `events.py`.

The simulator only posts to `localhost` or an IP address and never resolves another host name:
it stands in for providers on machines without a network, where fixtures use callback URLs such
as https://clarion.test/hooks/twilio that must not turn into lookups or requests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx

from .events import (
    TWILIO_SIGNATURE_HEADER,
    sendgrid_events,
    twilio_signature,
    twilio_status_params,
)

if TYPE_CHECKING:
    from .state import SimulatorState

POST_TIMEOUT_S = 5.0
NOT_LOCAL = "not sent: the simulator only posts to http(s) URLs on localhost or an IP address"


def is_local_target(url: str) -> bool:
    """Whether `url` is http(s) on `localhost` or an IP literal (no DNS lookup needed)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class WebhookSender:
    """Schedules signed POSTs on the running loop and records each in the state.

    `post` must be called from the server's event loop (a request handler). Tasks are kept
    referenced until done (asyncio holds only weak references) and end with the loop when the
    server stops.
    """

    def __init__(self, state: SimulatorState) -> None:
        self._state = state
        self._tasks: set[asyncio.Task[None]] = set()
        # One TLS context for every post: building one per client loads the CA store (~15 ms of
        # the server loop's time per post).
        self._tls = ssl.create_default_context()

    def mail_accepted(self, message_id: str, mail: dict[str, Any]) -> None:
        """Posts SendGrid's events about an accepted mail, if a webhook is configured."""
        config = self._state.get_config()
        url = config["sendgrid_event_webhook"]
        if url is None:
            return
        delay_s = config["event_delay_ms"] / 1000.0
        events = sendgrid_events(message_id, mail, config["event_rules"], int(time.time() + delay_s))
        if not events:
            return  # every recipient's outcome is "none"
        body = json.dumps(events, separators=(",", ":")).encode()
        signer = self._state.sendgrid_signer
        self.post("sendgrid", url, events, body,
                  lambda: {"Content-Type": "application/json", **signer.headers(body)}, delay_s)

    def sms_accepted(self, message: dict[str, Any], auth_token: str) -> None:
        """Posts Twilio's status callback for an accepted SMS record that names a StatusCallback.

        `auth_token`: the one the create request authenticated with; Twilio signs with it.
        """
        url = message.get("status_callback")
        if not url:
            return
        config = self._state.get_config()
        params = twilio_status_params(message, config["event_rules"])
        if params is None:
            return
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   TWILIO_SIGNATURE_HEADER: twilio_signature(auth_token, url, params)}
        self.post("twilio", url, params, urlencode(params).encode(), lambda: headers,
                  config["event_delay_ms"] / 1000.0)

    def post(
        self,
        kind: str,
        url: str,
        payload: Any,
        body: bytes,
        headers: Callable[[], dict[str, str]],
        delay_s: float = 0.0,
    ) -> str:
        """Records a post of `body` to `url` and sends it after `delay_s`; returns its record id.

        `headers` is called before every try, so a retried SendGrid post carries a fresh
        signature timestamp as SendGrid's own retries do.
        """
        if not is_local_target(url):
            return self._state.record_event_post(kind, url, payload, error=NOT_LOCAL)
        post_id = self._state.record_event_post(kind, url, payload)
        task = asyncio.get_running_loop().create_task(self._deliver(post_id, url, body, headers, delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return post_id

    async def _deliver(
        self, post_id: str, url: str, body: bytes, headers: Callable[[], dict[str, str]], delay_s: float
    ) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        backoff = self._state.webhook_backoff_s
        # trust_env=False: a proxy from the environment must never see a local callback.
        async with httpx.AsyncClient(
            timeout=POST_TIMEOUT_S, verify=self._tls, trust_env=False, follow_redirects=False
        ) as client:
            for attempt in range(len(backoff) + 1):
                if attempt:
                    await asyncio.sleep(backoff[attempt - 1])
                if not self._state.event_post_pending(post_id):
                    return  # cleared by DELETE /_sim/messages or reset(): stop retrying
                status, error = await _try(client, url, body, headers)
                delivered = status is not None and 200 <= status < 300
                self._state.update_event_post(
                    post_id, status=status, tries=attempt + 1, error=error,
                    settled=delivered or attempt == len(backoff),
                )
                if delivered:
                    return


async def _try(
    client: httpx.AsyncClient, url: str, body: bytes, headers: Callable[[], dict[str, str]]
) -> tuple[int | None, str | None]:
    """One POST: (HTTP status, None), or (None, why) when no answer came."""
    try:
        reply = await client.post(url, content=body, headers=headers())
    except Exception as exc:  # noqa: BLE001 - httpx.HTTPError mostly; whatever it is, record it, never lose the post
        return None, f"{type(exc).__name__}: {exc}"
    if 200 <= reply.status_code < 300:
        return reply.status_code, None
    return reply.status_code, f"HTTP {reply.status_code}"
