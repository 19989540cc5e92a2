"""Where an actor process's log records go: Clarion's own straight to a file, as JSON lines,
and chatty clients' INFO records nowhere (in an actor each record forwarded to Thespian's logger
actor is a message)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from clarion.config import logging as clarion_logging


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    names = ("", "clarion", *clarion_logging.NOISY_CLIENTS)
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers),
                 logging.getLogger(n).propagate) for n in names}
    yield
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
    clarion_logging._direct_pid = None


def test_an_actor_writes_its_own_records_to_the_file_and_silences_chatty_clients(
    tmp_path: Path, restore_loggers: None,
) -> None:
    for name in clarion_logging.NOISY_CLIENTS:  # as in a fresh process
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.INFO)  # Thespian's forwarder takes INFO and up
    path = tmp_path / "actors.log"
    clarion_logging.log_actor_events_to_file("INFO", str(path))

    logging.getLogger("clarion.actors.email").info("delivered", extra={"channel": "email"})
    for handler in logging.getLogger("clarion").handlers:
        handler.flush()
    line = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
    assert line["event"] == "delivered" and line["channel"] == "email"
    assert not logging.getLogger("clarion").propagate  # never through Thespian's forwarder

    for name in ("psycopg.pool", "pika", "urllib3", "google.auth"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
