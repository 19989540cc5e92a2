"""What a host runs and advertises, and how heartbeats become the cluster view (no actors)."""

from __future__ import annotations

import json

import pytest

from clarion.config.settings import Settings, SettingsError, load_settings
from clarion.supervision import cluster


@pytest.fixture
def settings(no_clarion_environment: None) -> Settings:
    return load_settings(node_name="h1")


def test_each_role_runs_its_own_children(settings: Settings) -> None:
    def children(**update: object) -> tuple[str, ...]:
        return cluster.children_for(settings.model_copy(update=update))

    assert children(node_role="all") == (
        "users", "templates", "publisher", "gateway", "events", "callbacks", "email", "push",
        "sms", "monitor")
    assert children(node_role="gateway") == (
        "users", "templates", "publisher", "gateway", "events", "callbacks", "monitor")
    assert children(node_role="delivery", node_channels="push") == ("push", "monitor")
    # A gateway host delivers nothing, whatever channels it names.
    assert children(node_role="gateway", node_channels="email") == (
        "users", "templates", "publisher", "gateway", "events", "callbacks", "monitor")


def test_node_options_are_validated(no_clarion_environment: None) -> None:
    with pytest.raises(SettingsError, match="CLARION_NODE_CHANNELS.*fax"):
        load_settings(node_channels="email,fax")
    with pytest.raises(SettingsError, match="CLARION_CONVENTION"):
        load_settings(convention="leader-without-port")
    with pytest.raises(SettingsError, match="CLARION_NODE_ROLE"):
        load_settings(node_role="everything")
    with pytest.raises(SettingsError, match="CLARION_NODE_NAME"):
        load_settings(node_name="no spaces/or slashes")
    assert load_settings(node_channels=" push ,email,push").channels == ("push", "email")


def test_capabilities_say_where_the_convention_is_and_what_the_host_holds(
    settings: Settings,
) -> None:
    alone = cluster.node_capabilities(settings)
    assert alone["Admin Port"] == settings.actor_port
    assert "Convention Address.IPv4" not in alone
    assert alone["clarion.provider.email"] == "outbox"

    member = settings.model_copy(update={"convention": "198.51.100.11:1950",
                                         "node_role": "delivery"})
    caps = cluster.node_capabilities(member)
    assert caps["Convention Address.IPv4"] == ("198.51.100.11", 1950)
    assert caps["clarion.node"] == "h1" and caps["clarion.role"] == "delivery"
    # Without credentials a member's delivery child must be placed elsewhere; alone, it
    # writes to the local outbox.
    assert cluster.needs_placement(member, "push")
    assert not cluster.needs_placement(settings, "push")


def test_the_convention_periods_reach_thespian_as_minutes_and_seconds(
    settings: Settings,
) -> None:
    tuned = settings.model_copy(update={"convention_reregistration_period": 75,
                                        "convention_restart_period": 3,
                                        "convention_miss_max": 4})
    assert cluster.convention_env(tuned) == {
        "CONVENTION_REREGISTRATION_PERIOD": "1:15",
        "CONVENTION_RESTART_PERIOD": "0:03",
        "CONVENTION_REGISTRATION_MISS_MAX": "4",
    }


def test_a_host_is_down_once_its_heartbeat_is_older_than_the_limit() -> None:
    raw = {
        b"fresh": json.dumps({"beat_at": 100.0, "role": "gateway"}),
        b"late": json.dumps({"beat_at": 94.0}),
        b"gone": json.dumps({"beat_at": 99.0, "state": "stopped"}),
        b"junk": b"not json",
    }
    hosts = cluster.view(raw, down_after=5.0, now=100.5)
    assert [(h["node"], h["status"], h["heartbeat_age"]) for h in hosts] == [
        ("fresh", "up", 0.5), ("gone", "stopped", 1.5), ("late", "down", 6.5)]
    assert hosts[0]["role"] == "gateway"


def test_heartbeats_round_trip_through_redis_and_long_dead_hosts_are_forgotten(
    test_settings: Settings,
) -> None:
    from clarion.persistence import cache

    client = cache.connect(test_settings.redis_url)
    client.delete(cluster.NODES_KEY)
    try:
        client.hset(cluster.NODES_KEY, "ancient", json.dumps({"beat_at": 1.0}))
        cluster.heartbeat(client, {"node": "h1", "role": "delivery", "actors": []})
        hosts = cluster.read_view(client, down_after=5.0)
        assert [(h["node"], h["status"], h["role"]) for h in hosts] == [
            ("h1", "up", "delivery")]
    finally:
        client.delete(cluster.NODES_KEY)


def test_this_machine_leads_a_convention_addressed_to_it(settings: Settings) -> None:
    leader = settings.model_copy(update={"convention": f"127.0.0.1:{settings.actor_port}"})
    assert cluster.is_leader(leader)
    other_port = settings.model_copy(update={"convention": f"127.0.0.1:{settings.actor_port + 1}"})
    assert not cluster.is_leader(other_port)
    elsewhere = settings.model_copy(update={"convention": f"198.51.100.77:{settings.actor_port}"})
    assert not cluster.is_leader(elsewhere)
    assert cluster.own_address(leader) == "127.0.0.1"


def test_silences_count_only_once_the_view_has_been_readable_for_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(cluster.time, "monotonic", lambda: clock[0])
    judge = cluster.SilenceJudge(grace=5.0)
    hosts: list[dict[str, object]] = [{"node": "h1", "status": "down"}]
    assert judge.saw(hosts)  # readable from the start: a silence counts at once
    assert not judge.saw(None)  # Redis did not answer
    clock[0] += 30
    # Back after 30 s: every host's last beat is old, but nobody could beat meanwhile.
    assert not judge.saw(hosts)
    clock[0] += 4.9
    assert not judge.saw(hosts)
    clock[0] += 0.2
    assert judge.saw(hosts)
