"""Three Clarion nodes on this machine, one convention: membership, heartbeats, and a delivery
actor placed on the only host holding the FCM credentials, placed again when that host returns.

(The same cluster across real network hosts is tests/cluster/test_hosts.py.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clarion.config.settings import Settings
from clarion.node.launcher import start_actor_system, stop_actor_system
from tests.cluster.nodes import hosts_of, kill_group, node_settings, wait
from tests.stack import Stack, new_stack_settings, start_stack, stop_stack


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {role: f"{role}-{suffix}" for role in ("gw", "fcm", "nofcm")}


@pytest.fixture(scope="module")
def leader(provider_settings: Settings, simulator: Any, names: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = new_stack_settings(provider_settings)
    settings = node_settings(settings, names["gw"], "gateway", "email,push", settings.actor_port,
                     tmp_path_factory.mktemp("gw"), actor_port=settings.actor_port)
    running = start_stack(settings, simulator, settings.state_dir)
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def fcm_host(leader: Stack, provider_settings: Settings, names: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A delivery host with both providers' credentials."""
    settings = node_settings(provider_settings, names["fcm"], "delivery", "email,push",
                     leader.settings.actor_port, tmp_path_factory.mktemp("fcm"))
    host = {"settings": settings, "pgid": start_actor_system(settings)}
    yield host
    stop_actor_system(settings, host["pgid"])


@pytest.fixture(scope="module")
def push_only_host(leader: Stack, fcm_host: dict[str, Any], provider_settings: Settings,
                   names: dict[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A delivery host asked to deliver push without FCM credentials of its own."""
    settings = node_settings(provider_settings, names["nofcm"], "delivery", "push",
                     leader.settings.actor_port, tmp_path_factory.mktemp("nofcm"),
                     fcm_credentials_file=None)
    host = {"settings": settings, "pgid": start_actor_system(settings)}
    yield host
    stop_actor_system(settings, host["pgid"])


def _supervisor_view(settings: Settings) -> dict[str, Any]:
    """A node's own heartbeat: its role and its actors (as its Supervisor wrote them)."""
    return hosts_of(settings).get(settings.node_name, {})


def test_nodes_join_and_a_child_is_placed_where_the_credentials_are(
    leader: Stack, fcm_host: dict[str, Any], push_only_host: dict[str, Any],
    names: dict[str, str], clean_simulator: None,
) -> None:
    settings = leader.settings
    # Every host beats, and the leader's convention holds both members.
    wait(lambda: all(hosts_of(settings).get(n, {}).get("status") == "up"
                      for n in names.values()), 15, "three hosts up")
    wait(lambda: set(hosts_of(settings)[names["gw"]]["convention_members"]) >=
          {names["fcm"], names["nofcm"]}, 15, "both members in the leader's convention")
    hosts = hosts_of(settings)
    assert hosts[names["gw"]]["leader"] and not hosts[names["fcm"]]["leader"]
    assert {a["name"] for a in hosts[names["gw"]]["actors"]} == {
        "users", "templates", "publisher", "gateway", "events", "callbacks", "monitor"}

    # The push-only host has no FCM credentials: its push child runs on the FCM host, in that
    # host's process tree, with that host's credentials.
    def placed_push() -> dict[str, Any]:
        actors = {a["name"]: a for a in _supervisor_view(push_only_host["settings"])["actors"]}
        return actors["push"]

    wait(lambda: placed_push()["state"] == "running", 20, "the push child placed and running")
    push = placed_push()
    assert push["placed"] and push["node"] == names["fcm"]
    assert os.getpgid(push["pid"]) == fcm_host["pgid"]

    # The cluster view over HTTP says the same.
    view = leader.client().get("/v1/system/cluster").json()["data"]
    listed = {h["node"]: h for h in view["hosts"]}
    assert {names["gw"], names["fcm"], names["nofcm"]} <= set(listed)
    assert listed[names["nofcm"]]["status"] == "up"
    ready = leader.client().get("/health/ready").json()["data"]
    assert ready["hosts"]["up"] >= 3  # how many, not which: that is behind auth

    # Notifications sent to the gateway are delivered by the delivery hosts.
    user_id, key = leader.code_user_and_template(push_tokens=[f"tok-{uuid.uuid4().hex[:8]}"])
    reply = leader.client().post("/v1/notifications", json={
        "user_id": user_id, "template_key": key, "message_data": {"code": "42"}})
    assert reply.status_code == 202, reply.text
    done = leader.wait_for_status(reply.json()["data"]["notification_id"], {"sent", "failed"})
    assert done["status"] == "sent", done


def test_a_lost_host_is_marked_down_and_its_placed_child_comes_back_with_it(
    leader: Stack, fcm_host: dict[str, Any], push_only_host: dict[str, Any],
    names: dict[str, str],
) -> None:
    settings = leader.settings
    kill_group(fcm_host["pgid"])  # the host crashes: every one of its actor processes
    took = wait(lambda: hosts_of(settings)[names["fcm"]]["status"] == "down", 10,
                 "the crashed host marked down")
    assert took < 10

    def push_state() -> str:
        actors = {a["name"]: a for a in _supervisor_view(push_only_host["settings"])["actors"]}
        return str(actors["push"]["state"])

    # No other host holds FCM credentials: the child waits for one instead of failing.
    wait(lambda: push_state() == "awaiting_placement", 10, "the push child awaiting a host")

    # The host comes back under the same name: it rejoins and the child is placed on it again.
    fcm_host["pgid"] = start_actor_system(fcm_host["settings"])
    wait(lambda: hosts_of(settings)[names["fcm"]]["status"] == "up", 15, "the host back up")
    wait(lambda: push_state() == "running", 30, "the push child placed again")
    actors = {a["name"]: a for a in _supervisor_view(push_only_host["settings"])["actors"]}
    assert actors["push"]["node"] == names["fcm"]
    assert os.getpgid(actors["push"]["pid"]) == fcm_host["pgid"]
