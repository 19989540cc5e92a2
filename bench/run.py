#!/usr/bin/env python
"""Clarion's benchmark: Clarion against a plain async reference and a hello-world HTTP ceiling.

    .venv/bin/python bench/run.py [--duration 10] [--connections 64] [--quick] [--no-profile]

One run sets up its own database, vhost and Redis db, starts the provider simulator, Clarion
(actor system + `clarion serve`), the ceiling and the reference, drives each with the same load
(wrk, or a Python fallback), measures Clarion's delivery latency end to end, profiles Clarion
under load, prints a table and writes bench/results/latest.json, latest.md and
throughput_latency.png. Everything it started is stopped at the end, on error and on Ctrl-C.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx

from bench import loadgen, report, services
from bench.profiling import CpuMeter, PySpy, ServiceCpuMeter, py_spy_path
from bench.services import BenchError, interrupts_deferred
from bench.simstate import BenchSimulatorState

RESULTS = ROOT / "bench" / "results"
USER_ID = "bench-user"
TEMPLATE_KEY = "bench-welcome"
CHANNELS = ("email", "push")
BODY = json.dumps({"user_id": USER_ID, "template_key": TEMPLATE_KEY,
                   "message_data": {"name": "Ada", "product": "Clarion"}},
                  separators=(",", ":"))
USER = {"user_id": USER_ID, "email_address": "bench-user@example.com",
        "preferred_language": "en", "push_tokens": ["bench-device-token-0001"]}
TEMPLATE = {
    "template_key": TEMPLATE_KEY, "language": "en",
    "subject": "Welcome to {{ product }}, {{ name }}!",
    "body": "Hello {{ name }},\n\nyour {{ product }} account is ready.\n\nThe {{ product }} team",
    "html_body": "<p>Hello <b>{{ name }}</b>,</p><p>your {{ product }} account is ready.</p>",
    "push_title": "Welcome, {{ name }}",
    "push_body": "Your {{ product }} account is ready.",
}


@dataclass
class Plan:
    quick: bool
    duration: float
    connections: int
    sweep: list[int]
    warmup: float
    drain_timeout: float
    slow_drain_timeout: float
    idle_count: int
    slow_latency_ms: int
    profile_seconds: float  # 0: no profiling
    tool: str = "auto"
    settle: float = 3.0  # seconds of quiet before each Clarion point
    hold_latency_ms: int = 4000  # provider latency while a backlog builds (< provider timeout)
    backlog_seconds: float = 20.0  # how long the backlog builds
    drain_profile_gil: bool = False  # profile the drain's GIL holder, not every thread
    role: str = "all"  # Clarion's node role: "all", or "gateway" (nothing delivers)
    workers: int = 1  # HTTP workers, for Clarion and both yardsticks alike
    delivery_actors: int = 1  # per channel
    # (notifications per request, connections) for the batch endpoint
    batch_points: list[tuple[int, int]] = field(
        default_factory=lambda: [(100, 4), (500, 4), (1000, 2)])


def make_plan(args: argparse.Namespace) -> Plan:
    plan = _make_plan(args)
    plan.role, plan.workers, plan.delivery_actors = args.role, args.workers, args.delivery_actors
    plan.drain_profile_gil = args.drain_profile_gil
    return plan


def _make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        duration = args.duration if args.duration_given else 3.0
        sweep = sorted({1, 16, args.connections})
        return Plan(True, duration, args.connections, sweep, warmup=1.0, drain_timeout=20,
                    slow_drain_timeout=20, idle_count=20, slow_latency_ms=100,
                    profile_seconds=5.0 if args.profile else 0.0, tool=args.tool, settle=1.0,
                    hold_latency_ms=2000, backlog_seconds=duration)
    sweep = sorted({1, 4, 16, 64, args.connections})
    return Plan(False, args.duration, args.connections, sweep, warmup=3.0, drain_timeout=60,
                slow_drain_timeout=90, idle_count=50, slow_latency_ms=100,
                profile_seconds=0.0 if args.no_profile else 8.0, tool=args.tool)


@dataclass
class Run:
    plan: Plan
    workdir: Path
    tool: str = "wrk"
    results: dict[str, Any] = field(default_factory=dict)
    # Set as the run goes.
    iso: services.Isolation | None = None
    sim: Any = None
    settings: Any = None
    actor_pgid: int | None = None
    http_proc: subprocess.Popen[bytes] | None = None
    api_key: str = ""
    base_url: str = ""
    actor_groups: set[int] = field(default_factory=set)
    process_names: dict[str, int] = field(default_factory=dict)
    extra_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # -- helpers ------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def load(self, port: int, connections: int, duration: float, *, auth: str | None,
             rate: float = 0.0, record_ids: bool = False,
             cpu: dict[str, int] | None = None) -> dict[str, Any]:
        meter = CpuMeter(cpu or {})
        service_meter = ServiceCpuMeter(services.service_processes())
        others = len(other_activity(self.settings.actor_port if self.settings else None))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0, wall0 = services.machine_busy_seconds()
        meter.start()
        service_meter.start()
        summary = loadgen.run(loadgen.Load(port, BODY, auth, connections, duration, rate,
                                           record_ids=record_ids), self.tool, self.workdir)
        shares = meter.stop()
        summary["service_cpu_cores"] = service_meter.stop()
        busy1, wall1 = services.machine_busy_seconds()
        summary["machine_busy_cores"] = round((busy1 - busy0) / max(1e-6, wall1 - wall0), 2)
        summary["other_processes"] = others  # test runs / other Clarions sharing the machine
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary["client_cpu_cores"] = round(
            (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            / max(1e-6, summary["ended_at"] - summary["started_at"]), 3)
        if shares:
            summary["cpu_cores"] = shares
            summary["server_cpu_cores"] = round(sum(shares.values()), 3)
        lat = summary["latency_ms"]
        extra = f", {summary['non2xx']} non-2xx" if summary["non2xx"] else ""
        errors = sum(summary["errors"].values()) - summary["errors"].get("status", 0)
        extra += f", {errors} socket errors" if errors else ""
        self.log(f"  {connections:>3} conn{f' @ {rate:.0f}/s' if rate else ''}:"
                 f" {summary['accepted_per_s']:8.1f} accepted/s, p50 {lat['p50']:.2f} ms,"
                 f" p99 {lat['p99']:.2f} ms{extra}")
        return summary

    # -- setting up -------------------------------------------------------------------------

    def start_clarion(self, stack: contextlib.ExitStack) -> None:
        from clarion.config.settings import load_settings, settings_to_env
        from clarion.persistence import api_keys, database
        from clarion.simulator.credentials import write_service_account
        from clarion.simulator.server import SimulatorServer
        from clarion.node.launcher import start_actor_system, stop_actor_system

        self.log("isolation: database, vhost and Redis db 'clarion_bench' / 14")
        self.iso = services.Isolation()
        stack.callback(services.shielded(self._teardown_isolation))
        self.iso.setup()

        self.sim = SimulatorServer(state=BenchSimulatorState())
        stack.callback(services.shielded(self.sim.stop))
        self.sim.start()
        credentials = write_service_account(self.workdir / "fcm-service-account.json",
                                            token_uri=self.sim.base_url + "/token")
        state_dir = self.workdir / "clarion-state"
        self.settings = load_settings(
            database_url=self.iso.database_url, redis_url=self.iso.redis_url,
            amqp_url=self.iso.amqp_url, state_dir=state_dir,
            actor_port=services.free_port(), http_port=services.free_port(),
            http_workers=self.plan.workers, internal_secret=None,
            node_role=self.plan.role, delivery_actors=self.plan.delivery_actors,
            sendgrid_api_key="SG.bench-key", sendgrid_host=self.sim.base_url,
            fcm_credentials_file=credentials, fcm_endpoint=self.sim.base_url,
        )
        settings = self.settings
        self.log(f"simulator on {self.sim.base_url}; actor system on port {settings.actor_port}")
        # Registered first so it runs last: whatever the orderly stop leaves of the actor system
        # (found by its port, since Thespian's admin leaves the launcher's process group) dies.
        stack.callback(services.shielded(self._reap_actor_system))
        with interrupts_deferred():
            # Held: an interrupt inside the launcher would leave its processes unknown.
            self.actor_pgid = start_actor_system(settings)
            stack.callback(services.shielded(stop_actor_system, settings, self.actor_pgid))
        self.actor_groups = set(services.actor_system_processes(settings.actor_port).values())
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
        env.update(settings_to_env(settings))
        with interrupts_deferred():
            self.http_proc = services.start_process(
                [sys.executable, "-m", "clarion.cli", "serve"], self.workdir / "clarion-http.out",
                env=env, cwd=ROOT)
            stack.callback(services.shielded(services.stop_process_group, self.http_proc))
        self.base_url = f"http://{settings.http_host}:{settings.http_port}"
        services.wait_http(self.base_url + "/health", self.http_proc, 60)
        with database.connect(settings.database_url, autocommit=True) as conn:
            self.api_key = api_keys.create_api_key(conn, "bench", scope="admin")
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=15) as client:
            for path, payload in (("/v1/users", USER), ("/v1/templates", TEMPLATE)):
                reply = client.post(path, json=payload)
                if reply.status_code != 201:
                    raise BenchError(f"seeding {path}: HTTP {reply.status_code} {reply.text}")
        self.log(f"Clarion serving on {self.base_url} (pid {self.http_proc.pid}),"
                 f" user '{USER_ID}' and template '{TEMPLATE_KEY}' seeded through the API")

    def _reap_actor_system(self) -> None:
        if self.settings is None:
            return
        left = services.actor_system_processes(self.settings.actor_port)
        groups = self.actor_groups | set(left.values())
        # `stop_actor_system` returns once the admin acknowledged the shutdown; the actors may
        # still be exiting. Give them the time an orderly exit needs before forcing it.
        if not services.wait_groups_gone(groups, 10.0):
            left = services.actor_system_processes(self.settings.actor_port)
            names = {pid: name for name, pid in self.process_names.items()}
            which = ", ".join(f"{names.get(pid, 'pid')} {pid}" for pid in sorted(left))
            self.log(f"clean-up: left running after `stop_actor_system`: {which or 'none'}"
                     f" (process groups {sorted(groups)}); terminating them")
            self.results.setdefault("left_after_orderly_stop", []).append(which)
            services.reap_groups(groups)

    def _teardown_isolation(self) -> None:
        if self.iso is not None:
            self.log("clean-up: vhost, Redis db 14, database clarion_bench")
            self.iso.teardown()

    def start_target(self, stack: contextlib.ExitStack,
                     name: str) -> tuple[int, subprocess.Popen[bytes]]:
        port = services.free_port()
        env = dict(os.environ)
        if name == "reference":
            env.update(BENCH_REF_DATABASE_URL=self.iso.database_url,  # type: ignore[union-attr]
                       BENCH_REF_REDIS_URL=self.iso.redis_url,  # type: ignore[union-attr]
                       BENCH_REF_AMQP_URL=self.iso.amqp_url,  # type: ignore[union-attr]
                       BENCH_REF_QUEUE="bench.reference", BENCH_REF_API_KEY=self.api_key)
        with interrupts_deferred():
            proc = services.start_process(
                [sys.executable, "-m", "bench.targets", name, "--port", str(port),
                 "--workers", str(self.plan.workers)],
                self.workdir / f"{name}.out", env=env, cwd=ROOT)
            stack.callback(services.shielded(services.stop_process_group, proc))
        self.extra_procs.append(proc)
        services.wait_http(f"http://127.0.0.1:{port}/health", proc, 30)
        return port, proc

    def clarion_processes(self) -> dict[str, int]:
        """Every Clarion process by name: the HTTP worker, each actor, Thespian's own."""
        assert self.http_proc is not None and self.actor_pgid is not None
        named: dict[str, int] = {"http": self.http_proc.pid}
        reply = httpx.get(self.base_url + "/v1/system/actors", timeout=10,
                          headers={"Authorization": f"Bearer {self.api_key}"})
        data = reply.json()["data"]
        named["supervisor"] = data["supervisor"]["pid"]
        for child in data["children"]:
            if child.get("pid"):
                named[child["name"]] = child["pid"]
        known = set(named.values())
        admin = services.ppid_of(named["supervisor"])
        for pid in sorted(services.actor_system_processes(self.settings.actor_port)):
            if pid in known:
                continue
            # The Supervisor's parent is Thespian's admin; the other one is its logger.
            named["thespian-admin" if pid == admin else f"thespian-logger-{pid}"] = pid
        self.process_names = named
        return named

    # -- phases -----------------------------------------------------------------------------

    def sweep(self, name: str, port: int, auth: str | None,
              cpu: dict[str, int]) -> list[dict[str, Any]]:
        plan = self.plan
        self.log(f"{name}: warm-up {plan.warmup:.0f} s")
        self.load(port, 16, plan.warmup, auth=auth)
        points = []
        for conns in plan.sweep:
            points.append(self.load(port, conns, plan.duration, auth=auth, cpu=cpu))
        return points

    def clarion_point(self, connections: int, duration: float, cpu: dict[str, int],
                      rate: float = 0.0, drain_timeout: float | None = None) -> dict[str, Any]:
        # Each point starts from a quiet Clarion: the previous load's stragglers (requests wrk
        # abandoned at its deadline, their deliveries) get a moment to finish.
        time.sleep(self.plan.settle)
        self.sim.state.clear_messages()
        point = self.load(self.settings.http_port, connections, duration, auth=self.api_key,
                          rate=rate, record_ids=True, cpu=cpu)
        ids = point.pop("ids")
        if self.plan.role == "gateway":  # nothing delivers on this node: the accept path alone
            point["delivery"] = {"delivered": 0, "expected": 0}
            point["gateway_batches"] = self.gateway_batches(point["started_at"], point["ended_at"])
            return point
        point["delivery"] = self.collect_delivery(ids, point["started_at"], point["ended_at"],
                                                  drain_timeout or self.plan.drain_timeout)
        point["gateway_batches"] = self.gateway_batches(point["started_at"], point["ended_at"])
        b = point["gateway_batches"]
        if b.get("batches"):
            self.log(f"      Gateway insert batches: {b['batches']} for {b['rows']} notifications,"
                     f" mean {b['mean']}, p50 {b['p50']}, max {b['max']}")
        d = point["delivery"]
        self.log(f"      delivered {d['delivered']}/{d['expected']} in"
                 f" {d.get('drain_s', 0):.1f} s after the load; accepted→received p50"
                 f" {d.get('e2e_ms', {}).get('p50', float('nan')):.1f} ms, p99"
                 f" {d.get('e2e_ms', {}).get('p99', float('nan')):.1f} ms; sent→received p50"
                 f" {d.get('e2e_from_sent_ms', {}).get('p50', float('nan')):.1f} ms, p99"
                 f" {d.get('e2e_from_sent_ms', {}).get('p99', float('nan')):.1f} ms;"
                 f" {d.get('deliveries_per_s', 0):.0f} deliveries/s"
                 f" ({d.get('emails_per_s', 0):.0f} emails/s)")
        return point

    def gateway_batches(self, started: float, ended: float) -> dict[str, Any]:
        """How many notifications each Gateway insert carried during a load.

        Rows written in one transaction share its `now()`, the default of `created_at`: grouping
        the load's notifications by it counts the batches the Gateway persisted (and so, one for
        one, the batches it published).
        """
        import psycopg

        assert self.iso is not None
        try:
            with psycopg.connect(self.iso.database_url, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT count(*) FROM notifications WHERE created_at BETWEEN to_timestamp(%s)"
                    " AND to_timestamp(%s) GROUP BY created_at", (started - 1, ended + 15),
                ).fetchall()
        except psycopg.Error as exc:
            return {"error": str(exc)}
        sizes = sorted(int(r[0]) for r in rows)
        if not sizes:
            return {}
        return {"batches": len(sizes), "rows": sum(sizes),
                "mean": round(sum(sizes) / len(sizes), 2), "p50": sizes[len(sizes) // 2],
                "p90": sizes[int(len(sizes) * 0.9)], "max": sizes[-1],
                "single_share": round(sum(1 for x in sizes if x == 1) / len(sizes), 3)}

    def collect_delivery(self, ids: list[tuple[str, float, float | None]], started: float,
                         ended: float, timeout: float) -> dict[str, Any]:
        """Wait (bounded) for the simulator to receive every accepted notification on every
        channel, then compute accepted → received (and sent → received) latency and rates."""
        accepted = {nid: at for nid, at, _ in ids}
        sent_at = {nid: sent for nid, _, sent in ids if sent}
        expected = [(nid, ch) for nid in accepted for ch in CHANNELS]
        state: BenchSimulatorState = self.sim.state
        deadline = time.monotonic() + timeout
        last_count, last_progress = -1, time.monotonic()
        while time.monotonic() < deadline:
            snapshot = state.received()
            count = sum(1 for k in expected if k in snapshot)
            if count == len(expected):
                break
            if count != last_count:
                last_count, last_progress = count, time.monotonic()
            elif time.monotonic() - last_progress > 20:
                break  # no progress for 20 s: something is stuck; report what arrived
            time.sleep(0.25)
        received = state.received()
        e2e: list[float] = []
        from_sent: list[float] = []
        per_channel: dict[str, list[float]] = {ch: [] for ch in CHANNELS}
        times: dict[str, list[float]] = {ch: [] for ch in CHANNELS}
        for (nid, ch) in expected:
            at = received.get((nid, ch))
            if at is None:
                continue
            ms = (at - accepted[nid]) * 1000
            e2e.append(ms)
            per_channel[ch].append(ms)
            times[ch].append(at)
            if nid in sent_at:
                from_sent.append((at - sent_at[nid]) * 1000)
        all_times = sorted(t for ts in times.values() for t in ts)
        out: dict[str, Any] = {"expected": len(expected), "delivered": len(e2e),
                               "simulator": state.counters(),
                               "e2e_ms": report.percentiles(e2e),
                               "e2e_from_sent_ms": report.percentiles(from_sent),
                               "e2e_ms_by_channel": {ch: report.percentiles(v)
                                                     for ch, v in per_channel.items()},
                               "received_before_accepted": sum(1 for v in e2e if v < 0)}
        if all_times:
            span = max(1e-3, all_times[-1] - all_times[0])
            out["deliveries_per_s"] = round(len(all_times) / span, 1)
            if len(times["email"]) > 1:
                email_span = max(1e-3, max(times["email"]) - min(times["email"]))
                out["emails_per_s"] = round(len(times["email"]) / email_span, 1)
            during = sum(1 for t in all_times if started <= t <= ended)
            out["deliveries_per_s_during_load"] = round(during / max(1e-3, ended - started), 1)
            out["drain_s"] = round(max(0.0, all_times[-1] - ended), 2)
        return out

    def idle_latency(self, count: int) -> dict[str, Any]:
        """`count` notifications one at a time: POST, wait until both channels arrived."""
        state: BenchSimulatorState = self.sim.state
        state.clear_messages()
        post_ms: list[float] = []
        e2e: list[float] = []
        from_sent: list[float] = []
        both: list[float] = []
        by_channel: dict[str, list[float]] = {ch: [] for ch in CHANNELS}
        failures: list[str] = []
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=15) as client:
            for _ in range(count):
                sent = time.time()
                reply = client.post("/v1/notifications", content=BODY)
                accepted = time.time()
                if reply.status_code != 202:
                    failures.append(f"HTTP {reply.status_code}: {reply.text[:300]}")
                    if len(failures) >= 5 and not post_ms:
                        raise BenchError("Clarion refuses every notification: " + failures[0])
                    continue
                post_ms.append((accepted - sent) * 1000)
                nid = reply.json()["data"]["notification_id"]
                if self.plan.role == "gateway":
                    time.sleep(0.02)
                    continue  # nothing delivers on this node
                keys = [(nid, ch) for ch in CHANNELS]
                found = state.wait_for_ids(keys, timeout=10)
                if len(found) != len(keys):
                    failures.append(f"{nid} not delivered on every channel within 10 s")
                for (_, ch), at in found.items():
                    ms = (at - accepted) * 1000
                    e2e.append(ms)
                    from_sent.append((at - sent) * 1000)
                    by_channel[ch].append(ms)
                if len(found) == len(keys):
                    both.append((max(found.values()) - accepted) * 1000)
                time.sleep(0.02)
        return {"count": count, "failures": failures,
                "accept_latency_ms": report.percentiles(post_ms),
                "e2e_ms": report.percentiles(e2e), "e2e_both_channels_ms": report.percentiles(both),
                "e2e_from_sent_ms": report.percentiles(from_sent),
                "e2e_ms_by_channel": {ch: report.percentiles(v) for ch, v in by_channel.items()},
                "expected": count * len(CHANNELS), "delivered": len(e2e)}

    def batch_endpoint(self, per_request: int, connections: int, duration: float,
                       cpu: dict[str, int]) -> dict[str, Any]:
        """`POST /v1/notifications/batch` under load: notifications accepted per second, each
        confirmed by the broker before its answer (bench/batchload.py drives it)."""
        body = self.workdir / f"batch-{per_request}.json"
        item = json.loads(BODY)
        body.write_text(json.dumps({"notifications": [
            {**item, "message_data": {**item["message_data"], "n": i}}
            for i in range(per_request)]}))
        meter = CpuMeter(cpu)
        service_meter = ServiceCpuMeter(services.service_processes())
        busy0, wall0 = services.machine_busy_seconds()
        meter.start()
        service_meter.start()
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("batchload.py")), self.base_url,
             self.api_key, str(body), str(connections), str(duration)],
            capture_output=True, text=True, timeout=duration + 120, check=True)
        point: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        shares = meter.stop()
        point["service_cpu_cores"] = service_meter.stop()
        busy1, wall1 = services.machine_busy_seconds()
        point.update(per_request=per_request, connections=connections, cpu_cores=shares,
                     machine_busy_cores=round((busy1 - busy0) / max(1e-6, wall1 - wall0), 2))
        self.log(f"  {per_request} per request x {connections} conn:"
                 f" {point['accepted_per_s']:.0f} notifications/s accepted,"
                 f" request p50 {point['latency_ms']['p50']} ms,"
                 f" p99 {point['latency_ms']['p99']} ms; statuses {point['statuses']}")
        # What was accepted is delivered in the background; purge it so that the next
        # phases measure their own load only.
        self.iso.purge_work_queues()  # type: ignore[union-attr]
        time.sleep(self.plan.settle)
        return point

    def backlog_drain(self, latency_ms: int, hold_ms: int) -> dict[str, Any]:
        """Delivery capacity at `latency_ms` from a backlog, independent of the accept rate.

        If the API accepts fewer notifications than the delivery actors can send, a steady load
        never queues anything and deliveries/s only repeats the accept rate. Here the simulator
        holds each call `hold_ms` (below the provider timeout) while a load is accepted, so the
        delivery slots stay busy and messages wait in RabbitMQ; then the latency drops to
        `latency_ms`. Once the last held call has returned (`hold_ms` after the switch) every
        call takes `latency_ms`: the rate from then to the last receipt is the capacity.
        """
        plan = self.plan
        self.sim.state.clear_messages()
        self.set_provider_latency(hold_ms)
        try:
            point = self.load(self.settings.http_port, plan.connections, plan.backlog_seconds,
                              auth=self.api_key, record_ids=True)
        finally:
            self.set_provider_latency(latency_ms)
        switched = time.time()
        ids = point.pop("ids")
        # The delivery actors' profile while they drain (the profile pass below sees them only
        # at the accept rate): from when the held calls have returned, for as long as a quick
        # run's backlog lasts.
        spy = None
        if plan.profile_seconds > 0 and py_spy_path() is not None:
            targets = {f"drain-{name}": pid for name, pid in self.process_names.items()
                       if name in CHANNELS}
            spy = PySpy(targets, RESULTS, 2.0 if plan.quick else plan.profile_seconds,
                        gil=plan.drain_profile_gil)
        # CPU from the same moment: Clarion's processes and this one (the simulator's thread).
        meter = CpuMeter({**self.process_names, "bench (simulator)": os.getpid(),
                          **services.service_processes()})
        busy0: list[tuple[float, float]] = []

        def steady() -> None:
            meter.start()
            busy0.append(services.machine_busy_seconds())
            if spy is not None:
                spy.start()

        starter = threading.Timer(hold_ms / 1000 + 0.05, steady)
        starter.start()
        try:
            delivery = self.collect_delivery(ids, point["started_at"], point["ended_at"],
                                             plan.slow_drain_timeout)
        finally:
            starter.join()
            cpu = meter.stop()
            busy1 = services.machine_busy_seconds()
            if spy is not None:
                drain_profile = spy.stop()
                spy.kill()
        steady_from = switched + hold_ms / 1000 + 0.05  # the held calls have all returned
        received = self.sim.state.received()
        wanted = {nid for nid, _, _ in ids}
        out: dict[str, Any] = {"accepted": len(ids), "hold_ms": hold_ms,
                               "latency_ms": latency_ms, "delivered": delivery["delivered"],
                               "expected": delivery["expected"]}
        for channel in CHANNELS:
            times = sorted(at for (nid, ch), at in received.items()
                           if ch == channel and nid in wanted and at >= steady_from)
            out[f"{channel}_backlog"] = len(times)
            # Too few messages left once the held calls returned: no rate worth reporting.
            if len(times) >= 100 and times[-1] - times[0] >= 0.3:
                out[f"{channel}s_per_s"] = round(len(times) / (times[-1] - times[0]), 1)
        self.log(f"  backlog: {out.get('email_backlog')} emails, {out.get('push_backlog')} pushes"
                 f" left once the held calls returned: {out.get('emails_per_s', 'too few for a')}"
                 f" emails/s, {out.get('pushs_per_s', 'too few for a')} pushes/s")
        for service in ("postgres", "rabbitmq", "redis"):  # one entry per service, all its pids
            parts = [v for k, v in cpu.items() if k.startswith(f"{service}:")]
            cpu = {k: v for k, v in cpu.items() if not k.startswith(f"{service}:")}
            if parts:
                cpu[service] = round(sum(parts), 3)
        cpu = dict(sorted(cpu.items(), key=lambda kv: -kv[1]))
        out["cpu_cores"] = cpu
        if busy0:
            out["machine_busy_cores"] = round(
                (busy1[0] - busy0[0][0]) / max(1e-6, busy1[1] - busy0[0][1]), 2)
        self.log(f"  while draining: machine busy {out.get('machine_busy_cores')} cores; "
                 + ", ".join(f"{name} {cores:.2f}" for name, cores in list(cpu.items())[:8]))
        if spy is not None:
            out["profile"] = drain_profile
            for name, summary in drain_profile.items():
                for kind, shares in summary.get("threads", {}).items():
                    top = ", ".join(f"{c} {p}%" for c, p in shares["wall_pct"][:4])
                    self.log(f"  {name} {kind}: {top}")
                hot = ", ".join(f"{f} {p}%" for f, p in summary.get("self_pct_of_busy", [])[:6])
                self.log(f"  {name} busiest frames: {hot}")
        return out

    def set_provider_latency(self, ms: int) -> None:
        reply = httpx.put(self.sim.base_url + "/_sim/config", json={"latency_ms": ms}, timeout=5)
        reply.raise_for_status()

    def profile(self, cpu: dict[str, int]) -> dict[str, Any]:
        wanted = ["http", "gateway", "users", "templates", "publisher", "email", "push"]
        targets = {name: pid for name, pid in cpu.items()
                   if any(name.startswith(w) for w in wanted)}
        seconds = self.plan.profile_seconds
        self.log(f"profile: py-spy on {', '.join(targets)} for {seconds:.0f} s under"
                 f" {self.plan.connections} connections")
        spy = PySpy(targets, RESULTS, seconds)
        spy.start()
        try:
            time.sleep(0.5)  # let py-spy attach before the load starts
            self.sim.state.clear_messages()
            load = self.load(self.settings.http_port, self.plan.connections, seconds,
                             auth=self.api_key)
            summaries = spy.stop()
        finally:
            spy.kill()
        summaries["_load"] = {"accepted_per_s": load["accepted_per_s"],
                              "latency_ms": load["latency_ms"]}
        return summaries


# -- the whole run ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def run(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("uvicorn", "starlette", "uvloop", "httptools", "thespian", "pika", "aio-pika",
                    "psycopg", "redis", "Jinja2", "sendgrid", "firebase-admin", "py-spy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    pg = redis_v = "?"
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(services.PG_ADMIN_URL, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            pg = str(row[0]) if row else "?"
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis(socket_timeout=5)
        redis_v = str(client.info("server")["redis_version"])
        client.close()
    wrk_v = run(["wrk", "-v"]).splitlines()[0] if shutil.which("wrk") else None
    return {
        "nproc": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": cpu_model, "kernel": platform.release(),
        "python": platform.python_version(), "rabbitmq": run(["rabbitmqctl", "-q", "version"]),
        "postgresql": pg, "redis": redis_v, "wrk": wrk_v, "packages": versions,
    }


def _point(results: dict[str, Any], target: str, connections: int) -> dict[str, Any] | None:
    return next((p for p in results.get("sweep", {}).get(target, [])
                 if p["connections"] == connections), None)


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The fast-path issue's targets, as ratios against the reference of the same run."""
    out = []
    setup = results.get("setup", {})
    role, workers = setup.get("role", "all"), setup.get("workers", 1)
    where = f"{'gateway-only' if role == 'gateway' else 'all-in-one'} node, {workers} worker(s)"
    clarion1, reference1 = _point(results, "clarion", 1), _point(results, "reference", 1)
    if clarion1 and reference1:
        ratio = clarion1["latency_ms"]["p50"] / max(1e-9, reference1["latency_ms"]["p50"])
        out.append({"goal": f"idle POST p50 ≤ 2× the reference's ({where})",
                    "measured": f"{clarion1['latency_ms']['p50']:.2f} ms vs"
                                f" {reference1['latency_ms']['p50']:.2f} ms: {ratio:.2f}×",
                    "met": ratio <= 2})
    ratio = results.get("ratios", {}).get("clarion_vs_reference")
    if ratio is not None:
        wanted = 1.5 if role == "gateway" else 1.0
        out.append({"goal": f"accepted/s at 64 connections ≥ {wanted}× the reference's ({where})",
                    "measured": f"{ratio:.2f}×", "met": ratio >= wanted})
    main = _point(results, "clarion", 64)
    if main and main.get("server_cpu_cores") and main.get("accepted_per_s"):
        ref = _point(results, "reference", 64)
        mine = main["server_cpu_cores"] / main["accepted_per_s"] * 1e6
        theirs = (ref["server_cpu_cores"] / ref["accepted_per_s"] * 1e6
                  if ref and ref.get("server_cpu_cores") and ref.get("accepted_per_s") else None)
        out.append({"goal": "CPU per accepted notification (reported, with the reference's)",
                    "measured": f"{mine:.0f} µs vs {theirs:.0f} µs" if theirs else f"{mine:.0f} µs",
                    "met": None})
    budget = cpu_budget(results, role)
    if budget:
        out.append(budget)
    half = results.get("delivery", {}).get("half_rate")
    if half:
        p99 = half["latency_ms"]["p99"]
        out.append({"goal": "p99 < 50 ms at half of Clarion's max rate",
                    "measured": f"p99 {p99:.1f} ms at {half['accepted_per_s']:.0f}/s"
                                f" (offered {half['offered_rate']:.0f}/s)",
                    "met": p99 < 50})
    batch = results.get("batch")
    if batch:
        best = max(batch, key=lambda p: p["accepted_per_s"])
        out.append({"goal": f"batch endpoint ≥ 10,000 notifications/s ({where})",
                    "measured": f"{best['accepted_per_s']:.0f}/s ({best['per_request']} per"
                                f" request, {best['connections']} connections)",
                    "met": best["accepted_per_s"] >= 10_000 if role == "gateway" else None})
    slow = results.get("delivery", {}).get("latency_100ms")
    if slow and slow.get("emails_per_s") is not None:
        backlog = slow.get("backlog") or {}
        deliveries = backlog.get("deliveries_per_s") or (
            (backlog.get("emails_per_s") or 0) + (backlog.get("pushs_per_s") or 0)) or None
        out.append({"goal": "draining a backlog at 100 ms, both channels: ≥ 1,500 deliveries/s",
                    "measured": f"{deliveries:.0f} deliveries/s"
                                f" ({backlog.get('emails_per_s', 0):.0f} emails/s)"
                                if deliveries else "not measured",
                    "met": deliveries is not None and deliveries >= 1500})
    return out


def cost_per_notification(point: dict[str, Any]) -> dict[str, float] | None:
    """CPU µs per accepted notification at a load point: the server's own processes, each
    service, the load generator."""
    rate = point.get("accepted_per_s")
    if not rate or point.get("server_cpu_cores") is None:
        return None
    cost = {"server": point["server_cpu_cores"] / rate * 1e6}
    for service, cores in (point.get("service_cpu_cores") or {}).items():
        cost[service] = cores / rate * 1e6
    if point.get("client_cpu_cores") is not None:
        cost["client"] = point["client_cpu_cores"] / rate * 1e6
    return {k: round(v) for k, v in cost.items()}


def cpu_budget(results: dict[str, Any], role: str) -> dict[str, Any] | None:
    """Would the accept target fit the machine at the CPU this run measured per notification?
    Cores needed at 1.5× (gateway) or 1× (all-in-one) the reference's rate = every process's
    µs per notification × that rate, against the machine's cores."""
    mine, ref = _point(results, "clarion", 64), _point(results, "reference", 64)
    if not mine or not ref:
        return None
    c_mine, c_ref = cost_per_notification(mine), cost_per_notification(ref)
    if not c_mine or not c_ref or not ref.get("accepted_per_s"):
        return None
    target_rate = ref["accepted_per_s"] * (1.5 if role == "gateway" else 1.0)
    cores = results.get("meta", {}).get("nproc") or os.cpu_count() or 1
    services_only = sum(v for k, v in c_mine.items() if k not in ("server", "client"))
    needed = sum(c_mine.values()) * target_rate / 1e6

    def fmt(cost: dict[str, float]) -> str:
        return ", ".join(f"{k} {v}" for k, v in cost.items())

    return {"goal": f"CPU budget at the accept target ({target_rate:.0f}/s on {cores} cores)",
            "measured": f"Clarion µs/notification: {fmt(c_mine)}; reference: {fmt(c_ref)};"
                        f" at the target Clarion's path needs {needed:.2f} cores, its services"
                        f" alone {services_only * target_rate / 1e6:.2f}",
            "met": None}


def strip_point(point: dict[str, Any]) -> dict[str, Any]:
    keep = ("connections", "offered_rate", "duration_s", "requests", "ok2xx", "non2xx",
            "statuses", "errors", "latency_ms", "accepted_per_s", "server_cpu_cores",
            "client_cpu_cores", "machine_busy_cores", "other_processes", "cpu_cores",
            "service_cpu_cores", "delivery",
            "gateway_batches", "tool")
    return {k: point[k] for k in keep if k in point}


def execute(run: Run) -> None:
    plan = run.plan
    results = run.results
    with contextlib.ExitStack() as stack:
        run.start_clarion(stack)
        clarion_cpu = run.clarion_processes()
        # With several HTTP workers the work is in uvicorn's children (the actors' processes
        # have their own names already: only the HTTP server's children are added).
        clarion_cpu.update(services.with_workers({"http": clarion_cpu["http"]}))
        results["clarion_processes"] = clarion_cpu

        for name in ("ceiling", "reference"):
            with contextlib.ExitStack() as target_stack:
                port, proc = run.start_target(target_stack, name)
                run.log(f"{name} on port {port} (pid {proc.pid})")
                auth = run.api_key if name == "reference" else None
                points = run.sweep(name, port, auth,
                                   cpu=services.with_workers({name: proc.pid}))
                results["sweep"][name] = [strip_point(p) for p in points]
            # Its process group is stopped here: the next target has the machine to itself.

        run.log(f"clarion: idle latency, {plan.idle_count} notifications one at a time")
        results["delivery"]["idle"] = run.idle_latency(plan.idle_count)
        idle = results["delivery"]["idle"]
        run.log(f"  POST p50 {idle['accept_latency_ms'].get('p50')} ms;"
                f" accepted → received p50 {idle['e2e_ms'].get('p50')} ms,"
                f" p99 {idle['e2e_ms'].get('p99')} ms; failures: {len(idle['failures'])}")

        run.log(f"clarion: warm-up {plan.warmup:.0f} s, then the sweep (provider latency 0 ms)")
        run.clarion_point(16, plan.warmup, {})
        points = []
        for conns in plan.sweep:
            points.append(run.clarion_point(conns, plan.duration, clarion_cpu))
        results["sweep"]["clarion"] = [strip_point(p) for p in points]
        main = next(p for p in points if p["connections"] == plan.connections)
        results["cpu"]["clarion_main"] = main.get("cpu_cores", {})
        results["delivery"]["latency_0ms"] = {**main["delivery"],
                                              "accepted_per_s": main["accepted_per_s"],
                                              "accept_latency_ms": main["latency_ms"]}

        best = max(p["accepted_per_s"] for p in points)
        rate = round(best / 2)
        run.log(f"clarion: paced at half the best rate ({rate}/s), {plan.connections} connections")
        half = run.clarion_point(plan.connections, plan.duration, clarion_cpu, rate=rate)
        results["delivery"]["half_rate"] = {**half["delivery"], "offered_rate": rate,
                                            "accepted_per_s": half["accepted_per_s"],
                                            "latency_ms": half["latency_ms"],
                                            "accept_latency_ms": half["latency_ms"]}

        run.log("clarion: the batch endpoint (POST /v1/notifications/batch)")
        results["batch"] = [run.batch_endpoint(size, conns, plan.duration, clarion_cpu)
                            for size, conns in plan.batch_points]

        if plan.role == "gateway":
            run.log("gateway-only node: no delivery phases")
            results["clarion_restarts"] = {
                c["name"]: c["restarts"] for c in httpx.get(
                    run.base_url + "/v1/system/actors", timeout=10,
                    headers={"Authorization": f"Bearer {run.api_key}"}
                ).json()["data"]["children"]}
            return
        run.log(f"clarion: provider latency {plan.slow_latency_ms} ms,"
                f" {plan.connections} connections")
        run.set_provider_latency(plan.slow_latency_ms)
        try:
            slow = run.clarion_point(plan.connections, plan.duration, clarion_cpu,
                                     drain_timeout=plan.slow_drain_timeout)
        finally:
            run.set_provider_latency(0)
        results["delivery"]["latency_100ms"] = {**slow["delivery"],
                                                "provider_latency_ms": plan.slow_latency_ms,
                                                "accepted_per_s": slow["accepted_per_s"],
                                                "accept_latency_ms": slow["latency_ms"]}
        run.log(f"clarion: delivery capacity at {plan.slow_latency_ms} ms from a backlog"
                f" (calls held {plan.hold_latency_ms} ms while it builds)")
        time.sleep(plan.settle)
        try:
            results["delivery"]["latency_100ms"]["backlog"] = run.backlog_drain(
                plan.slow_latency_ms, plan.hold_latency_ms)
        finally:
            run.set_provider_latency(0)
        backlog = results["delivery"]["latency_100ms"]["backlog"]
        if backlog["delivered"] < backlog["expected"]:
            depths = run.iso.queue_depths()  # type: ignore[union-attr]
            run.log(f"  backlog not delivered within {plan.slow_drain_timeout:.0f} s: {depths};"
                    " purging it")
            backlog["purged"] = depths
            run.iso.purge_work_queues()  # type: ignore[union-attr]
            time.sleep(2)

        if plan.profile_seconds > 0:
            if py_spy_path() is None:
                run.log("profile: skipped (py-spy is not installed)")
            else:
                results["profile"] = run.profile(clarion_cpu)
                results["profile_load"] = results["profile"].pop("_load")

        results["clarion_restarts"] = {
            c["name"]: c["restarts"] for c in httpx.get(
                run.base_url + "/v1/system/actors", timeout=10,
                headers={"Authorization": f"Bearer {run.api_key}"}).json()["data"]["children"]}
        run.log("stopping everything")


def leftovers(run: Run) -> list[str]:
    """Anything this run started that is still alive (there must be nothing)."""
    stray = []
    if run.settings is not None:
        left = services.actor_system_processes(run.settings.actor_port)
        if left:
            services.reap_groups(set(left.values()))
        stray += [f"actor process {pid}" for pid in
                  services.actor_system_processes(run.settings.actor_port)]
    if run.http_proc is not None and services.group_alive(run.http_proc.pid):
        services.stop_process_group(run.http_proc)
        if services.group_alive(run.http_proc.pid):
            stray.append(f"clarion serve (pgid {run.http_proc.pid})")
    for proc in run.extra_procs:
        if services.group_alive(proc.pid):
            services.stop_process_group(proc)  # finish a stop an error cut short, then check
            if services.group_alive(proc.pid):
                stray.append(f"pid {proc.pid} ({' '.join(map(str, proc.args))[:60]})")
    return stray


def other_activity(own_actor_port: int | None = None) -> list[str]:
    """Test runs or other Clarions on this machine (they would share its two cores); ours
    (whose environment names our actor port) are not counted."""
    mine = os.getpid()
    marker = f"CLARION_ACTOR_PORT={own_actor_port}".encode() if own_actor_port else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            cmd = raw.replace(b"\0", b" ").decode(errors="replace")
            if not any(k in cmd for k in ("pytest", "clarion.cli", "clarion.node.launcher",
                                          "make test")) or "bench" in cmd:
                continue
            if marker and marker in (entry / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        found.append(f"{entry.name}: {cmd.strip()[:100]}")
    return found


def background_cores(seconds: float = 3.0) -> float:
    busy0, wall0 = services.machine_busy_seconds()
    time.sleep(seconds)
    busy1, wall1 = services.machine_busy_seconds()
    return round((busy1 - busy0) / (wall1 - wall0), 2)


def wait_until_quiet(run: Run, limit: float) -> None:
    """Wait (at most `limit` s) until no test run or other Clarion shares the machine."""
    deadline = time.monotonic() + limit
    quiet_since = None
    while time.monotonic() < deadline:
        busy = background_cores(1.0)
        if not other_activity() and busy < 0.2:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 5:
                return
        else:
            quiet_since = None
    run.log(f"the machine did not become quiet within {limit:.0f} s; measuring anyway")


def code_fingerprint() -> str:
    """A digest of Clarion's source as measured (the run cannot ask git)."""
    import hashlib

    digest = hashlib.sha256()
    for folder in ("actors", "http", "persistence", "supervision", "node", "config", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def summarise(results: dict[str, Any], plan: Plan) -> None:
    main = {}
    for target in report.TARGETS:
        for point in results["sweep"].get(target, []):
            if point["connections"] == plan.connections:
                main[target] = point
    results["main"] = main
    ratios: dict[str, float] = {}
    if "clarion" in main:
        c = main["clarion"]["accepted_per_s"]
        best = {t: max((p["accepted_per_s"] for p in results["sweep"][t]), default=0.0)
                for t in report.TARGETS if results["sweep"].get(t)}
        if main.get("ceiling"):
            ratios["clarion_vs_ceiling"] = round(c / main["ceiling"]["accepted_per_s"], 3)
            ratios["best_clarion_vs_ceiling"] = round(best["clarion"] / best["ceiling"], 3)
        if main.get("reference"):
            ratios["clarion_vs_reference"] = round(c / main["reference"]["accepted_per_s"], 3)
            ratios["best_clarion_vs_reference"] = round(best["clarion"] / best["reference"], 3)
    results["ratios"] = ratios
    results["setup"] = {"role": plan.role, "workers": plan.workers,
                        "delivery_actors": plan.delivery_actors}
    results["goals"] = goals(results)


def main() -> int:
    parser = argparse.ArgumentParser(description="Clarion's benchmark (see bench/README.md)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per measured load (default 10; 3 with --quick)")
    parser.add_argument("--connections", type=int, default=64,
                        help="keep-alive connections of the main measurement (default 64)")
    parser.add_argument("--quick", action="store_true",
                        help="short smoke run (< 2 min): fewer points, short loads, no profile")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy pass")
    parser.add_argument("--drain-profile-gil", action="store_true",
                        help="profile the delivery actors' backlog drain by GIL holder (CPU)"
                             " instead of wall time")
    parser.add_argument("--profile", action="store_true", help="profile even with --quick")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator (auto: wrk if installed)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="first wait up to SECONDS for other test runs / Clarions to finish")
    parser.add_argument("--role", choices=("all", "gateway"), default="all",
                        help="Clarion's node role: all (it delivers too) or gateway (nothing"
                             " delivers: the accept path alone)")
    parser.add_argument("--workers", type=int, default=1,
                        help="HTTP workers of Clarion and of both yardsticks")
    parser.add_argument("--delivery-actors", type=int, default=1,
                        help="delivery actors per channel (CLARION_DELIVERY_ACTORS)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the run's logs (Clarion's, the targets') after success")
    parser.add_argument("--report-only", metavar="JSON", type=Path,
                        help="rebuild latest.md and the plot from a results file; run nothing")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads(args.report_only.read_text())
        RESULTS.mkdir(parents=True, exist_ok=True)
        text = report.markdown(results)
        (RESULTS / "latest.md").write_text(text)
        report.plot(results, RESULTS / "throughput_latency.png")
        print(text)
        return 0
    args.duration_given = args.duration is not None
    if args.duration is None:
        args.duration = 10.0
    if args.duration <= 0 or args.duration > 120 or not 1 <= args.connections <= 1024:
        parser.error("--duration must be in (0, 120] and --connections in [1, 1024]")
    plan = make_plan(args)

    services.sigterm_as_interrupt()
    # One run at a time: two would share the clarion_bench database, vhost and Redis db.
    import fcntl

    lock = open(Path(tempfile.gettempdir()) / "clarion_bench.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another bench/run.py is running (it owns clarion_bench): wait for it",
              file=sys.stderr)
        return 2
    services.require_services()
    tool = loadgen.available_tool(plan.tool)
    workdir = Path(tempfile.mkdtemp(prefix="clarion-bench-"))
    run = Run(plan, workdir, tool)
    results = run.results
    results.update(plan=asdict(plan), meta={**machine(), "load_tool": tool}, sweep={},
                   delivery={}, cpu={}, started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if tool == "python":
        run.log("wrk not found: using the Python load generator (it competes for the CPU;"
                " install wrk with `bash bench/setup.sh`)")
    run.log(f"plan: {plan.sweep} connections x {plan.duration:.0f} s, tool {tool},"
            f" logs in {workdir}")
    if args.wait_quiet > 0:
        wait_until_quiet(run, args.wait_quiet)
    results["meta"]["background_busy_cores"] = background_cores()
    results["meta"]["other_activity_at_start"] = other_activity()
    results["meta"]["clarion_code_fingerprint"] = code_fingerprint()
    if results["meta"]["other_activity_at_start"] or results["meta"]["background_busy_cores"] > 0.2:
        run.log(f"warning: the machine is not quiet ({results['meta']['background_busy_cores']}"
                f" cores busy; {len(results['meta']['other_activity_at_start'])} other Clarion or"
                " test processes): figures will be lower and noisier")
    started = time.monotonic()
    failed: BaseException | None = None
    try:
        execute(run)
    except KeyboardInterrupt as exc:
        failed = exc
        run.log("interrupted: everything was stopped")
    except Exception as exc:  # noqa: BLE001 - report, keep the partial figures and the logs
        failed = exc
        traceback.print_exc()
    stray = leftovers(run)
    if stray:
        run.log("ERROR: processes left behind: " + ", ".join(stray))
        results["leftovers"] = stray
        failed = failed or BenchError("processes left behind")
    results["meta"]["other_activity_at_end"] = other_activity()
    if code_fingerprint() != results["meta"]["clarion_code_fingerprint"]:
        # Clarion's source changed while it was measured (the processes run the code they
        # started with, but a restart or a lazy import would not): say so next to the figures.
        results["meta"]["clarion_code_changed_during_run"] = True
        run.log("warning: Clarion's source changed during the run")
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    if run.settings is not None:
        results["clarion_settings"] = {
            k: str(v) for k, v in run.settings.model_dump().items()
            if k in ("http_workers", "delivery_concurrency", "delivery_prefetch", "log_level",
                     "request_timeout", "provider_timeout", "rate_limit_per_second",
                     "rate_limit_burst")}
    if failed is not None:
        results["error"] = repr(failed)
    summarise(results, plan)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report.write_json(results, RESULTS / "latest.json")
    text = report.markdown(results)
    (RESULTS / "latest.md").write_text(text)
    if results["sweep"]:
        report.plot(results, RESULTS / "throughput_latency.png")
    print()
    print(text)
    print(f"results: {RESULTS / 'latest.json'}, {RESULTS / 'latest.md'},"
          f" {RESULTS / 'throughput_latency.png'}; {results['elapsed_s']:.0f} s in all")
    if failed is None and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs kept in {workdir}")
    return 0 if failed is None else 1


if __name__ == "__main__":
    sys.exit(main())
