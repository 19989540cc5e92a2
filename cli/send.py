"""`clarion send`: send one notification from the command line, through the Python client
(client/, `clarion-client`), as a service would: the operator's way to check a template, a user
or a provider end to end.

    clarion send --user demo-user --template welcome --var name=Ada [--channel email]
                 [--url http://127.0.0.1:8000] [--api-key KEY | CLARION_API_KEY] [--wait]

Prints the 202's data as JSON (with `--wait`, the notification once it has left the queue). A
refusal is one line with Clarion's stable code and the request id (exit 1); Clarion out of reach
is one line naming the URL (exit 7). Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from clarion.config.settings import Settings

UNREACHABLE = 7  # exit code: Clarion's HTTP API did not answer
WAIT_SECONDS = 30.0
SETTLED = {"sent", "delivered", "failed", "partially_sent", "cancelled"}


def add_parser(sub: Any) -> None:
    send = sub.add_parser("send", help="send one notification through the HTTP API")
    send.add_argument("--user", required=True, help="the user id")
    send.add_argument("--template", required=True, help="the template key")
    send.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                      help="a template variable (repeat it); the value is text")
    send.add_argument("--channel", action="append", dest="channels", metavar="CHANNEL",
                      choices=["email", "push", "sms"], help="only this channel (repeat it)")
    send.add_argument("--url", help="Clarion's base URL (default: this host's"
                                    " CLARION_HTTP_HOST and CLARION_HTTP_PORT)")
    send.add_argument("--api-key", help="an API key (default: $CLARION_API_KEY)")
    send.add_argument("--wait", action="store_true",
                      help="wait until it has left the queue and print its channels")


def variables(pairs: list[str]) -> dict[str, str] | str:
    """`KEY=VALUE` pairs as a dict, or the text of what is wrong."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            return f"--var {pair!r}: expected KEY=VALUE"
        found[key] = value
    return found


def run(settings: Settings, args: argparse.Namespace) -> int:
    import logging

    from clarion_client import Clarion, ClarionError, ConnectionFailed

    logging.getLogger("clarion_client").setLevel(logging.WARNING)  # its retries: not news here
    data = variables(args.var)
    if isinstance(data, str):
        print(f"clarion: {data}", file=sys.stderr)
        return 2
    key = args.api_key or os.environ.get("CLARION_API_KEY")
    if not key:
        print("clarion: give an API key: --api-key KEY or CLARION_API_KEY"
              " (clarion apikey create NAME --scope send)", file=sys.stderr)
        return 2
    url = args.url or f"http://{settings.http_host}:{settings.http_port}"
    try:
        with Clarion(url, key) as clarion:
            accepted = clarion.notifications.send(args.user, args.template, data,
                                                  channels=args.channels)
            shown: Any = dict(accepted.raw)
            if args.wait:
                deadline = time.monotonic() + WAIT_SECONDS
                notification = clarion.notifications.get(accepted.notification_id)
                while notification.status not in SETTLED and time.monotonic() < deadline:
                    time.sleep(0.2)
                    notification = clarion.notifications.get(accepted.notification_id)
                shown = dict(notification.raw)
    except ConnectionFailed as exc:
        print(f"clarion: cannot reach Clarion at {url}: {exc.message}; check --url (or"
              " CLARION_HTTP_HOST / CLARION_HTTP_PORT) and that `clarion run` is up",
              file=sys.stderr)
        return UNREACHABLE
    except ClarionError as exc:
        print(f"clarion: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(shown, indent=2, default=str))
    return 0
