"""Running the provider simulator over real HTTP.

Owns the socket and uvicorn lifecycle: `SimulatorServer` serves the app on a
background thread for tests and benchmarks; `main()` is the foreground
`clarion simulator` command.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import uvicorn

from .app import create_simulator_app
from .credentials import write_service_account
from .state import SimulatorState

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025


def bind_socket(host: str = DEFAULT_HOST, port: int = 0, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port.

    Created with IPPROTO_TCP on purpose: asyncio only sets TCP_NODELAY on sockets
    whose proto is IPPROTO_TCP, and without it every keep-alive request gains
    ~40 ms (Nagle + delayed ACK).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # Lets a restarted simulator reuse its fixed port despite TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listen now so clients queue in the kernel even before the loop accepts.
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _uvicorn_config(app: object, *, embedded: bool, graceful_shutdown_s: float) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # Bounds stop() when a request is parked in injected latency.
        timeout_graceful_shutdown=graceful_shutdown_s,
        # Embedded in a test process, leave the host's logging setup alone.
        log_config=None if embedded else uvicorn.config.LOGGING_CONFIG,
    )


class SimulatorServer:
    """The simulator on 127.0.0.1 in a background thread; use as a context manager.

    `state` is the live `SimulatorState`, readable directly from the test thread.
    """

    def __init__(
        self,
        state: SimulatorState | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        startup_timeout: float = 10.0,
        graceful_shutdown_s: float = 1.0,
    ) -> None:
        self.state = state if state is not None else SimulatorState()
        self.app = create_simulator_app(self.state)
        self._host = host
        self._port = port
        self._startup_timeout = startup_timeout
        self._graceful_shutdown_s = graceful_shutdown_s
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("SimulatorServer is not started")
        return self._base_url

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SimulatorServer:
        if self._thread is not None:
            raise RuntimeError("SimulatorServer already started")
        self._sock = bind_socket(self._host, self._port)
        host, port = self._sock.getsockname()[:2]
        self._server = uvicorn.Server(
            _uvicorn_config(self.app, embedded=True, graceful_shutdown_s=self._graceful_shutdown_s)
        )
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"clarion-simulator-{port}",
            daemon=True,  # never keep a crashed test run alive
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("simulator failed to start")
            time.sleep(0.005)
        self._base_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        """Stops serving and joins the thread; safe to call twice."""
        server, thread, sock = self._server, self._thread, self._sock
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=self._graceful_shutdown_s + 5.0)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout=5.0)
        if sock is not None:
            sock.close()  # uvicorn closes it on a clean shutdown; this covers a failed start
        self._server = self._thread = self._sock = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="clarion simulator",
        description="Serve a local stand-in for SendGrid and Firebase Cloud Messaging.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=int, default=0, help="delay added to every provider call")
    parser.add_argument(
        "--write-credentials",
        metavar="PATH",
        type=Path,
        help="write a service-account JSON whose token_uri points at this simulator",
    )
    parser.add_argument("--project-id", default="clarion-sim", help="project id written into the credentials")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """`clarion simulator`: serve in the foreground until Ctrl-C."""
    args = _parse_args(argv)
    state = SimulatorState()
    if args.latency_ms:
        state.update_config({"latency_ms": args.latency_ms})
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"clarion simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    base_url = f"http://{host}:{port}"
    if args.write_credentials is not None:
        write_service_account(args.write_credentials, f"{base_url}/token", args.project_id)
    print(f"clarion simulator listening on {base_url}", flush=True)
    server = uvicorn.Server(_uvicorn_config(create_simulator_app(state), embedded=False, graceful_shutdown_s=1.0))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn re-raises the captured SIGINT after its graceful shutdown.
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
