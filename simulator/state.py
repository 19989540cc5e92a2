"""Shared, thread-safe state of the provider simulator.

Owns what the simulator remembers (accepted messages, rejected attempts, issued
OAuth2 tokens, the webhooks it posted), the Twilio credentials it expects, if any, its SendGrid
signing key, and the fault-injection and event configuration. The HTTP handlers run on the
server's event loop thread while tests read this object from their own thread, so every access
goes through one lock.
"""

from __future__ import annotations

import copy
import random
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

from .events import OUTCOMES, SendGridSigner
from .webhooks import is_local_target

CHANNELS = ("email", "push", "sms")

# Keys accepted by PUT /_sim/config; anything else is a typo in a test and is rejected.
CONFIG_KEYS = ("latency_ms", "fail_next", "fail_status", "rate_limit_next", "fail_ratio",
               "twilio_down_accounts", "sendgrid_event_webhook", "event_rules", "event_delay_ms")
EVENT_KINDS = ("sendgrid", "twilio")
# Waits between tries of a webhook post that got no 2xx; SendGrid retries too, only for longer.
WEBHOOK_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)


class ConfigError(ValueError):
    """A fault-injection update that does not fit the documented shape."""


def _default_config() -> dict[str, Any]:
    return {
        "latency_ms": 0,
        "fail_next": {channel: 0 for channel in CHANNELS},
        "fail_status": 503,
        "rate_limit_next": {channel: 0 for channel in CHANNELS},
        # Probability (0..1) that a call fails with fail_status, per channel: a flaky provider.
        "fail_ratio": {channel: 0.0 for channel in CHANNELS},
        # Twilio accounts (SIDs) whose every call fails with fail_status: one account down while
        # another is up (SMS failover between two accounts).
        "twilio_down_accounts": [],
        # Where SendGrid events are posted; None: no events.
        "sendgrid_event_webhook": None,
        # [{"match": fnmatch pattern on the recipient, "outcome": name}]; first match wins.
        "event_rules": [],
        "event_delay_ms": 0,
    }


def _non_negative_int(value: Any, name: str) -> int:
    # bool is an int subclass; `true` in a JSON config is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer")
    return value


def _channel_counts(value: Any, name: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be an object like {{\"email\": 1, \"push\": 0}}")
    unknown = set(value) - set(CHANNELS)
    if unknown:
        raise ConfigError(f"{name} has unknown channel(s): {', '.join(sorted(unknown))}")
    return {channel: _non_negative_int(count, f"{name}.{channel}") for channel, count in value.items()}


def _webhook_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_local_target(value):
        raise ConfigError("sendgrid_event_webhook must be null or an http(s) URL on localhost or an IP address")
    return value


def _event_rules(value: Any) -> list[dict[str, str]]:
    known = sorted(set(OUTCOMES["email"]) | set(OUTCOMES["sms"]))
    if not isinstance(value, list):
        raise ConfigError('event_rules must be a list like [{"match": "*@bounce.test", "outcome": "bounce"}]')
    rules = []
    for index, rule in enumerate(value):
        if not isinstance(rule, dict) or set(rule) != {"match", "outcome"}:
            raise ConfigError(f"event_rules[{index}] must have exactly the keys match and outcome")
        if not isinstance(rule["match"], str) or not rule["match"]:
            raise ConfigError(f"event_rules[{index}].match must be a non-empty fnmatch pattern")
        if rule["outcome"] not in known:
            raise ConfigError(f"event_rules[{index}].outcome must be one of: {', '.join(known)}")
        rules.append({"match": rule["match"], "outcome": rule["outcome"]})
    return rules


def new_id() -> str:
    """A fresh opaque id, shaped like SendGrid's X-Message-Id (URL-safe, 22 chars)."""
    return secrets.token_urlsafe(16)


class SimulatorState:
    """Everything the simulator knows; safe to share between threads.

    Many small methods, for a reason: each is one lock-guarded operation the HTTP handlers or
    the tests call (fault injection, tokens, records, webhook posts, waiting)."""

    def __init__(
        self,
        *,
        twilio_credentials: tuple[str, str] | None = None,
        webhook_backoff_s: Sequence[float] = WEBHOOK_BACKOFF_S,
    ) -> None:
        """`twilio_credentials`: the (Account SID, auth token) the Twilio route accepts; None
        (the default) accepts any non-empty token for the account named in the URL.
        `webhook_backoff_s`: the waits between tries of a webhook post (one try more than
        waits); a test of giving up shortens them."""
        self._lock = threading.Lock()
        # Notified on every new record so tests can wait instead of polling.
        self._changed = threading.Condition(self._lock)
        self._messages: list[dict[str, Any]] = []
        self._rejected: list[dict[str, Any]] = []
        self._tokens: set[str] = set()
        self._config = _default_config()
        self._random = random.Random(20261123)  # seeded: a flaky run is repeatable
        self._initial_twilio_credentials = twilio_credentials
        self._twilio_credentials = twilio_credentials
        self._event_posts: dict[str, dict[str, Any]] = {}  # by id, in the order they were made
        self.webhook_backoff_s = tuple(webhook_backoff_s)
        # Kept across reset(): a receiver is configured with the public key once.
        self.sendgrid_signer = SendGridSigner()

    # -- fault injection -------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._config)

    def update_config(self, update: dict[str, Any]) -> dict[str, Any]:
        """Merges `update` into the config (per channel for the counters) and returns the result.

        Validates everything before changing anything, so a bad update leaves the
        config as it was.
        """
        if not isinstance(update, dict):
            raise ConfigError("config must be a JSON object")
        unknown = set(update) - set(CONFIG_KEYS)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        checked: dict[str, Any] = {}
        if "latency_ms" in update:
            checked["latency_ms"] = _non_negative_int(update["latency_ms"], "latency_ms")
        if "fail_status" in update:
            status = update["fail_status"]
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise ConfigError("fail_status must be an HTTP error status (400-599)")
            checked["fail_status"] = status
        for key in ("fail_next", "rate_limit_next"):
            if key in update:
                checked[key] = _channel_counts(update[key], key)
        if "fail_ratio" in update:
            ratios = update["fail_ratio"]
            if not isinstance(ratios, dict) or set(ratios) - set(CHANNELS) or any(
                    isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1
                    for r in ratios.values()):
                raise ConfigError('fail_ratio must be like {"email": 0.5} with values in 0..1')
            checked["fail_ratio"] = {c: float(r) for c, r in ratios.items()}
        if "twilio_down_accounts" in update:
            down = update["twilio_down_accounts"]
            if not isinstance(down, list) or not all(isinstance(s, str) and s for s in down):
                raise ConfigError("twilio_down_accounts must be a list of account SIDs")
            checked["twilio_down_accounts"] = list(down)
        if "sendgrid_event_webhook" in update:
            checked["sendgrid_event_webhook"] = _webhook_url(update["sendgrid_event_webhook"])
        if "event_rules" in update:
            checked["event_rules"] = _event_rules(update["event_rules"])
        if "event_delay_ms" in update:
            checked["event_delay_ms"] = _non_negative_int(update["event_delay_ms"], "event_delay_ms")
        with self._lock:
            for key, value in checked.items():
                if isinstance(value, dict):
                    self._config[key].update(value)
                else:
                    self._config[key] = value
            return copy.deepcopy(self._config)

    def twilio_account_down(self, account_sid: str) -> bool:
        with self._lock:
            return account_sid in self._config["twilio_down_accounts"]

    def latency_seconds(self) -> float:
        with self._lock:
            return self._config["latency_ms"] / 1000.0

    def take_fault(self, channel: str) -> tuple[str, int] | None:
        """Consumes one injected fault for `channel`, if any is pending.

        Returns ("rate_limit", 429) or ("fail", fail_status) or None. Rate limits
        are consumed first: a throttled request never reaches the failing backend.
        Check-and-decrement happens under the lock so concurrent requests never
        consume the same fault twice.
        """
        with self._lock:
            if self._config["rate_limit_next"].get(channel, 0) > 0:
                self._config["rate_limit_next"][channel] -= 1
                return ("rate_limit", 429)
            if self._config["fail_next"].get(channel, 0) > 0:
                self._config["fail_next"][channel] -= 1
                return ("fail", self._config["fail_status"])
            if self._random.random() < self._config["fail_ratio"].get(channel, 0.0):
                return ("fail", self._config["fail_status"])
            return None

    # -- OAuth2 tokens ----------------------------------------------------

    def issue_token(self) -> str:
        token = f"sim-{secrets.token_urlsafe(24)}"
        with self._lock:
            self._tokens.add(token)
        return token

    def token_is_valid(self, token: str) -> bool:
        with self._lock:
            return token in self._tokens

    def revoke_tokens(self) -> None:
        """Forgets every issued token, e.g. to exercise a client's refresh-on-401 path."""
        with self._lock:
            self._tokens.clear()

    @property
    def issued_token_count(self) -> int:
        with self._lock:
            return len(self._tokens)

    # -- Twilio credentials --------------------------------------------------

    def expect_twilio_credentials(self, account_sid: str | None, auth_token: str | None = None) -> None:
        """From now on the Twilio route accepts only this pair; `None` accepts any token again.

        `reset()` returns to what the state was created with."""
        if (account_sid is None) != (auth_token is None) or account_sid == "" or auth_token == "":
            raise ValueError("give a non-empty account_sid and auth_token, or neither")
        with self._lock:
            self._twilio_credentials = None if account_sid is None else (account_sid, auth_token)

    def twilio_credentials_valid(self, account_sid: str, auth_token: str) -> bool:
        """Whether Basic credentials (account_sid, auth_token) may send for `account_sid`."""
        if not account_sid or not auth_token:
            return False
        with self._lock:
            expected = self._twilio_credentials
        if expected is None:
            return True
        return secrets.compare_digest(f"{account_sid}:{auth_token}".encode(), f"{expected[0]}:{expected[1]}".encode())

    # -- records ----------------------------------------------------------

    def record_message(self, record: dict[str, Any]) -> dict[str, Any]:
        return self._append(self._messages, record)

    def record_rejected(self, record: dict[str, Any]) -> dict[str, Any]:
        return self._append(self._rejected, record)

    def _append(self, target: list[dict[str, Any]], record: dict[str, Any]) -> dict[str, Any]:
        record = {"id": new_id(), "received_at": time.time(), **record}
        with self._changed:
            target.append(record)
            self._changed.notify_all()
        return copy.deepcopy(record)

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        return self._select(self._messages, channel)

    def rejected(self, channel: str | None = None) -> list[dict[str, Any]]:
        return self._select(self._rejected, channel)

    def _select(self, source: list[dict[str, Any]], channel: str | None) -> list[dict[str, Any]]:
        with self._lock:
            # Deep copies: callers must not be able to mutate what the server serves.
            return [copy.deepcopy(r) for r in source if channel is None or r["channel"] == channel]

    def clear_messages(self) -> None:
        """Forgets accepted and rejected records and webhook posts (not tokens or config); a
        post still waiting or retrying is abandoned."""
        with self._lock:
            self._messages.clear()
            self._rejected.clear()
            self._event_posts.clear()

    def reset(self) -> None:
        """Back to a fresh simulator: no records, default config, the Twilio credentials it was
        created with (issued tokens and the SendGrid key stay valid)."""
        with self._lock:
            self._messages.clear()
            self._rejected.clear()
            self._event_posts.clear()
            self._config = _default_config()
            self._twilio_credentials = self._initial_twilio_credentials

    def wait_for(
        self, count: int, channel: str | None = None, timeout: float = 5.0, rejected: bool = False
    ) -> list[dict[str, Any]]:
        """Blocks until at least `count` records (of `channel`) exist, then returns them.

        Raises TimeoutError if they do not arrive in time.
        """
        source = self._rejected if rejected else self._messages
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matching = [r for r in source if channel is None or r["channel"] == channel]
                if len(matching) >= count:
                    return [copy.deepcopy(r) for r in matching]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {count} record(s), have {len(matching)}")
                self._changed.wait(remaining)

    # -- webhooks the simulator posts --------------------------------------

    @property
    def sendgrid_public_key(self) -> str:
        """The Event Webhook verification key: base64 DER SubjectPublicKeyInfo, no PEM armour."""
        return self.sendgrid_signer.public_key

    def record_event_post(self, kind: str, url: str, payload: Any, *, error: str | None = None) -> str:
        """Records a webhook post about to be made (or, with `error`, one never made); returns its id."""
        post = {"id": new_id(), "kind": kind, "url": url, "payload": copy.deepcopy(payload), "status": None,
                "tries": 0, "settled": error is not None, "error": error, "created_at": time.time()}
        with self._changed:
            self._event_posts[post["id"]] = post
            self._changed.notify_all()
        return post["id"]

    def update_event_post(self, post_id: str, *, status: int | None, tries: int, settled: bool,
                          error: str | None) -> None:
        with self._changed:
            post = self._event_posts.get(post_id)
            if post is not None:
                post.update(status=status, tries=tries, settled=settled, error=error)
                self._changed.notify_all()

    def event_post_pending(self, post_id: str) -> bool:
        """Whether the post still exists (not cleared) and has not settled."""
        with self._lock:
            post = self._event_posts.get(post_id)
            return post is not None and not post["settled"]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every webhook post (one SendGrid array or one Twilio callback each), oldest first.

        `status` is the HTTP status of the last try (None: no answer yet, or none at all);
        `settled` turns true on a 2xx or when the retries are spent."""
        with self._lock:
            return [copy.deepcopy(p) for p in self._event_posts.values() if kind is None or p["kind"] == kind]

    def wait_for_events(self, count: int, kind: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Blocks until at least `count` posts (of `kind`) have settled, then returns the settled ones.

        Raises TimeoutError if they do not settle in time.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                settled = [p for p in self._event_posts.values()
                           if p["settled"] and (kind is None or p["kind"] == kind)]
                if len(settled) >= count:
                    return [copy.deepcopy(p) for p in settled]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {count} settled webhook post(s), have {len(settled)}")
                self._changed.wait(remaining)
