"""Load for `POST /v1/notifications/batch`, in a process of its own (bench/run.py starts it).

    python bench/batchload.py URL API_KEY BODY_FILE CONNECTIONS SECONDS

Each of CONNECTIONS keep-alive connections posts BODY_FILE (one batch) again and again for
SECONDS, and the process prints one JSON line: requests, notifications accepted (the answers'
`meta.accepted`, each confirmed by the broker before the answer), statuses, elapsed seconds and
the request latency percentiles in ms. wrk cannot count items inside an answer, hence this.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import httpx


async def run(url: str, key: str, body: bytes, connections: int, seconds: float) -> dict:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    accepted = refused = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=60) as client:
        started = time.monotonic()
        end = started + seconds

        async def worker() -> None:
            nonlocal accepted, refused
            while time.monotonic() < end:
                sent = time.monotonic()
                try:
                    reply = await client.post("/v1/notifications/batch", content=body)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                latencies.append((time.monotonic() - sent) * 1000)
                statuses[str(reply.status_code)] += 1
                if reply.status_code == 200:
                    meta = reply.json()["meta"]
                    accepted += int(meta["accepted"])
                    refused += int(meta["refused"])

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) \
            if latencies else None

    return {"requests": len(latencies), "accepted": accepted, "refused": refused,
            "statuses": dict(statuses), "elapsed": round(elapsed, 3),
            "accepted_per_s": round(accepted / elapsed, 1),
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99)}}


def main(argv: list[str]) -> int:
    url, key, body_file, connections, seconds = argv
    body = Path(body_file).read_bytes()
    print(json.dumps(asyncio.run(run(url, key, body, int(connections), float(seconds)))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
