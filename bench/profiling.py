"""Where Clarion's CPU goes under load: per-process CPU shares and py-spy profiles.

* `CpuMeter`: user+system CPU seconds of each process (from /proc) between two instants, so a run
  can say which process is pinned at one core. Costs nothing while the load runs.
* `PySpy`: `py-spy record --nonblocking --idle --format raw` on a few processes while a load runs,
  then a summary of each: per kind of thread (an actor's main thread, the bridge's threads, the
  delivery worker pool), the share of wall time in each activity (a `receiveMsg_*` handler and
  the dependency it waits on, Thespian's runtime, idle), and the busiest functions when not
  waiting. The raw files are collapsed stacks (flamegraph.pl and speedscope read them).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.services import cpu_seconds

_ROOT = Path(__file__).resolve().parents[1]  # frames in this checkout are shown from here


class CpuMeter:
    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: cpu_seconds(pid) or 0.0 for name, pid in self.processes.items()}

    def stop(self) -> dict[str, float]:
        """Each process's CPU use over the interval, in cores (1.0 = one core busy)."""
        elapsed = max(1e-6, time.monotonic() - self._t0)
        shares = {}
        for name, pid in self.processes.items():
            now = cpu_seconds(pid)
            if now is not None:
                shares[name] = round((now - self._start.get(name, 0.0)) / elapsed, 3)
        return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


class ServiceCpuMeter:
    """PostgreSQL's, RabbitMQ's and Redis's CPU over an interval, in cores, each summed over its
    processes (PostgreSQL's backends and its WAL writer, checkpointer...). What a notification
    costs the services it is stored and queued in, beside what it costs the server itself."""

    def __init__(self, processes: dict[str, int]) -> None:
        self._meter = CpuMeter(processes)  # {"postgres:<pid>": pid, ...}

    def start(self) -> None:
        self._meter.start()

    def stop(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, cores in self._meter.stop().items():
            service = name.split(":", 1)[0]
            totals[service] = round(totals.get(service, 0.0) + cores, 3)
        return totals


def py_spy_path() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


class PySpy:
    def __init__(self, processes: dict[str, int], out_dir: Path, seconds: float,
                 rate: int = 100, gil: bool = False) -> None:
        """`gil`: sample only the thread holding the GIL (where the Python CPU goes) instead of
        every thread, idle ones included (where the wall time goes)."""
        self.processes = processes
        self.gil = gil
        self.out_dir = out_dir
        self.seconds = seconds
        self.rate = rate
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        exe = py_spy_path()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install -r bench/requirements.txt)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.processes.items():
            out = self.out_dir / f"profile-{name}.txt"
            out.unlink(missing_ok=True)
            self._procs[name] = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(self.seconds))),
                 "--rate", str(self.rate), "--nonblocking", "--gil" if self.gil else "--idle",
                 "--format", "raw",
                 "--output", str(out)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True)

    def stop(self) -> dict[str, Any]:
        """Wait for the recordings (bounded), then summarise each."""
        summaries: dict[str, Any] = {}
        deadline = time.monotonic() + self.seconds + 30
        for name, proc in self._procs.items():
            try:
                output, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                output, _ = proc.communicate(timeout=5)
            path = self.out_dir / f"profile-{name}.txt"
            if proc.returncode != 0 or not path.exists():
                summaries[name] = {"error": output.decode(errors="replace").strip()[-500:]}
                continue
            summaries[name] = summarise(path)
            summaries[name]["file"] = str(path)
        self._procs = {}
        return summaries

    def kill(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self._procs = {}


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; keep function and file:line
    # with the path shortened to the package-relative part.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", f"{_ROOT}/", "lib/python3.11/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


# A thread blocked in C shows its innermost *Python* frame as the leaf, so "waiting" is read from
# the leaf: selectors and pollers, uvloop's run loop (no Python frame below Runner.run), socket
# reads, psycopg's wait, the worker pool's queue, and the bridge's sender blocked on its queue.
_WAITING = ("select (", "poll (", "Runner.run (asyncio/runners.py", "SocketIO.readinto (",
            "_worker (concurrent/futures/thread.py", "wait (threading.py", "get (queue.py",
            "ActorBridge._send (", "sleep (", "Connection.wait (psycopg")
_DEPENDENCIES = (("psycopg", "PostgreSQL"), ("pika/", "RabbitMQ"), ("redis/", "Redis"),
                 ("sendgrid", "provider HTTP"), ("python_http_client", "provider HTTP"),
                 ("urllib", "provider HTTP"), ("http/client.py", "provider HTTP"),
                 ("requests/", "provider HTTP"), ("firebase_admin", "provider HTTP"),
                 ("google/auth", "provider HTTP"), ("logging/", "logging"),
                 ("thespian/", "Thespian send"))


def _own_frames(frames: list[str]) -> list[str]:
    """Drop the frames an actor process inherited from its parent's handler when it was forked
    (Thespian creates a child inside the parent's `createActor` call)."""
    start = max((i for i, f in enumerate(frames) if f.startswith("ActorManager.run (")),
                default=-1)
    return frames[start + 1:] if start >= 0 else frames


def _thread_kind(frames: list[str]) -> str:
    joined = ";".join(frames)
    if "ActorBridge._receive" in joined:
        return "bridge-rx thread"
    if "ActorBridge._send" in joined:
        return "bridge-tx thread"
    if "concurrent/futures/thread.py" in joined:
        return "worker-pool threads"
    if frames and frames[0].startswith(("Thread._bootstrap", "_bootstrap")):
        return "other threads"
    return "main thread"


def _waiting(leaf: str) -> bool:
    return any(w in leaf for w in _WAITING)


def _category(frames: list[str]) -> str:
    frames = _own_frames(frames)
    leaf = frames[-1]
    handler_at = max((i for i, f in enumerate(frames) if ".receiveMsg_" in f), default=-1)
    if handler_at >= 0:
        inner = frames[handler_at + 1:]
        dep = next((label for marker, label in _DEPENDENCIES
                    if any(marker in f for f in inner)), "Python")
        return f"{frames[handler_at].split(' (')[0]} [{dep}]"
    if _waiting(leaf):
        return "idle (waiting)"
    joined = ";".join(frames)
    if "thespian/" in joined:
        return "Thespian runtime (transport, intents, pickling)"
    if any(k in joined for k in ("uvicorn/", "starlette/", "asyncio/", "routes/")):
        dep = next((label for marker, label in _DEPENDENCIES if marker in joined), None)
        return f"event loop: HTTP handling{f' [{dep}]' if dep else ''}"
    return "other"


def summarise(path: Path, top: int = 12) -> dict[str, Any]:
    """From a py-spy raw file recorded with --idle: where each kind of thread spends its wall
    time (categories), and the busiest functions when not waiting (self %, all threads)."""
    kinds: dict[str, Counter[str]] = {}
    self_counts: Counter[str] = Counter()
    busy_total = 0
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        category = _category(frames)
        kinds.setdefault(_thread_kind(frames), Counter())[category] += count
        if not _waiting(frames[-1]):
            busy_total += count
            self_counts[frames[-1]] += count
    threads = {}
    for kind, counter in kinds.items():
        n = sum(counter.values())
        threads[kind] = {"samples": n,
                         "wall_pct": [(c, round(100 * v / n, 1))
                                      for c, v in counter.most_common(top)]}
    return {"samples": total, "busy_samples": busy_total, "threads": threads,
            "self_pct_of_busy": [(name, round(100 * n / max(1, busy_total), 1))
                                 for name, n in self_counts.most_common(top)]}
