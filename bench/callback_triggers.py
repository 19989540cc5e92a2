"""What the status-callback triggers (migration 0015) add to recording delivery outcomes.

    .venv/bin/python bench/callback_triggers.py [DATABASE_URL]

Records runs of 200 outcomes (one transaction each, as a delivery actor does) four ways, in the
same run, interleaved: triggers disabled (as before 0015), no endpoint registered, endpoints
registered but not by the notifications' key, and the key's own endpoint (two callbacks written
per outcome: the channel's and the notification's). Prints µs per outcome and the ratio to the
first. Uses a database of its own, dropped at the end.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid

import psycopg

from clarion.persistence import database
from clarion.persistence import notifications as repo
from clarion.persistence.notifications import NewDelivery, NewNotification, Outcome

RUN = 200  # outcomes per transaction
ROUNDS = 15  # transactions per way, per pass
PASSES = 3
TRIGGERS = (("deliveries", "deliveries_status_callbacks"),
            ("notifications", "notifications_status_callbacks"))


def _outcomes(conn: psycopg.Connection, created_by: str) -> list[Outcome]:
    batch = [NewNotification(
        notification_id=str(uuid.uuid4()), user_id="u", template_key="t", template_version=1,
        language="en", priority="normal", request_id=None, idempotency_key=None,
        message_data={}, created_by=created_by,
        deliveries=(NewDelivery("email", "queued", "a@example.com", {"body": "x"}),))
        for _ in range(RUN)]
    repo.insert_batch(conn, batch)
    return [Outcome(n.notification_id, "email", 1, True, "outbox", time.time(), "m")
            for n in batch]


def _per_outcome_us(conn: psycopg.Connection) -> float:
    times = []
    for _ in range(ROUNDS):
        outcomes = _outcomes(conn, "key:app")
        started = time.perf_counter()
        repo.record_outcomes(conn, outcomes)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / RUN * 1e6


def _triggers(conn: psycopg.Connection, on: bool) -> None:
    for table, trigger in TRIGGERS:
        conn.execute(f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} TRIGGER {trigger}")


def _endpoints(conn: psycopg.Connection, *principals: str) -> None:
    conn.execute("DELETE FROM callback_endpoints")
    for principal in principals:
        conn.execute("INSERT INTO callback_endpoints (principal, url, secret)"
                     " VALUES (%s, 'https://example.com/hook', 'secret')", (principal,))


def main(url: str) -> None:
    database.ensure_database(url)
    database.migrate(url)
    ways = {
        "triggers disabled (before 0015)": (False, ()),
        "no endpoint registered": (True, ()),
        "endpoints, none the notifications' key's": (True, ("key:other",)),
        "the notifications' key's endpoint": (True, ("key:other", "key:app")),
    }
    measured: dict[str, list[float]] = {name: [] for name in ways}
    try:
        with database.connect(url, autocommit=True) as conn:
            for _ in range(PASSES):
                for name, (on, principals) in ways.items():
                    _triggers(conn, on)
                    _endpoints(conn, *principals)
                    measured[name].append(_per_outcome_us(conn))
    finally:
        with database.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    reference = statistics.median(measured["triggers disabled (before 0015)"])
    for name, values in measured.items():
        value = statistics.median(values)
        print(f"{name:45s} {value:7.1f} µs per outcome  {value / reference:.2f}×")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1
         else "postgresql://postgres@127.0.0.1:5432/clarion_bench_callback_triggers")
