"""Who may call what: principals, API-key scopes, and the one access table that the middleware,
the admin console and the OpenAPI document all read.

Principals (`scope["state"]["principal"]` once a request is admitted; `scope["state"]["access"]`
holds what it may do, `send` or `admin`):

    key:<name>          an API key (`Authorization: Bearer`), of scope `send` or `admin`
    internal            the shared service secret (`X-Internal-Secret`), on management routes
    console:<subject>   an admin console session (cookie, http/routes/admin.py); <subject> is
                        `internal` or `key:<name>`, the credential it was opened with
    anonymous           nobody: public routes only

Scopes: a `send` key posts notifications and reads the ones created under its name; an `admin`
key may do everything. The access table (`RULES`) decides on the *route path* (Starlette's
`get_route_path`: the path without `root_path`, which is what routing matches), never on
`scope["path"]`, which includes `root_path` under `uvicorn --root-path` and once let every /v1
route answer without credentials. It fails closed: a path no rule names (an unknown one too)
needs an admin key.

Checking a key costs a PostgreSQL query, so `KeyChecker` remembers answers: a live key for
30 s (revoking takes that long to bite), an unknown one for a few seconds (a flood of one wrong
key costs one query); and before asking about a key it does not remember it spends a token of
the client address's bucket (a flood of made-up keys from one address is answered 429 without
reaching the database).
"""

from __future__ import annotations

import asyncio

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette._utils import get_route_path  # what Starlette's routing matches on
from starlette.types import ASGIApp, Receive, Scope, Send

from clarion.http.middleware import header, send_error

log = logging.getLogger(__name__)

PUBLIC, SEND, ADMIN = "public", "send", "admin"
INTERNAL = "internal"
CONSOLE_INTERNAL = "console:internal"  # a console session opened with the internal secret
ANONYMOUS = "anonymous"
KEY_PREFIX = "key:"
_READ = "GET HEAD"


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may make the calls `methods` (None: any) × `pattern` (a full match of the route
    path): the scope `need`s (public: anyone), and whether the internal secret or a console
    session may make them too; `console_internal` False keeps a call from console sessions
    opened with the internal secret (which never sends notifications, console or not)."""

    methods: frozenset[str] | None
    pattern: re.Pattern[str]
    need: str
    internal: bool = False
    console: bool = False
    console_internal: bool = True

    def matches(self, method: str, path: str) -> bool:
        return (self.methods is None or method in self.methods) \
            and self.pattern.fullmatch(path) is not None


def _rule(methods: str | None, pattern: str, need: str, *, internal: bool = False,
          console: bool = False, console_internal: bool = True) -> Rule:
    return Rule(frozenset(methods.split()) if methods else None, re.compile(pattern), need,
                internal, console, console_internal)


# The first rule that matches decides. A console session reaches exactly the calls the console
# page makes, its writes only with `X-Clarion-Console: 1` (http/routes/admin.py). So a stolen
# cookie can read what an operator reads, replay and discard dead letters one by one, remove
# suppressions, cancel scheduled notifications, publish, retire and revive templates, and send
# single notifications (recorded as `console:<subject>`, under that principal's own rate limit).
# It cannot post batches, replay dead letters in bulk, write users or push tokens, add
# suppressions, register status callbacks or read /metrics.
RULES: tuple[Rule, ...] = (
    # Public: they show no data (health answers name no host, port or pid).
    _rule(_READ, r"/health(/ready)?", PUBLIC),
    _rule(_READ, r"/openapi\.json|/docs|/docs/assets/[A-Za-z0-9._/-]+", PUBLIC),
    _rule(_READ, r"/admin/?", PUBLIC, console=True),  # the sign-in form, or the console itself
    _rule("POST", r"/admin/(login|logout)", PUBLIC),
    # A provider's webhook: trusted for its signature, checked by the route (no API key).
    _rule("POST", r"/v1/providers/(sendgrid/events|twilio/status)", PUBLIC),
    _rule(_READ, r"/admin/assets/[A-Za-z0-9._-]+", PUBLIC),
    # Send: post notifications, read and cancel the ones this key's name created (the routes
    # filter).
    _rule("POST", r"/v1/notifications", SEND, console=True,  # the console's test sends
          console_internal=False),
    _rule("POST", r"/v1/notifications/batch", SEND),
    _rule(_READ, r"/v1/notifications(/[^/]+)?", SEND, console=True),
    _rule("DELETE", r"/v1/notifications/[^/]+", SEND, console=True),
    # Its own status callbacks' endpoint (the routes act on the caller's principal only).
    _rule(None, r"/v1/callbacks(/log)?", SEND),
    # Admin: everything else.
    _rule(_READ, r"/admin/api/(host|stats)", ADMIN, internal=True, console=True),
    _rule("POST", r"/admin/api/templates/preview", ADMIN, internal=True, console=True),
    _rule(_READ, r"/v1/system/(actors|cluster|providers)", ADMIN, internal=True, console=True),
    _rule(_READ, r"/v1/alerts", ADMIN, console=True),
    _rule(_READ, r"/v1/dlq", ADMIN, internal=True, console=True),
    _rule("POST", r"/v1/dlq/[0-9]+/replay", ADMIN, internal=True, console=True),
    _rule("DELETE", r"/v1/dlq/[0-9]+", ADMIN, internal=True, console=True),
    _rule(_READ, r"/v1/outbox", ADMIN, console=True),
    _rule(_READ, r"/v1/suppressions(/(?s:.+))?", ADMIN, internal=True, console=True),
    _rule("DELETE", r"/v1/suppressions/(?s:.+)", ADMIN, internal=True, console=True),
    _rule("POST", r"/v1/suppressions", ADMIN, internal=True),
    # Templates: the console lists, previews, publishes, retires and revives them.
    _rule(_READ, r"/v1/templates(/[^/]+(/versions)?)?", ADMIN, internal=True, console=True),
    _rule("POST", r"/v1/templates(/render)?", ADMIN, internal=True, console=True),
    _rule("PUT DELETE", r"/v1/templates/[^/]+", ADMIN, internal=True, console=True),
    # Users: the console looks them up; it never writes them.
    _rule(_READ, r"/v1/users(/[^/]+)?", ADMIN, internal=True, console=True),
    _rule(None, r"/v1/(users|templates|system|dlq)(/.*)?", ADMIN, internal=True),
    _rule(None, r"/admin(/.*)?", ADMIN, internal=True),
    _rule(_READ, r"/metrics", ADMIN, internal=True),
)
# No rule names it (an unknown path included): an admin key, nothing else. Fail closed.
FALLBACK = _rule(None, r".*", ADMIN)


def rule_for(method: str, path: str) -> Rule:
    return next((rule for rule in RULES if rule.matches(method, path)), FALLBACK)


@dataclass(frozen=True, slots=True)
class Grant:
    """An authenticated caller: its principal and what it may do (`send` or `admin`)."""

    principal: str
    access: str | None = None  # None: anonymous
    key_id: int | None = None

    def may(self, rule: Rule) -> bool:
        if rule.need == PUBLIC:
            return True
        if self.principal == INTERNAL:
            return rule.internal
        if self.principal == CONSOLE_INTERNAL and not rule.console_internal:
            return False
        if self.access == ADMIN:
            return True
        return self.access == SEND and rule.need == SEND


ANONYMOUS_GRANT = Grant(ANONYMOUS)
INTERNAL_GRANT = Grant(INTERNAL, ADMIN)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A live API key as PostgreSQL knows it."""

    key_id: int
    name: str
    scope: str

    def grant(self) -> Grant:
        return Grant(KEY_PREFIX + self.name, self.scope, self.key_id)


class TooManyAttempts(Exception):
    """This client address checked too many unknown keys; retry after `retry_after` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many key checks; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class AddressBuckets:
    """A token bucket per client address (in this process): `rate` tokens a second, at most
    `rate` (and at least 1) saved up."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address → (tokens, at)

    def take(self, address: str) -> float:
        """0 if a token was taken, else the seconds until one is there."""
        now = self._clock()
        tokens, at = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self._buckets) > 10_000:
            self._buckets.clear()  # many addresses: forget full buckets rather than grow
        self._buckets[address] = (tokens - 1, now)
        return 0.0


Lookup = Callable[[str], Awaitable[KeyRecord | None]]


class KeyChecker:
    """API keys checked against PostgreSQL (`lookup`, by the key's SHA-256 digest), with the
    answers remembered: live keys for `cache_seconds`, unknown ones for `negative_seconds`.
    A key it does not remember first costs a token of the client address's bucket."""

    def __init__(self, lookup: Lookup, lookups_per_second: float,
                 cache_seconds: float = 30.0, negative_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._buckets = AddressBuckets(lookups_per_second, clock)
        self._cache_seconds = cache_seconds
        self._negative_seconds = negative_seconds
        self._clock = clock
        self._known: dict[str, tuple[KeyRecord | None, float]] = {}  # digest → (record, until)
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}  # digest → its lookup

    async def record(self, key: str, client: str) -> KeyRecord | None:
        """The live key `key`, or None. Raises TooManyAttempts before asking PostgreSQL about a
        key not remembered when `client` spent its tokens; lookup errors propagate.

        A live key whose entry has expired is checked again (a revocation takes effect) without
        charging the client: it is known, not guessed. Requests that arrive together with one
        key share one lookup (64 at once once spent a whole address's budget, and got 429)."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        now = self._clock()
        known = self._known.get(digest)
        if known is not None and now < known[1]:
            return known[0]
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        if known is None or known[0] is None:
            wait = self._buckets.take(client)
            if wait:
                raise TooManyAttempts(wait)
        lookup = asyncio.ensure_future(self._lookup(digest))
        self._inflight[digest] = lookup
        try:
            found = await asyncio.shield(lookup)
        finally:
            self._inflight.pop(digest, None)
        if len(self._known) > 10_000:
            self._known.clear()  # a flood of made-up keys: start over rather than grow
        ttl = self._cache_seconds if found is not None else self._negative_seconds
        self._known[digest] = (found, self._clock() + ttl)
        return found


def client_address(scope: Scope) -> str:
    """The connecting address (behind a proxy, the proxy's: the limit is then shared)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ApiKeyMiddleware:
    """Admits a request by the access table: 401 without valid credentials, 403 when the
    credentials' scope does not reach the route, 429 when the client address checked too many
    unknown keys, 503 when the key store cannot answer."""

    def __init__(self, app: ASGIApp, keys: KeyChecker, internal_secret: str | None = None) -> None:
        self.app = app
        self.keys = keys
        self.internal_secret = internal_secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = rule_for(scope.get("method", ""), get_route_path(scope))
        try:
            grant = await self._grant(scope, rule)
        except TooManyAttempts as exc:
            await send_error(send, 429, "rate_limited",
                             "too many unknown credentials from this address; slow down",
                             [(b"retry-after", str(max(1, round(exc.retry_after))).encode())])
            return
        except Exception:  # the key store is unreachable: say so, briefly
            log.warning("api key lookup failed", exc_info=True)
            await send_error(send, 503, "auth_unavailable",
                             "credentials cannot be checked right now, retry",
                             [(b"retry-after", b"1")])
            return
        if grant is None:
            # One answer for every failure: no hint of which part was wrong.
            await send_error(send, 401, "unauthorized", "missing or invalid credentials",
                             [(b"www-authenticate", b'Bearer realm="clarion"')])
            return
        if not grant.may(rule):
            message = (f"this API key's scope ({grant.access}) does not allow this call"
                       if grant.principal != CONSOLE_INTERNAL else
                       "a console session opened with the internal secret cannot make this"
                       " call (the secret never sends notifications): sign in with an admin"
                       " API key")
            await send_error(send, 403, "forbidden", message)
            return
        state = scope.setdefault("state", {})
        state["principal"], state["access"] = grant.principal, grant.access
        await self.app(scope, receive, send)

    async def _grant(self, scope: Scope, rule: Rule) -> Grant | None:
        if rule.need == PUBLIC and not rule.console:
            return ANONYMOUS_GRANT  # no credentials needed: none are checked
        secret = header(scope, b"x-internal-secret")
        auth = header(scope, b"authorization")
        if secret is not None and self.internal_secret and rule.internal:
            if hmac.compare_digest(secret.encode(), self.internal_secret.encode()):
                return INTERNAL_GRANT
            return None
        if secret is None and auth is None and rule.console:
            from clarion.http.routes.admin import console_principal

            principal = await console_principal(scope, self.internal_secret)
            if principal is not None:
                return Grant(principal, ADMIN)
        if rule.need == PUBLIC:
            return ANONYMOUS_GRANT
        scheme, _, key = (auth or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or len(key) > 256:
            return None
        found = await self.keys.record(key, client_address(scope))
        return found.grant() if found is not None else None
