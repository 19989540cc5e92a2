"""Helpers for tests that run several Clarion nodes on this machine, in one convention."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from clarion.config.settings import Settings
from clarion.persistence import cache
from clarion.supervision import cluster
from tests.stack import free_port


def node_settings(base: Settings, name: str, role: str, channels: str, leader_port: int,
                  state_dir: Path, **update: Any) -> Settings:
    """`base` as one node of a convention led by the admin on 127.0.0.1:`leader_port`."""
    return base.model_copy(update={
        "node_name": name, "node_role": role, "node_channels": channels,
        "convention": f"127.0.0.1:{leader_port}", "actor_port": update.pop("actor_port",
                                                                          free_port()),
        "state_dir": state_dir, **update})


def hosts_of(settings: Settings) -> dict[str, dict[str, Any]]:
    """The cluster view, from the heartbeats in Redis, by node name."""
    client = cache.connect(settings.redis_url)
    return {h["node"]: h for h in cluster.read_view(client, settings.host_down_after)}


def wait(predicate: Any, timeout: float, what: str,
         ignore: tuple[type[BaseException], ...] = ()) -> float:
    """Poll `predicate` until it holds; return how long that took. Exceptions of the `ignore`
    kinds count as "not yet" (a host still starting)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except ignore:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait(lambda: not group_alive(pgid), 10, f"process group {pgid} gone")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
