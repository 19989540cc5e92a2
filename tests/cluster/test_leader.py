"""The convention leader goes down: the other hosts go on accepting and delivering, and the
cluster re-forms by itself when it returns. Three nodes on this machine:

    leader    a delivery host (email) that leads the convention
    gateway   a gateway host serving HTTP, a member
    courier   a delivery host (email, push), a member
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clarion.config.settings import Settings
from clarion.node.launcher import start_actor_system, stop_actor_system
from tests.cluster.nodes import hosts_of, kill_group, node_settings, wait
from tests.stack import Stack, free_port, new_stack_settings, start_stack, stop_stack


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {role: f"{role}-{suffix}" for role in ("leader", "gateway", "courier")}


@pytest.fixture(scope="module")
def leader(provider_settings: Settings, names: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    port = free_port()
    settings = node_settings(provider_settings, names["leader"], "delivery", "email", port,
                             tmp_path_factory.mktemp("leader"), actor_port=port)
    node = {"settings": settings, "pgid": start_actor_system(settings)}
    yield node
    stop_actor_system(settings, node["pgid"])


@pytest.fixture(scope="module")
def gateway(leader: dict[str, Any], provider_settings: Settings, simulator: Any,
            names: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = node_settings(new_stack_settings(provider_settings), names["gateway"], "gateway",
                             "email,push", leader["settings"].actor_port,
                             tmp_path_factory.mktemp("gateway"))
    running = start_stack(settings, simulator, settings.state_dir)
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def courier(leader: dict[str, Any], provider_settings: Settings, names: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = node_settings(provider_settings, names["courier"], "delivery", "email,push",
                             leader["settings"].actor_port, tmp_path_factory.mktemp("courier"))
    node = {"settings": settings, "pgid": start_actor_system(settings)}
    yield node
    stop_actor_system(settings, node["pgid"])


def test_without_its_leader_the_cluster_accepts_and_delivers_and_it_re_forms_on_return(
    leader: dict[str, Any], gateway: Stack, courier: dict[str, Any], names: dict[str, str],
) -> None:
    settings = gateway.settings

    def members() -> set[str]:
        return set(hosts_of(settings)[names["leader"]].get("convention_members", []))

    wait(lambda: members() == {names["gateway"], names["courier"]}, 20,
         "both members in the leader's convention")

    kill_group(leader["pgid"])  # the leader's host crashes
    wait(lambda: hosts_of(settings)[names["leader"]]["status"] == "down", 10,
         "the leader marked down")
    # The gateway still accepts and the courier still delivers, both channels.
    user_id, key = gateway.code_user_and_template(push_tokens=[f"tok-{uuid.uuid4().hex[:8]}"])
    client = gateway.client()
    ids = []
    for i in range(5):
        reply = client.post("/v1/notifications", json={
            "user_id": user_id, "template_key": key, "message_data": {"code": i}})
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["data"]["notification_id"])
    for notification_id in ids:
        done = gateway.wait_for_status(notification_id, {"sent", "failed"}, timeout=30)
        assert done["status"] == "sent", done
    assert hosts_of(settings)[names["courier"]]["status"] == "up"

    # The leader returns: nobody touches the members, and they register with it again.
    leader["pgid"] = start_actor_system(leader["settings"])
    wait(lambda: hosts_of(settings)[names["leader"]]["status"] == "up", 20,
         "the leader beating again")
    wait(lambda: members() == {names["gateway"], names["courier"]}, 30,
         "the convention re-formed")
