"""Load generation: the same POST, the same way, against every target.

`wrk` (C, one thread, many keep-alive connections, Lua script `wrk_post.lua`) when installed: a
Python client on a 2-core machine eats the CPU it is measuring. Otherwise a fallback: an asyncio
raw-socket HTTP/1.1 client (`python -m bench.loadgen`), in a process of its own.

Both are bounded: a fixed duration, a fixed number of connections, a hard timeout on the process.
Both write the same JSON summary: requests, 2xx (`ok2xx`), non-2xx by status, socket errors,
latency percentiles in ms, and, when asked, one `<notification_id> <accepted> <sent>` line per
2xx answer (epoch seconds: when the client got the 202, when it sent that request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WRK_SCRIPT = HERE / "wrk_post.lua"
REQUEST_TIMEOUT_S = 10  # Clarion's own request timeout: a slower answer is an error anyway


@dataclass(frozen=True)
class Load:
    port: int
    body: str
    auth: str | None
    connections: int
    duration: float
    rate: float = 0.0  # requests/s for the whole run; 0: as fast as the target answers
    path: str = "/v1/notifications"
    record_ids: bool = False


def available_tool(preferred: str = "auto") -> str:
    if preferred in ("auto", "wrk") and shutil.which("wrk"):
        return "wrk"
    if preferred == "wrk":
        raise RuntimeError("wrk is not installed: run `bash bench/setup.sh` or use --tool python")
    return "python"


def run(load: Load, tool: str, workdir: Path) -> dict[str, Any]:
    """Run one load; return the summary (plus `ids`: [(notification_id, accepted, sent)])."""
    fd, result_name = tempfile.mkstemp(prefix="load-", suffix=".json", dir=workdir)
    os.close(fd)
    result_path = Path(result_name)
    ids_path = result_path.with_suffix(".ids") if load.record_ids else None
    if tool == "wrk":
        argv = ["wrk", "-t1", f"-c{load.connections}", f"-d{max(1, round(load.duration))}s",
                f"--timeout={REQUEST_TIMEOUT_S}s", "-s", str(WRK_SCRIPT),
                f"http://127.0.0.1:{load.port}"]
        env = {**os.environ, "BENCH_PATH": load.path, "BENCH_BODY": load.body,
               "BENCH_AUTH": load.auth or "", "BENCH_RATE": str(load.rate),
               "BENCH_IDS": str(ids_path or ""), "BENCH_RESULT": str(result_path)}
    else:
        argv = [sys.executable, "-m", "bench.loadgen", "--port", str(load.port),
                "--path", load.path, "--body", load.body, "--auth", load.auth or "",
                "--connections", str(load.connections), "--duration", str(load.duration),
                "--rate", str(load.rate), "--ids", str(ids_path or ""),
                "--result", str(result_path)]
        env = dict(os.environ)
    started = time.time()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=load.duration + REQUEST_TIMEOUT_S + 30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(5)
    ended = time.time()
    text = result_path.read_text().strip() if result_path.exists() else ""
    result_path.unlink(missing_ok=True)
    if proc.returncode != 0 or not text:
        tail = output.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{tool} failed ({proc.returncode}): {tail}")
    summary: dict[str, Any] = json.loads(text)
    summary.update(connections=load.connections, offered_rate=load.rate or None,
                   started_at=started, ended_at=ended)
    duration = summary["duration_s"] or load.duration
    summary["accepted_per_s"] = summary["ok2xx"] / duration
    summary["ids"] = []
    if ids_path is not None and ids_path.exists():
        for line in ids_path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                sent = float(parts[2]) if len(parts) > 2 else 0.0
                summary["ids"].append((parts[0], float(parts[1]), sent or None))
        ids_path.unlink()
    return summary


# -- the Python fallback client --------------------------------------------------------------

_ID = re.compile(rb'"notification_id"\s*:\s*"([0-9A-Za-z-]+)"')


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def _connection(args: argparse.Namespace, request: bytes, deadline: float,
                      pacer: _Pacer, out: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    try:
        while time.monotonic() < deadline:
            await pacer.wait()
            if time.monotonic() >= deadline:
                break
            start = time.monotonic()
            sent = time.time()
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT_S)
            out["latencies"].append((time.monotonic() - start) * 1000)
            if 200 <= status < 300:
                out["ok2xx"] += 1
                if args.ids:
                    found = _ID.search(body)
                    if found:
                        out["ids"].append(f"{found.group(1).decode()} {time.time():.6f} {sent:.6f}")
            else:
                out["statuses"][str(status)] = out["statuses"].get(str(status), 0) + 1
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        out["errors"]["read"] += 1
    except TimeoutError:
        out["errors"]["timeout"] += 1
    finally:
        writer.close()


class _Pacer:
    """One send slot every 1/rate s shared by all connections (none when rate is 0)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        slot = self.next = max(self.next + self.interval, time.monotonic() - 1.0)
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def _main_async(args: argparse.Namespace) -> dict[str, Any]:
    headers = [f"POST {args.path} HTTP/1.1", f"Host: 127.0.0.1:{args.port}",
               "Content-Type: application/json", f"Content-Length: {len(args.body.encode())}"]
    if args.auth:
        headers.append(f"Authorization: Bearer {args.auth}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode() + args.body.encode()
    out: dict[str, Any] = {"latencies": [], "ok2xx": 0, "statuses": {}, "ids": [],
                           "errors": {"connect": 0, "read": 0, "write": 0, "status": 0,
                                      "timeout": 0}}
    started = time.monotonic()
    deadline = started + args.duration
    pacer = _Pacer(args.rate)
    results = await asyncio.gather(
        *(_connection(args, request, deadline, pacer, out) for _ in range(args.connections)),
        return_exceptions=True)
    out["errors"]["connect"] += sum(1 for r in results if isinstance(r, OSError))
    elapsed = time.monotonic() - started
    lat = sorted(out["latencies"])
    non2xx = sum(out["statuses"].values())
    return {
        "tool": "python", "duration_s": elapsed, "requests": len(lat), "ok2xx": out["ok2xx"],
        "non2xx": non2xx, "statuses": out["statuses"],
        "errors": {**out["errors"], "status": sum(v for k, v in out["statuses"].items()
                                                  if int(k) > 399)},
        "latency_ms": {"p50": _percentile(lat, 50), "p90": _percentile(lat, 90),
                       "p99": _percentile(lat, 99),
                       "mean": sum(lat) / len(lat) if lat else 0.0, "max": lat[-1] if lat else 0.0},
        "_ids": out["ids"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="fallback HTTP load generator (no wrk)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/notifications")
    parser.add_argument("--body", required=True)
    parser.add_argument("--auth", default="")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--rate", type=float, default=0)
    parser.add_argument("--ids", default="")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        uvloop = None
    summary = uvloop.run(_main_async(args)) if uvloop else asyncio.run(_main_async(args))
    ids = summary.pop("_ids")
    if args.ids:
        Path(args.ids).write_text("".join(line + "\n" for line in ids))
    Path(args.result).write_text(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
