"""The two yardsticks Clarion is measured against, served exactly like `clarion serve`.

* `ceiling`: hello-world Starlette: `POST /v1/notifications` reads the body and answers a small
  JSON 202. Nothing can be faster through this HTTP stack: it is the ceiling.
* `reference`: the same flow as Clarion's hot path written as plain async code in one process:
  Redis GET of the user (cache) → PostgreSQL SELECT on a miss (psycopg async pool, then Redis SET
  of the user) → Jinja2 sandboxed render → aio-pika publish of the rendered notification with
  publisher confirms to a durable queue of its own → Redis SET of the notification's status → 202.
  It does not write the notification to PostgreSQL and publishes one message per notification
  (Clarion writes a row and publishes one message per channel): see bench/README.md.

Both are served by `python -m bench.targets {ceiling,reference} --port N` with uvicorn's settings
of `clarion serve` (cli/main.py `_serve`): 1 worker, access log off, log level warning, uvloop and
httptools (uvicorn's "auto"), our own logging config (none).

The reference reads its configuration from BENCH_REF_* variables (set by bench/run.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _envelope(data: Any, message: str = "notification accepted") -> dict[str, Any]:
    return {"success": True, "data": data, "error": None, "message": message, "meta": None}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "data": None, "error": code, "message": message,
                         "meta": None}, status_code=status)


async def _health(request: Request) -> Response:
    return JSONResponse({"ok": True})


# -- the ceiling -----------------------------------------------------------------------------


async def _ceiling_post(request: Request) -> Response:
    await request.body()
    return JSONResponse(_envelope({"notification_id": str(uuid.uuid4()), "status": "queued"}),
                        status_code=202)


def ceiling_app() -> Starlette:
    return Starlette(routes=[Route("/v1/notifications", _ceiling_post, methods=["POST"]),
                             Route("/health", _health, methods=["GET"])])


# -- the reference ---------------------------------------------------------------------------

USER_TTL = 3600
STATUS_TTL = 3600


def reference_app() -> Starlette:
    import aio_pika
    import redis.asyncio as aioredis
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment
    from psycopg_pool import AsyncConnectionPool

    database_url = os.environ["BENCH_REF_DATABASE_URL"]
    redis_url = os.environ["BENCH_REF_REDIS_URL"]
    amqp_url = os.environ["BENCH_REF_AMQP_URL"]
    queue_name = os.environ.get("BENCH_REF_QUEUE", "bench.reference")
    api_key = os.environ["BENCH_REF_API_KEY"].encode()
    default_language = "en"

    pool = AsyncConnectionPool(database_url, min_size=1, max_size=10, open=False,
                               kwargs={"autocommit": True})
    text_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    html_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
    state: dict[str, Any] = {}

    async def load_templates() -> dict[tuple[str, str], dict[str, Any]]:
        """Every template's latest version per language, compiled once (Clarion caches too)."""
        compiled: dict[tuple[str, str], dict[str, Any]] = {}
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT DISTINCT ON (template_key, language) template_key, language, version,"
                " subject, body, html_body, push_title, push_body FROM templates"
                " ORDER BY template_key, language, version DESC")
            for key, lang, version, subject, body, html, title, push_body in await cur.fetchall():
                compiled[(key, lang)] = {
                    "version": version,
                    "subject": text_env.from_string(subject),
                    "body": text_env.from_string(body),
                    "html_body": html_env.from_string(html) if html else None,
                    "push_title": text_env.from_string(title) if title else None,
                    "push_body": text_env.from_string(push_body) if push_body else None,
                }
        return compiled

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=10)
        state["redis"] = aioredis.from_url(redis_url, socket_timeout=2)
        connection = await aio_pika.connect(amqp_url, timeout=10)
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue_name, durable=True)
        state["channel"] = channel
        state["templates"] = await load_templates()
        try:
            yield
        finally:
            await connection.close()
            await state["redis"].aclose()
            await pool.close()

    async def fetch_user(user_id: str) -> dict[str, Any] | None:
        r = state["redis"]
        cached = await r.get(f"bench:ref:user:{user_id}")
        if cached is not None:
            return json.loads(cached)  # type: ignore[no-any-return]
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT user_id, email_address, preferred_language, push_tokens FROM users"
                " WHERE user_id = %s", (user_id,))
            row = await cur.fetchone()
        if row is None:
            return None
        user = {"user_id": row[0], "email_address": row[1], "preferred_language": row[2],
                "push_tokens": list(row[3] or ())}
        await r.set(f"bench:ref:user:{user_id}", json.dumps(user), ex=USER_TTL)
        return user

    async def post(request: Request) -> Response:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), api_key):
            return _error(401, "unauthorized", "missing or invalid credentials")
        try:
            body = json.loads(await request.body())
            user_id = body["user_id"]
            template_key = body["template_key"]
            variables = body.get("message_data") or {}
        except (ValueError, KeyError, TypeError):
            return _error(422, "validation_error", "user_id and template_key are required")
        user = await fetch_user(user_id)
        if user is None:
            return _error(404, "user_not_found", f"no user '{user_id}'")
        language = user["preferred_language"] or default_language
        template = (state["templates"].get((template_key, language))
                    or state["templates"].get((template_key, default_language)))
        if template is None:
            return _error(404, "template_not_found", f"no template '{template_key}'")
        rendered = {field: (template[field].render(variables) if template[field] else None)
                    for field in ("subject", "body", "html_body", "push_title", "push_body")}
        notification_id = str(uuid.uuid4())
        message = {"notification_id": notification_id, "user_id": user_id,
                   "template_key": template_key, "template_version": template["version"],
                   "language": language, "to": user["email_address"],
                   "tokens": user["push_tokens"], **rendered}
        await state["channel"].default_exchange.publish(
            aio_pika.Message(json.dumps(message).encode(), content_type="application/json",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             message_id=notification_id),
            routing_key=queue_name,
        )  # returns once the broker confirmed (publisher_confirms=True)
        await state["redis"].set(f"bench:ref:notification:{notification_id}", "queued",
                                 ex=STATUS_TTL)
        return JSONResponse(_envelope({"notification_id": notification_id, "status": "queued",
                                       "language": language,
                                       "template_version": template["version"]}),
                            status_code=202)

    return Starlette(routes=[Route("/v1/notifications", post, methods=["POST"]),
                             Route("/health", _health, methods=["GET"])],
                     lifespan=lifespan)


# -- serving ---------------------------------------------------------------------------------


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=("ceiling", "reference"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # The same uvicorn settings as `clarion serve` (cli/main.py `_serve`).
    uvicorn.run(
        f"bench.targets:{args.target}_app", factory=True, host=args.host, port=args.port,
        workers=args.workers, access_log=False, log_level="warning", timeout_graceful_shutdown=10,
        log_config=None,
    )


if __name__ == "__main__":
    main()
