"""The admin console: one page at /admin that watches Clarion through its own JSON API.

Routes: `GET /admin` (a sign-in form, or the console once signed in), `POST /admin/login`,
`POST /admin/logout`, `GET /admin/api/host` (where this server runs), `GET /admin/api/stats`
(the live charts' series, http/routes/console_stats.py), `POST /admin/api/templates/preview`
(an unsaved template rendered, http/routes/console_templates.py) and `GET /admin/assets/{name}` (the
page's scripts and styles and the chart library, uPlot, all shipped in `http/admin/`: the
console needs no internet).

Sessions. Signing in with an API key or the internal secret (the same checks `ApiKeyMiddleware`
makes) sets a cookie `clarion_console` = base64url(JSON payload) "." base64url(HMAC-SHA256).
The HMAC key is derived from `CLARION_INTERNAL_SECRET`, which every worker and host already
shares, so any of them verifies any session; without that secret the console cannot sign
sessions and says so. (A per-process random key would break with several workers; a key derived
from the API key's stored digest would let anyone who reads the `api_keys` table forge sessions,
and those digests are meant to be useless to a reader.) Rotating the secret ends every session.
The payload names the credential (`internal`, or the API key's name and `key_id`) and an expiry
(8 h); only the internal secret or an `admin` key opens a session, and a key session is
re-checked against PostgreSQL (a revoked key stops within 30 s, as with bearer keys). The
cookie is HttpOnly (no script reads it), SameSite=Strict (no other site sends it), Secure unless
`CLARION_CONSOLE_INSECURE_COOKIE` is set for plain-HTTP development, and a cookie session
reaches only the calls the console makes (the `console` rules of http/auth.py); its writes
(replay, discard, removals, cancellations, template versions, retirements and revivals, test
sends) must also carry `X-Clarion-Console: 1`, which a cross-site form cannot send.

`ApiKeyMiddleware` asks `console_principal` on those calls when a request carries no API
credentials: `console:<credential>` for a valid session, else None.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import os
import socket
import time
from functools import cache
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from clarion.http.auth import ADMIN, TooManyAttempts, client_address
from clarion.http.responses import EnvelopeResponse, failure, success
from clarion.http.routes import console_stats, console_templates

log = logging.getLogger(__name__)

COOKIE = "clarion_console"
SESSION_SECONDS = 8 * 3600
ANONYMOUS = "anonymous"
CONSOLE_PREFIX = "console:"
_KEY_RECHECK_SECONDS = 30.0  # as KeyChecker remembers keys: revocation takes effect as fast
_CONTEXT = b"clarion/admin-console-session/v1"  # a key for this use only, never the secret itself
_ASSETS_DIR = Path(__file__).resolve().parent.parent / "admin"
_JS, _CSS = "text/javascript; charset=utf-8", "text/css; charset=utf-8"
# uPlot (MIT, https://github.com/leeoniya/uPlot): the charts, vendored from its npm package.
_ASSETS = {"console.js": _JS, "console-templates.js": _JS, "console-send.js": _JS,
           "console-users.js": _JS, "console-charts.js": _JS, "console.css": _CSS,
           "uplot-1.6.32.min.js": _JS, "uplot-1.6.32.min.css": _CSS}

_SAFE_METHODS = frozenset({"GET", "HEAD"})
_CSRF_HEADER = b"x-clarion-console"

_MESSAGES = {
    "invalid": "That key or secret was not accepted.",
    "scope": "That key may only send notifications: the console needs an admin key.",
    "disabled": "Console sign-in is off: set CLARION_INTERNAL_SECRET on every Clarion server"
                " (it also signs the console's sessions).",
    "origin": "The sign-in came from another site and was refused.",
    "unavailable": "Credentials cannot be checked right now; try again in a moment.",
    "busy": "Too many sign-in attempts from this address; try again in a moment.",
    "signed_out": "You are signed out.",
}

# Sent with both pages: only this server's own script, styles and API; never inside a frame.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self';"
                                " img-src 'self'; connect-src 'self'; form-action 'self';"
                                " base-uri 'none'; frame-ancestors 'none'"),
    # Not "no-referrer": with it browsers send `Origin: null` on the sign-in form's POST.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


# -- the session cookie ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, body: str) -> bytes:
    key = hmac.new(secret.encode("utf-8"), _CONTEXT, hashlib.sha256).digest()
    return hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()


def sign_session(secret: str, subject: str, key_id: int | None, now: float) -> str:
    """A session token for `subject` ("internal" or "key:<name>"), valid SESSION_SECONDS."""
    payload = {"sub": subject, "kid": key_id, "exp": int(now + SESSION_SECONDS)}
    body = _b64(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    return f"{body}.{_b64(_signature(secret, body))}"


def read_session(secret: str, token: str, now: float) -> dict[str, Any] | None:
    """The payload of a well-signed, unexpired token, or None."""
    body, _, signature = token.partition(".")
    if not body or not signature or len(token) > 1024:
        return None
    try:
        valid = hmac.compare_digest(_unb64(signature), _signature(secret, body))
        payload = json.loads(_unb64(body)) if valid else None
    except (ValueError, UnicodeError):
        return None
    if (not isinstance(payload, dict) or not isinstance(payload.get("sub"), str)
            or not isinstance(payload.get("exp"), int) or payload["exp"] <= now):
        return None
    return payload


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:  # a malformed Cookie header is no session
                return None
            morsel = jar.get(COOKIE)
            return morsel.value if morsel else None
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


_live_keys: dict[int, float] = {}  # key_id → when PostgreSQL last said it is live


async def _key_is_live(scope: Scope, key_id: int) -> bool:
    now = time.monotonic()
    if now - _live_keys.get(key_id, -_KEY_RECHECK_SECONDS) < _KEY_RECHECK_SECONDS:
        return True
    async with scope["app"].state.db.connection() as conn:
        cur = await conn.execute(
            "SELECT 1 FROM api_keys WHERE key_id = %s AND revoked_at IS NULL"
            " AND scope = 'admin'", (key_id,))
        live = await cur.fetchone() is not None
    if live:
        if len(_live_keys) > 10_000:
            _live_keys.clear()
        _live_keys[key_id] = now
    else:
        _live_keys.pop(key_id, None)
    return live


async def console_principal(scope: Scope, internal_secret: str | None) -> str | None:
    """`console:<subject>` for a request carrying a valid session cookie (and, for a write, the
    console's header), else None. Which calls a session may make is http/auth.py's table."""
    token = _cookie(scope)
    if not token or not internal_secret:
        return None
    payload = read_session(internal_secret, token, time.time())
    if payload is None:
        return None
    if scope.get("method", "") not in _SAFE_METHODS and _header(scope, _CSRF_HEADER) != "1":
        return None
    kid = payload.get("kid")
    if kid is not None and not (isinstance(kid, int) and await _key_is_live(scope, kid)):
        return None
    return CONSOLE_PREFIX + str(payload["sub"])


# -- signing in -----------------------------------------------------------------------------


def _internal_secret(request: Request) -> str | None:
    secret = request.app.state.settings.internal_secret
    return secret.get_secret_value() if secret else None


def _secure_cookie(request: Request) -> bool:
    """Whether the session cookie travels over HTTPS only: always, unless the operator turned
    it off for plain-HTTP development (behind a TLS proxy the server itself sees HTTP, so the
    request's scheme says nothing)."""
    return not request.app.state.settings.console_insecure_cookie


def _same_origin(request: Request) -> bool:
    """A browser says where a form was posted from; refuse another site's (login CSRF)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")  # "none": typed or bookmarked by the user
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser, or one that does not say: SameSite covers the rest
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _back_to_console(request: Request, notice: str | None = None) -> RedirectResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(f"{root}/admin" + (f"?notice={notice}" if notice else ""), 303)


async def login(request: Request) -> Response:
    secret = _internal_secret(request)
    if not _same_origin(request):
        return _back_to_console(request, "origin")
    if secret is None:
        return _back_to_console(request, "disabled")
    body = await request.body()
    credential = parse_qs(body.decode("utf-8", "replace")).get("credential", [""])[0].strip()
    subject: str | None = None
    key_id: int | None = None
    if credential and hmac.compare_digest(credential.encode(), secret.encode()):
        subject = "internal"
    elif credential and len(credential) <= 256:
        try:
            found = await request.app.state.keys.record(credential, client_address(request.scope))
        except TooManyAttempts:
            return _back_to_console(request, "busy")
        except Exception:  # as the middleware: the key store is away, say so
            log.warning("api key lookup failed", exc_info=True)
            return _back_to_console(request, "unavailable")
        if found is not None and found.scope != ADMIN:
            return _back_to_console(request, "scope")
        if found is not None:
            key_id, subject = found.key_id, f"key:{found.name}"
    if subject is None:
        return _back_to_console(request, "invalid")
    response = _back_to_console(request)
    response.set_cookie(COOKIE, sign_session(secret, subject, key_id, time.time()),
                        max_age=SESSION_SECONDS, path="/", httponly=True, samesite="strict",
                        secure=_secure_cookie(request))
    return response


async def logout(request: Request) -> Response:
    if not _same_origin(request):
        return _back_to_console(request, "origin")
    response = _back_to_console(request, "signed_out")
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_secure_cookie(request))
    return response


# -- the pages ------------------------------------------------------------------------------


@cache
def _asset(name: str) -> bytes:
    return (_ASSETS_DIR / name).read_bytes()


def _page(name: str, **values: str) -> HTMLResponse:
    text = _asset(name).decode("utf-8")
    for marker, value in values.items():
        text = text.replace("{{" + marker + "}}", html.escape(value))
    return HTMLResponse(text, headers=_PAGE_HEADERS)


async def console(request: Request) -> Response:
    principal = str(request.scope.get("state", {}).get("principal", ""))
    root = request.scope.get("root_path", "").rstrip("/")
    if principal.startswith(CONSOLE_PREFIX):
        return _page("console.html", root=root, who=principal.removeprefix(CONSOLE_PREFIX))
    notice = request.query_params.get("notice", "")
    if _internal_secret(request) is None:
        notice = "disabled"
    return _page("login.html", root=root, notice=_MESSAGES.get(notice, ""),
                 notice_class="notice" if notice in _MESSAGES else "notice hidden")


async def host(request: Request) -> EnvelopeResponse:
    # The actor system runs beside this server (the bridge reaches it on 127.0.0.1), so this
    # host is the actors' host; `now` lets the page compute uptimes on the server's clock.
    return success({"hostname": socket.gethostname(), "pid": os.getpid(), "now": time.time()})


async def asset(request: Request) -> Response:
    name = str(request.path_params["name"])
    if name not in _ASSETS:
        return failure(404, "not_found", f"no asset '{name}'")
    return Response(_asset(name), media_type=_ASSETS[name],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


routes = [
    Route("/admin", console, methods=["GET"]),
    Route("/admin/login", login, methods=["POST"]),
    Route("/admin/logout", logout, methods=["POST"]),
    Route("/admin/api/host", host, methods=["GET"]),
    *console_stats.routes,
    *console_templates.routes,
    Route("/admin/assets/{name}", asset, methods=["GET"]),
]
