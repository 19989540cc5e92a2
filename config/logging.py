"""Structured logs: one JSON object per line, in every Clarion process (HTTP and actors).

Fields: timestamp, level, logger, event (the message), and whatever the call passed in `extra`
(request_id, notification_id, actor, ...). Thespian's own log records go through the same
formatter: `thespian_log_defs` is handed to the actor system at start.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route this process's logging to JSON lines on stderr (or `stream`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _quiet_noisy_clients()


# Clients that log every request at INFO (psycopg's pool: twice per connection borrowed) would
# drown the events that matter, and in an actor process each record is a message to Thespian's
# logger actor.
NOISY_CLIENTS = ("pika", "urllib3", "google", "httpx", "python_http_client", "psycopg.pool")


def _quiet_noisy_clients() -> None:
    for noisy in NOISY_CLIENTS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def thespian_log_defs(level: str, path: str) -> dict[str, Any]:
    """logging.config dict for Thespian's logger actor: JSON lines into `path`.

    Thespian forwards every actor's log records to one logger process; DEBUG floods its send queues
    (notes/thespian.md), so the floor is INFO whatever `level` says.
    """
    floor = level if level in ("WARNING", "ERROR") else "INFO"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "clarion.config.logging.JsonFormatter"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": path, "formatter": "json"},
        },
        "loggers": {name: {"level": "WARNING"} for name in NOISY_CLIENTS},
        "root": {"handlers": ["file"], "level": floor},
    }


_direct_pid: int | None = None


def log_actor_events_to_file(level: str, path: str) -> None:
    """In an actor process: write Clarion's own records straight to `path`, one JSON line each.

    Thespian forwards every log record as a message to its logger process; on the delivery path
    that costs more than the delivery itself (a profile showed 85 % of a delivery actor's time).
    An appended line is cheap, and lines from several processes do not interleave (O_APPEND).
    Done once per process (a forked child re-opens its own handler).
    """
    global _direct_pid
    import os

    if _direct_pid == os.getpid():
        return
    logger = logging.getLogger("clarion")
    for inherited in list(logger.handlers):
        logger.removeHandler(inherited)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # Other libraries' records still go to Thespian's forwarding handler (the logger actor):
    # keep the chatty ones to warnings, or the outbox's pool alone costs more than delivering.
    _quiet_noisy_clients()
    _direct_pid = os.getpid()
