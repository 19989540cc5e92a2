"""The benchmark's own isolation and its processes.

Owns: the `clarion_bench` database, RabbitMQ vhost and Redis database 14 (made fresh at start,
removed at the end), free ports, and starting/stopping child processes in process groups of their
own so that nothing survives the run (Ctrl-C, SIGTERM and errors included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH_NAME = "clarion_bench"
REDIS_DB = 14
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RABBITMQCTL_TIMEOUT = 60


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


# -- ports and services ----------------------------------------------------------------------


def free_port(avoid: tuple[int, ...] = (1900,)) -> int:
    """A free TCP port on 127.0.0.1 (never one of `avoid`: 1900 is Clarion's default)."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise BenchError("no free port found")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_services() -> None:
    missing = [name for name, port in (("PostgreSQL", 5432), ("Redis", 6379), ("RabbitMQ", 5672))
               if not port_open(port)]
    if missing:
        raise BenchError(f"{', '.join(missing)} not running on 127.0.0.1:"
                         " run `bash scripts/ensure-services.sh`")


def await_rabbitmq() -> None:
    """Until the broker's app runs (a test on this machine may be restarting it), bounded."""
    subprocess.run(["rabbitmqctl", "-q", "await_startup", "--timeout", "60"], check=False,
                   capture_output=True, timeout=RABBITMQCTL_TIMEOUT + 10, stdin=subprocess.DEVNULL)


def rabbitmqctl(*args: str, check: bool = True) -> str:
    result = subprocess.run(["rabbitmqctl", "-q", *args], check=False, capture_output=True,
                            text=True, timeout=RABBITMQCTL_TIMEOUT, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise BenchError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


# -- isolation -------------------------------------------------------------------------------


@dataclass
class Isolation:
    """Database `clarion_bench`, vhost `clarion_bench`, Redis db 14: fresh at start, gone at end."""

    keep_database: bool = False

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{BENCH_NAME}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:6379/{REDIS_DB}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{BENCH_NAME}"

    def setup(self) -> None:
        import redis
        from clarion.persistence import broker, database

        self._drop_database()
        database.ensure_database(self.database_url)
        database.migrate(self.database_url)
        # A vhost left over by an interrupted run would carry its queues' messages: start clean.
        await_rabbitmq()
        rabbitmqctl("delete_vhost", BENCH_NAME, check=False)
        rabbitmqctl("add_vhost", BENCH_NAME)
        rabbitmqctl("set_permissions", "-p", BENCH_NAME, "guest", ".*", ".*", ".*")
        conn = broker.connect(self.amqp_url, "clarion-bench-setup")
        try:
            broker.declare_topology(conn.channel())
        finally:
            conn.close()
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            client.flushdb()
        finally:
            client.close()

    def teardown(self) -> None:
        import redis

        errors: list[str] = []
        for attempt in (1, 2):
            try:
                rabbitmqctl("delete_vhost", BENCH_NAME)
                break
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                if "does not exist" in str(exc):
                    break
                if attempt == 2:
                    errors.append(str(exc).splitlines()[0])
                else:
                    await_rabbitmq()
        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
            client.flushdb()
            client.close()
        except redis.RedisError as exc:
            errors.append(f"redis: {exc}")
        if not self.keep_database:
            try:
                self._drop_database()
            except Exception as exc:  # noqa: BLE001 - report, the rest of the clean-up ran
                errors.append(f"postgres: {exc}")
        if errors:
            raise BenchError("clean-up incomplete: " + "; ".join(errors))

    def purge_work_queues(self) -> None:
        """Drop whatever is still queued for delivery (a backlog the run no longer measures)."""
        from clarion.persistence import broker

        conn = broker.connect(self.amqp_url, "clarion-bench-purge")
        try:
            channel = conn.channel()
            for queue in broker.WORK_QUEUES.values():
                channel.queue_purge(queue)
        finally:
            conn.close()

    def queue_depths(self) -> dict[str, int]:
        from clarion.persistence import broker

        conn = broker.connect(self.amqp_url, "clarion-bench-depths")
        try:
            channel = conn.channel()
            return {q: channel.queue_declare(q, passive=True).method.message_count
                    for q in broker.WORK_QUEUES.values()}
        finally:
            conn.close()

    def _drop_database(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_NAME} WITH (FORCE)")


# -- signals ---------------------------------------------------------------------------------


def sigterm_as_interrupt() -> None:
    """SIGTERM unwinds the run like Ctrl-C does, so every clean-up runs. SIGINT is set back to
    Python's handler too: a shell starts background jobs with SIGINT ignored."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM until the block is done (starting a process and registering its
    clean-up must not be split by an interrupt), then raise it."""
    pending: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    for sig in previous:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]} (held while starting a process)")


def shielded(fn: Any, *args: Any) -> Any:
    """`fn(*args)` as a clean-up callback that a second Ctrl-C cannot cut short (the signal is
    held, then raised once the clean-up is done)."""

    def call() -> None:
        with interrupts_deferred():
            fn(*args)

    return call


# -- child processes -------------------------------------------------------------------------


def start_process(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` in a session (process group) of its own, output to `log_path`."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process's group, SIGKILL it after `grace` s; reap the leader."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    if proc.poll() is None or group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (proc.poll() is None or group_alive(pgid)):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Until `url` answers 200 (or the process exits, or `timeout` s pass)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"the process serving {url} exited with {proc.returncode}")
        try:
            reply = httpx.get(url, timeout=2)
            if reply.status_code == 200:
                return
            last = f"HTTP {reply.status_code}: {reply.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s ({last})")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def pgid_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def ppid_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (uvicorn's workers, under its supervisor)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and ppid_of(int(entry.name)) == pid:
            found.append(int(entry.name))
    return sorted(found)


def with_workers(processes: dict[str, int]) -> dict[str, int]:
    """`processes`, plus each one's child processes (a server with several workers does its
    work in the children: its own pid alone would miss it)."""
    out = dict(processes)
    for name, pid in processes.items():
        for n, child in enumerate(children_of(pid), start=1):
            out[f"{name}-worker-{n}"] = child
    return out


def actor_system_processes(actor_port: int) -> dict[int, int]:
    """{pid: pgid} of every process of the Clarion actor system on `actor_port`.

    Found by what they are (forks of `clarion.node.launcher`, whose environment carries
    CLARION_ACTOR_PORT=<port>), not by process group: Thespian's admin calls os.setsid() when it
    starts (thespian/system/multiprocCommon.py, startAdmin), so the admin and every actor live in
    a session of their own, not in the launcher's group that `start_actor_system` returns.
    """
    marker = f"CLARION_ACTOR_PORT={actor_port}".encode()
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"clarion.node.launcher" not in cmdline:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = _stat_fields(entry.name)
        if marker in environ and fields and fields[0] != "Z":
            found[int(entry.name)] = int(fields[2])
    return found


def wait_groups_gone(pgids: set[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(group_alive(g) for g in pgids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def reap_groups(pgids: set[int], grace: float = 10.0) -> None:
    """SIGTERM each process group, SIGKILL whatever is left after `grace` s."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_alive(g) for g in pgids):
        time.sleep(0.1)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far, or None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_processes() -> dict[str, int]:
    """{"postgres:<pid>" | "rabbitmq:<pid>" | "redis:<pid>": pid} of the machine's services."""
    names = {"postgres": "postgres", "beam.smp": "rabbitmq", "redis-server": "redis"}
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                found[f"{names[comm]}:{entry.name}"] = int(entry.name)
    return found


def machine_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds), from /proc/stat's first line."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / ticks, time.monotonic()
