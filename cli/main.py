"""`clarion`: the command operators use to run and manage Clarion.

    clarion run [--demo]      migrate, start the actors and the HTTP server (foreground, Ctrl-C)
    clarion node --role gateway|delivery|all [--channels email,push] [--convention HOST:PORT]
                              one host of a cluster: its actors (and for a gateway the HTTP
                              server), joined to the convention led by HOST:PORT (foreground)
    clarion migrate           create the database if needed, apply migrations, declare queues
    clarion seed              the demo user and the demo `welcome` template (en, fr)
    clarion apikey create NAME --scope send|admin / revoke NAME / list
    clarion actors start|stop|status
    clarion serve             only the HTTP server (the actor system must be running)
    clarion simulator         the SendGrid/FCM simulator, for local runs and benchmarks
    clarion send --user U --template T [--var k=v ...] [--channel C] [--wait]
                              send one notification through the HTTP API (the Python client)

Exit codes: 0 done; 1 failed (the message says why); 2 usage or configuration error; 3 the HTTP
server did not start (uvicorn's); 4 PostgreSQL, 5 RabbitMQ, 6 Redis could not be reached or
refused the connection (CLARION_DATABASE_URL, CLARION_AMQP_URL, CLARION_REDIS_URL); 7 `send`:
Clarion's HTTP API did not answer; 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable

from clarion.config.logging import configure_logging
from clarion.config.settings import Settings, SettingsError, load_settings
from clarion.cli import send


def _migrate(settings: Settings) -> None:
    from clarion.persistence import database

    database.ensure_database(settings.database_url)
    applied = database.migrate(settings.database_url)
    _declare_queues(settings)
    print(f"database and queues ready ({len(applied)} migration(s) applied)")


def _declare_queues(settings: Settings) -> None:
    from clarion.persistence import broker

    conn = broker.connect(settings.amqp_url, "clarion-migrate")
    try:
        broker.declare_topology(conn.channel(), settings.queue_type)
    finally:
        conn.close()


def _seed(settings: Settings) -> None:
    from clarion.cli.seed import seed
    from clarion.persistence import database

    with database.connect(settings.database_url, autocommit=True) as conn:
        seed(conn)
    print("demo user 'demo-user' and template 'welcome' (en, fr) are in place")


def _apikey(settings: Settings, action: str, name: str | None, scope: str | None) -> int:
    from clarion.persistence import api_keys, database

    if action == "create" and scope is None:
        # No default: a key that may do everything should never be made by omission.
        print("clarion: apikey create needs --scope send (post notifications, read its own)"
              " or --scope admin (everything)", file=sys.stderr)
        return 2
    with database.connect(settings.database_url, autocommit=True) as conn:
        if action == "create":
            chosen: api_keys.Scope = "admin" if scope == "admin" else "send"
            print(api_keys.create_api_key(conn, name or "default", scope=chosen))
        elif action == "revoke":
            print(f"revoked {api_keys.revoke_api_keys(conn, name or 'default')} key(s)")
        else:
            print("name\tprefix\tscope\tcreated_at\trevoked_at")
            for row in api_keys.list_api_keys(conn):
                print("\t".join(str(v) for v in row))
    return 0


def _serve(settings: Settings) -> None:
    import os

    import uvicorn

    from clarion.node.launcher import metrics_dir

    # Before any worker imports prometheus_client: its samples go where /metrics adds them up.
    folder = metrics_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)

    uvicorn.run(
        "clarion.http.app:app_factory", factory=True, host=settings.http_host,
        port=settings.http_port, workers=settings.http_workers,
        # An access line per request costs ~40 % of throughput; our own logs carry request ids.
        access_log=False, log_level="warning", timeout_graceful_shutdown=10,
        # Keep our JSON logging (configured in each worker by app_factory) instead of uvicorn's.
        log_config=None,
    )


def _demo_curl(settings: Settings) -> str:
    from clarion.persistence import api_keys, database

    with database.connect(settings.database_url, autocommit=True) as conn:
        api_keys.revoke_api_keys(conn, "demo")
        key = api_keys.create_api_key(conn, "demo", scope="admin")  # the console needs admin
    body = json.dumps({"user_id": "demo-user", "template_key": "welcome",
                       "message_data": {"name": "Ada", "product": "Clarion"}})
    base = f"http://{settings.http_host}:{settings.http_port}"
    return (f"curl -s -X POST {base}/v1/notifications -H 'Authorization: Bearer {key}'"
            f" -H 'Content-Type: application/json' -d '{body}'")


def _in_foreground(settings: Settings, announce: Callable[[int], None],
                   serves_http: bool = True) -> int:
    """Start the actor system, serve until stopped (Ctrl-C, SIGTERM), then stop every actor.

    `announce` hears the actor processes' group once they are up."""
    import time

    from clarion.cli.service_errors import check_services
    from clarion.node.launcher import (
        admin_running,
        start_actor_system,
        stop_actor_system,
    )

    check_services(settings)
    # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it unwinds through
    # the `finally` below, so the actors are stopped too instead of being left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    pgid = start_actor_system(settings)
    try:
        announce(pgid)
        if serves_http:
            _serve(settings)
            return 0
        # Nothing to serve: stay in the foreground while the actor system runs, so a service
        # manager sees the node stop if its admin dies (and restarts it).
        while admin_running(settings.actor_port, settings.node_address):
            time.sleep(1)
        print("clarion: the actor system stopped", file=sys.stderr)
        return 1
    finally:
        stop_actor_system(settings, pgid)


def _run(settings: Settings, demo: bool) -> int:
    _migrate(settings)
    curl = None
    if demo and settings.internal_secret is None:
        # The console's sessions are signed with the internal secret: a demo gets a fresh one
        # (processes started from here read it from the environment).
        import os
        import secrets

        os.environ["CLARION_INTERNAL_SECRET"] = secrets.token_urlsafe(32)
        settings = load_settings()
    if demo:
        _seed(settings)
        curl = _demo_curl(settings)

    def announce(pgid: int) -> None:
        print(f"actor system up (admin port {settings.actor_port}); logs in"
              f" {settings.state_dir}/")
        print(f"Clarion listening on http://{settings.http_host}:{settings.http_port}"
              f" (email: {settings.email_provider}, push: {settings.push_provider},"
              f" sms: {settings.sms_provider})")
        if curl:
            print("Send the demo user a notification:\n" + curl)
            print("Then read it back: GET /v1/notifications/<notification_id>, GET /v1/outbox"
                  " (same Authorization header).")
            print(f"Admin console: http://{settings.http_host}:{settings.http_port}/admin"
                  " (sign in with that API key). Ctrl-C stops Clarion.", flush=True)

    try:
        return _in_foreground(settings, announce)
    finally:
        print("Clarion stopped.")


def _node(settings: Settings) -> int:
    """One host of a cluster, in the foreground (a systemd unit runs exactly this)."""
    from clarion.supervision.cluster import is_leader

    serves_http = settings.node_role in ("gateway", "all")
    if serves_http:
        _migrate(settings)  # idempotent, and safe from several gateway hosts at once
    else:
        _declare_queues(settings)

    def announce(pgid: int) -> None:
        if settings.convention is None:
            where = "standing alone"
        elif is_leader(settings):
            where = f"leading the convention on {settings.convention}"
        else:
            where = f"joined to {settings.convention}"
        print(f"node {settings.node_name}: role {settings.node_role}, channels"
              f" {settings.node_channels}, actor admin on port {settings.actor_port}, {where};"
              f" actor processes in group {pgid}", flush=True)
        if serves_http:
            print(f"HTTP API on http://{settings.http_host}:{settings.http_port}", flush=True)

    try:
        return _in_foreground(settings, announce, serves_http)
    finally:
        print(f"node {settings.node_name} stopped.", flush=True)


def _actors(settings: Settings, action: str) -> int:
    from clarion.cli.service_errors import check_services
    from clarion.node.launcher import (
        admin_running,
        start_actor_system,
        stop_actor_system,
    )

    if action == "start":
        check_services(settings)
        start_actor_system(settings)
        print(f"actor system started on port {settings.actor_port}")
    elif action == "stop":
        stop_actor_system(settings)
        print("actor system stopped")
    else:
        up = admin_running(settings.actor_port, settings.node_address)
        print(f"actor system on port {settings.actor_port}: {'running' if up else 'not running'}")
        return 0 if up else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clarion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run Clarion in the foreground")
    run.add_argument("--demo", action="store_true",
                     help="seed demo data and print a ready-to-use curl command")
    node = sub.add_parser("node", help="run one host of a cluster in the foreground")
    node.add_argument("--role", choices=["gateway", "delivery", "all"],
                      help="which actors this host runs (CLARION_NODE_ROLE; default all)")
    node.add_argument("--channels", metavar="email,push",
                      help="the channels a delivery host delivers (CLARION_NODE_CHANNELS)")
    node.add_argument("--convention", metavar="HOST:PORT",
                      help="the convention leader's actor admin; the leader names itself"
                           " (CLARION_CONVENTION)")
    node.add_argument("--name", help="this host's name in the cluster (CLARION_NODE_NAME;"
                                     " default: the host name)")
    sub.add_parser("migrate", help="create/upgrade the database and declare the queues")
    sub.add_parser("seed", help="insert the demo user and template")
    key = sub.add_parser("apikey", help="manage API keys")
    key.add_argument("action", choices=["create", "revoke", "list"])
    key.add_argument("name", nargs="?")
    key.add_argument("--scope", choices=["send", "admin"],
                     help="create: what the key may do (send: post notifications and read its"
                          " own; admin: everything). Required")
    actors = sub.add_parser("actors", help="start, stop or check the actor system")
    actors.add_argument("action", choices=["start", "stop", "status"])
    sub.add_parser("serve", help="run only the HTTP server")
    send.add_parser(sub)
    sim = sub.add_parser("simulator", help="run the SendGrid/FCM simulator", add_help=False)
    sim.add_argument("rest", nargs=argparse.REMAINDER)

    given = sys.argv[1:] if argv is None else list(argv)
    if given[:1] == ["simulator"]:
        # Its options are the simulator's own: hand them over untouched (argparse's REMAINDER
        # refuses a first argument that looks like an option, such as --port).
        from clarion.simulator.server import main as simulator_main

        return int(simulator_main(given[1:]) or 0)
    args = parser.parse_args(given)
    if args.command == "node":
        # Options win over the environment; as CLARION_* variables they also reach the
        # processes the node starts (the actor system, the HTTP workers).
        import os

        for option, variable in (("role", "NODE_ROLE"), ("channels", "NODE_CHANNELS"),
                                 ("convention", "CONVENTION"), ("name", "NODE_NAME")):
            if getattr(args, option) is not None:
                os.environ["CLARION_" + variable] = getattr(args, option)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"clarion: {exc}", file=sys.stderr)
        return 2
    from clarion.cli import service_errors

    configure_logging(settings.log_level)
    service_errors.quiet_client_logs()
    try:
        if args.command == "send":
            return send.run(settings, args)
        if args.command == "run":
            return _run(settings, args.demo)
        if args.command == "node":
            return _node(settings)
        if args.command == "migrate":
            _migrate(settings)
        elif args.command == "seed":
            _seed(settings)
        elif args.command == "apikey":
            return _apikey(settings, args.action, args.name, args.scope)
        elif args.command == "actors":
            return _actors(settings, args.action)
        elif args.command == "serve":
            service_errors.check_services(settings)
            _serve(settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line for the operator, not a traceback
        from clarion.node.launcher import LauncherError

        if isinstance(exc, LauncherError):
            print(f"clarion: {exc}", file=sys.stderr)
            return 1
        unreachable = service_errors.explain(exc, settings)
        if unreachable is None:
            raise
        print(unreachable.line(), file=sys.stderr)
        return unreachable.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
