"""Clarion's Prometheus metrics, defined once for every process that records them.

Clarion runs as many processes (uvicorn workers, one process per actor), so metrics use
prometheus-client's multiprocess mode: each process writes its samples to files in
`PROMETHEUS_MULTIPROC_DIR` (set by the launcher and by `clarion serve` before anything imports
this module), and `GET /metrics` adds them up. A counter therefore counts across every worker
and every actor, including actors that died and were restarted.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "clarion_http_requests_total", "HTTP requests answered, by route, method and status",
    ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "clarion_http_request_duration_seconds", "Time to answer an HTTP request",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

NOTIFICATIONS_ACCEPTED = Counter(
    "clarion_notifications_accepted_total",
    "Notification channels accepted (202), by channel and initial status (queued, scheduled)",
    ["channel", "status"])
NOTIFICATIONS_REFUSED = Counter(
    "clarion_notifications_refused_total", "Notification requests refused, by error code",
    ["error_code"])
DELIVERIES = Counter(
    "clarion_deliveries_total",
    "Delivery attempts, by channel, provider and outcome (sent, retried, dead_lettered, skipped)",
    ["channel", "provider", "outcome"])
CALLBACKS = Counter(
    "clarion_status_callbacks_total",
    "Status callbacks to callers' endpoints, by outcome (delivered, failed, dead_lettered)",
    ["outcome"])
DELIVERY_LATENCY = Histogram(
    "clarion_delivery_latency_seconds",
    "From acceptance (202) to the provider accepting the message, by channel",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
BREAKER_STATE = Gauge(
    "clarion_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open",
    ["actor", "dependency"], multiprocess_mode="livemax")
OUTBOX_RELAYED = Counter(
    "clarion_outbox_relayed_total",
    "Broker messages published from the transactional outbox (broker-confirmed)")
DELIVERY_DUPLICATES_AVOIDED = Counter(
    "clarion_delivery_duplicates_avoided_total",
    "Second copies of a delivery message recognised and not sent again, by channel and how"
    " (in_memory: this actor is running or finished it; claimed: the database says so)",
    ["channel", "how"])
ACTOR_RESTARTS = Counter(
    "clarion_actor_restarts_total", "Actor restarts by the Supervisor", ["actor"])

BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}
