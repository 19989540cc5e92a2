"""GET /v1/system/providers: each channel's providers in failover order, with the state of each
one's breaker in this host's delivery actors and its share of the last hour's attempts.

What an operator looks at during an incident: is SendGrid's breaker open, and how much of the
email went out through SMTP meanwhile (README "Providers and failover")."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import StatusRequest
from clarion.http.responses import EnvelopeResponse, success
from clarion.persistence import queries
from clarion.persistence.broker import CHANNELS

WINDOW_SECONDS = 3600
_WORST = ("open", "half_open", "closed")  # several actors of a channel: the worst state shows


async def providers(request: Request) -> EnvelopeResponse:
    settings = request.app.state.settings
    async with request.app.state.db.connection() as conn:
        counts = await queries.provider_attempts(conn, WINDOW_SECONDS)
    breakers = await _breakers(request)
    channels: dict[str, list[dict[str, Any]]] = {}
    for channel in CHANNELS:
        configured = list(settings.provider_names(channel))
        seen = sorted(p for c, p in counts if c == channel and p not in configured)
        total = sum(n for (c, _), (n, _) in counts.items() if c == channel)
        rows = []
        for order, name in enumerate(configured + seen, start=1):
            attempts, sent = counts.get((channel, name), (0, 0))
            rows.append({
                "provider": name, "order": order if name in configured else None,
                "breaker": breakers.get((channel, name), "closed") if breakers is not None
                else "unknown",
                "attempts": attempts, "sent": sent, "failed": attempts - sent,
                "share": round(attempts / total, 3) if total else 0.0,
            })
        channels[channel] = rows
    return success({"window_seconds": WINDOW_SECONDS, "channels": channels})


async def _breakers(request: Request) -> dict[tuple[str, str], str] | None:
    """(channel, provider) → breaker state over this host's delivery actors; None when the
    actors cannot say. A breaker never tripped has not reported: it is closed."""
    reply = await request.app.state.bridge.request(StatusRequest(uuid.uuid4().hex))
    if reply.status != 200 or not reply.data:
        return None
    states: dict[tuple[str, str], str] = {}
    for child in reply.data.get("children", []):
        channel = str(child.get("name", "")).split("-")[0]
        if channel not in CHANNELS:
            continue
        for dependency, state in (child.get("breakers") or {}).items():
            key = (channel, dependency)
            if key not in states or _WORST.index(state) < _WORST.index(states[key]):
                states[key] = state
    return states


routes = [Route("/v1/system/providers", providers, methods=["GET"])]
