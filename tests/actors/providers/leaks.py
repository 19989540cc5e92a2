"""A check the provider-client tests share: no thread left behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_thread_left(ignore_prefix: str | None = None, grace: float = 2.0) -> Iterator[None]:
    """Fails if the block leaves threads behind (but those named `ignore_prefix...`: a server
    the module started). Threads finishing on their own get `grace` seconds (google-auth's
    background lookup thread, a pool closing its connections)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + grace
    while (extra := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [t for t in extra if ignore_prefix is None or not t.name.startswith(ignore_prefix)]
