"""Cost of one SendGrid call: the `sendgrid` client as shipped vs. a pooled keep-alive transport.

    .venv/bin/python bench/provider_calls.py [--calls 2000] [--threads 32] [--latency-ms 0]

Starts the provider simulator in a child process (so this process's CPU is the client's alone),
then, per transport, sends `--calls` emails from `--threads` threads and prints calls/s, CPU
per call (this process: user + system). The transports build the same body with `Mail(...).get()`:

* `sendgrid`: `SendGridAPIClient.send()` (python_http_client over urllib: a connection per call);
* `requests`: a `requests.Session` with `HTTPAdapter(pool_maxsize=threads)`;
* `urllib3`: a `urllib3.PoolManager(maxsize=threads)`;
* `clarion`: `SendGridEmailProvider.send()` as it is in this tree.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests
import requests.adapters
import urllib3
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Mail

from clarion.actors.providers.sendgrid_email import SendGridEmailProvider

KEY = "SG.bench.key"
FROM = "bench@clarion.test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _mail(i: int) -> dict:
    return Mail(from_email=FROM, to_emails=f"user{i}@example.com", subject="Hello",
                plain_text_content="Hi", html_content="<p>Hi</p>").get()


def _message(i: int) -> dict:
    return {"notification_id": f"n-{i}", "channel": "email", "to": f"user{i}@example.com",
            "subject": "Hello", "body": "Hi", "html_body": "<p>Hi</p>"}


def _transports(base: str, threads: int) -> dict[str, Callable[[int], bool]]:
    url = f"{base}/v3/mail/send"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    client = SendGridAPIClient(api_key=KEY, host=base)
    client.client.timeout = 5

    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=threads, max_retries=0))
    pool = urllib3.PoolManager(maxsize=threads, retries=False, timeout=5)
    provider = SendGridEmailProvider(KEY, FROM, host=base, timeout=5)

    def via_sendgrid(i: int) -> bool:
        return client.send(_mail(i)).status_code == 202

    def via_requests(i: int) -> bool:
        return session.post(url, data=json.dumps(_mail(i)), headers=headers, timeout=5).status_code == 202

    def via_urllib3(i: int) -> bool:
        return pool.request("POST", url, body=json.dumps(_mail(i)).encode(),
                            headers=headers).status == 202

    def via_clarion(i: int) -> bool:
        return provider.send(_message(i)).ok

    return {"sendgrid": via_sendgrid, "requests": via_requests, "urllib3": via_urllib3,
            "clarion": via_clarion}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()

    port = _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "clarion.simulator.server", "--port", str(port),
                            "--latency-ms", str(args.latency_ms)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{base}/_sim/health").close()
                break
            except OSError:
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise RuntimeError("simulator did not start") from None
                time.sleep(0.1)
        print(f"simulator pid {sim.pid} on {base}; {args.calls} calls from {args.threads} "
              f"threads, provider latency {args.latency_ms} ms")
        for name, call in _transports(base, args.threads).items():
            if args.only and name not in args.only:
                continue
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(call, range(args.threads)))  # warm up: threads, connections
                cpu0, wall0 = time.process_time(), time.perf_counter()
                ok = sum(pool.map(call, range(args.calls)))
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            print(f"{name:9} {args.calls / wall:8.0f} calls/s  {cpu / args.calls * 1e6:6.0f} µs CPU "
                  f"per call  ({ok}/{args.calls} ok)")
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        sim.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
