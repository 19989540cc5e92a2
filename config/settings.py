"""Every Clarion setting, read once from the environment (then `.env`), typed and validated.

A bad value stops start-up with a message naming the setting (`load_settings`). Secrets are
`SecretStr`: they print as `**********` in `repr`, logs and tracebacks.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class SettingsError(Exception):
    """A setting is missing or has a bad value; the message names it."""


class Settings(BaseSettings):
    """Clarion's configuration. Field `x` is read from the variable `CLARION_X`."""

    model_config = SettingsConfigDict(
        env_prefix="CLARION_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # Storage and broker. The defaults are the local services of a development machine.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/clarion"
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    # The work queues, the delay ladder and the DLQ: `classic` (the default: on one broker node
    # a quorum queue replicates to nobody and costs more) or `quorum` (replicated, for a RabbitMQ
    # cluster). An existing queue keeps its type: RabbitMQ refuses to redeclare it as the other.
    queue_type: Literal["classic", "quorum"] = "classic"

    # HTTP front door.
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    http_workers: int = Field(1, ge=1, le=64)
    # Large enough for a batch of 1,000 notifications; a single one is far smaller.
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Answer 504 if the actors have not answered a request in this many seconds.
    request_timeout: float = Field(10.0, gt=0, le=120)
    # Batches each HTTP worker's bridge keeps unanswered at the Gateway: while they are in flight,
    # new requests queue and leave together, so batches grow with load (ARCHITECTURE "Hot path").
    bridge_batches_in_flight: int = Field(2, ge=1, le=64)
    # Requests each HTTP worker lets wait for the actors at once; beyond it they are answered
    # 503 `overloaded` at once instead of queueing without end (a batch request counts each of
    # its notifications).
    bridge_queue_limit: int = Field(10_000, ge=1, le=1_000_000)

    # Actor system. 1900 is Thespian's default; tests always use a port of their own.
    actor_port: int = Field(1900, ge=1024, le=65535)
    state_dir: Path = Path(".clarion")
    # Where every actor socket of this host listens (Thespian unpickles whatever reaches them,
    # supervision/transport_security.py): loopback on a single host, this host's cluster
    # address in a cluster. Never 0.0.0.0.
    node_address: str = "127.0.0.1"
    # The other hosts of the cluster, comma-separated addresses or CIDR networks: the only peers
    # (besides loopback and node_address) whose connections the actor sockets accept.
    cluster_peers: str = ""

    # Auth for routes that manage users and templates from other services (compared in constant
    # time); public routes take `Authorization: Bearer <api key>` (keys live hashed in PostgreSQL).
    internal_secret: SecretStr | None = None

    default_language: str = "en"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Email providers in failover order, from sendgrid, smtp and outbox (README "Providers and
    # failover"). Unset: sendgrid when its API key is set, else the local outbox.
    email_providers: str | None = None
    sendgrid_api_key: SecretStr | None = None
    # SendGrid's Event Webhook verification key (base64 DER, as SendGrid shows it): events are
    # accepted at POST /v1/providers/sendgrid/events only when set, and only signed with it.
    sendgrid_webhook_public_key: SecretStr | None = None
    sendgrid_host: str = "https://api.sendgrid.com"
    email_from: str = "notifications@clarion.local"
    # SMTP (a provider of `email_providers`): the server, its credentials and how to secure it.
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    # Open SMTP sessions kept per delivery actor (each call holds one while it sends).
    smtp_pool_size: int = Field(8, ge=1, le=256)

    # Push: Firebase Cloud Messaging when a service-account file is set, else the local outbox.
    fcm_credentials_file: Path | None = None
    # Only for the provider simulator: FCM has no official way to change its endpoint.
    fcm_endpoint: str | None = None

    # SMS: Twilio when an account SID and auth token are set, else the local outbox. Messages
    # go out through a Messaging Service when one is set, else from `twilio_from_number`.
    twilio_account_sid: str | None = Field(None, pattern=r"^AC[0-9a-fA-F]{32}$")
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = Field(None, pattern=r"^\+[1-9]\d{1,14}$")
    twilio_messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
    # Only for the provider simulator (or a Twilio edge): where the REST API is reached.
    twilio_host: str = "https://api.twilio.com"
    # SMS providers in failover order, from twilio, twilio-backup (a second Twilio account) and
    # outbox. Unset: twilio when its credentials are set, else the local outbox.
    sms_providers: str | None = None
    twilio_backup_account_sid: str | None = Field(None, pattern=r"^AC[0-9a-fA-F]{32}$")
    twilio_backup_auth_token: SecretStr | None = None
    twilio_backup_from_number: str | None = Field(None, pattern=r"^\+[1-9]\d{1,14}$")
    # The public URL of POST /v1/providers/twilio/status, exactly as Twilio reaches it (scheme,
    # host, path: Twilio signs it). Set: every SMS asks Twilio for status callbacks there, and
    # callbacks are accepted, only signed with the sending account's auth token.
    twilio_status_callback_url: str | None = None

    # Status callbacks to callers (README "Status callbacks"). An endpoint on a loopback,
    # link-local or private address is refused unless this is set (tests, a closed network).
    callbacks_allow_private: bool = False
    callback_timeout: float = Field(5.0, gt=0, le=60)
    # How long a failing callback is retried (from its first attempt) before it is
    # dead-lettered, and the first wait between attempts (doubling, at most an hour).
    callback_retry_window: float = Field(86_400.0, gt=0, le=7 * 86_400)
    callback_backoff: float = Field(5.0, gt=0, le=3600)
    # POSTs in flight at once: in all, and to one destination host (a slow one holds no more).
    callback_concurrency: int = Field(32, ge=1, le=512)
    callback_host_concurrency: int = Field(4, ge=1, le=512)

    provider_timeout: float = Field(5.0, gt=0, le=60)
    # Provider calls a delivery actor keeps in flight at once (a worker thread and a keep-alive
    # connection each): the ceiling is concurrency ÷ provider latency, 1,280/s at 100 ms.
    delivery_concurrency: int = Field(128, ge=1, le=512)
    # Messages RabbitMQ hands a delivery actor before it acks: at least the concurrency, or
    # slots sit idle; twice it, so the next messages are there while outcomes are committed.
    delivery_prefetch: int = Field(256, ge=1, le=10_000)
    # Bulk traffic (`priority: bulk`, the batch endpoint's default) in queues of its own, served
    # after the transactional ones (README "Lanes"). Off: one queue per channel for everything.
    lanes: bool = True
    # Attempts per delivery before it becomes a dead letter (passing failures only; a
    # permanent one, such as an invalid address, is a dead letter at once).
    delivery_max_attempts: int = Field(3, ge=1, le=20)
    # Delivery actors per channel on this host: competing consumers of the channel's queue,
    # each a process of its own (its own thread pool, its own core): one process's GIL bounds
    # how many provider calls a second one actor can make (~900 emails/s with SendGrid's
    # client here); a second one lifts it where the cores are there.
    delivery_actors: int = Field(1, ge=1, le=16)

    # Rate limit per API key (token bucket shared by every worker and host): a sustained rate
    # in requests per second and a burst. 0 turns it off.
    rate_limit_per_second: float = Field(5000.0, ge=0, le=1_000_000)
    rate_limit_burst: int = Field(10000, ge=1, le=10_000_000)
    # API keys each HTTP worker checks against PostgreSQL per second for one client address,
    # counting only keys it does not remember (a valid key is remembered 30 s, an invalid one
    # 5 s): a flood of made-up keys is answered 429 before it reaches the database.
    auth_lookups_per_second: float = Field(20.0, gt=0, le=1_000_000)
    # The console's session cookie is `Secure` (sent over HTTPS only) unless this is set, for
    # plain-HTTP development (`make run` sets it).
    console_insecure_cookie: bool = False

    # Circuit breakers (per actor, per dependency): open after this many consecutive failures,
    # let one trial call through after the timeout.
    breaker_failure_threshold: int = Field(5, ge=1, le=1000)
    breaker_reset_timeout: float = Field(60.0, gt=0, le=3600)
    # The same for Clarion's own infrastructure (PostgreSQL, Redis, RabbitMQ): a short wait, so
    # that a service back after a blip is used again within about this long (a provider's 60 s
    # protects someone else's service; ours we would rather probe every second).
    infra_breaker_reset_timeout: float = Field(1.0, gt=0, le=3600)

    # Alerts: a work queue above this many messages for this long raises `queue_backlog`;
    # alerts are also POSTed as JSON to the webhook when one is set.
    alert_backlog_threshold: int = Field(10_000, ge=1)
    alert_backlog_window: float = Field(60.0, gt=0)
    alert_webhook_url: str | None = None

    # Supervisor restart intensity: at most this many restarts of one child in the window,
    # then it is left down and reported failed.
    restart_max: int = Field(10, ge=1, le=1000)
    restart_window: float = Field(60.0, gt=0, le=86_400)

    # Several hosts (`clarion node`, README "Running several hosts"). Without `convention` the
    # node stands alone. `node_role` and `node_channels` pick the actors this host runs.
    node_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64,
                           pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    node_role: Literal["all", "gateway", "delivery"] = "all"
    node_channels: str = "email,push,sms"
    # HOST:PORT of the convention leader's actor admin (the leader names itself).
    convention: str | None = None
    # How often each node's Supervisor writes its heartbeat, and how old one may get before
    # the host is shown down (the convention alone notices a crash only after ~15 s).
    heartbeat_interval: float = Field(1.0, gt=0, le=60)
    host_down_after: float = Field(5.0, gt=0, le=3600)
    # Thespian's convention periods, tuned together (notes/thespian.md: shortening one alone
    # drops live members): members re-register this often, and a member that missed
    # `convention_miss_max` registrations in a row is dropped.
    convention_reregistration_period: int = Field(5, ge=1, le=3600)
    convention_restart_period: int = Field(3, ge=1, le=3600)
    convention_miss_max: int = Field(3, ge=1, le=100)

    @field_validator("node_channels")
    @classmethod
    def _channels(cls, value: str) -> str:
        channels = [c.strip() for c in value.split(",") if c.strip()]
        unknown = sorted(set(channels) - {"email", "push", "sms"})
        if unknown:
            raise ValueError(f"unknown channel(s) {', '.join(unknown)}: use email, push, sms")
        return ",".join(dict.fromkeys(channels))

    @field_validator("email_providers", "sms_providers")
    @classmethod
    def _provider_list(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        known = {"email_providers": ("sendgrid", "smtp", "outbox"),
                 "sms_providers": ("twilio", "twilio-backup", "outbox")}[str(info.field_name)]
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"unknown provider(s) {', '.join(unknown)}: use {', '.join(known)},"
                             " in failover order")
        if len(set(names)) != len(names):
            raise ValueError("a provider may be named once")
        return ",".join(names)

    @field_validator("node_address")
    @classmethod
    def _bind_address(cls, value: str) -> str:
        try:
            address = ipaddress.IPv4Address(value.strip())
        except ValueError:
            raise ValueError("must be an IPv4 address of this host") from None
        if address.is_unspecified:
            raise ValueError("must be one address of this host, not 0.0.0.0 (every interface)")
        return str(address)

    @field_validator("cluster_peers")
    @classmethod
    def _peer_list(cls, value: str) -> str:
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is neither an IP address nor a CIDR network"
                                 ) from None
        return ",".join(part.strip() for part in value.split(",") if part.strip())

    @field_validator("convention")
    @classmethod
    def _host_port(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT, the convention leader's actor admin")
        bound = info.data.get("node_address")
        if bound is not None and _is_loopback(bound) and not _is_loopback(host.strip("[]")):
            # The actor sockets would listen on 127.0.0.1, where no other host can reach them.
            raise ValueError("a convention on another host needs CLARION_NODE_ADDRESS, this"
                             " host's address on the cluster network")
        return value

    @field_validator("default_language")
    @classmethod
    def _language_tag(cls, value: str) -> str:
        if not _LANGUAGE.match(value):
            raise ValueError("must be a BCP 47 language tag such as 'en' or 'pt-BR'")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must start with amqp:// or amqps://")
        return value

    @field_validator("sendgrid_host", "fcm_endpoint", "alert_webhook_url", "twilio_host",
                     "twilio_status_callback_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        # A trailing slash makes the sendgrid client call //v3/mail/send (a 404).
        return value.rstrip("/")

    @field_validator("fcm_credentials_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _email_providers_configured(self) -> Settings:
        # A provider named without its configuration would fail every attempt, quietly.
        names = self.email_provider_names
        if "sendgrid" in names and self.sendgrid_api_key is None:
            raise ValueError("email_providers names sendgrid: set sendgrid_api_key")
        if "smtp" in names and not self.smtp_host:
            raise ValueError("email_providers names smtp: set smtp_host")
        if bool(self.smtp_username) != bool(self.smtp_password):
            raise ValueError("smtp_username and smtp_password go together")
        sms = self.sms_provider_names
        if "twilio" in sms and not (self.twilio_account_sid and self.twilio_auth_token):
            raise ValueError("sms_providers names twilio: set twilio_account_sid and"
                             " twilio_auth_token")
        if "twilio-backup" in sms and not (self.twilio_backup_account_sid
                                           and self.twilio_backup_auth_token
                                           and self.twilio_backup_from_number):
            raise ValueError("sms_providers names twilio-backup: set twilio_backup_account_sid,"
                             " twilio_backup_auth_token and twilio_backup_from_number")
        return self

    @model_validator(mode="after")
    def _twilio_complete(self) -> Settings:
        # Half a Twilio configuration would quietly send SMS to the local outbox instead.
        sid, token = self.twilio_account_sid, self.twilio_auth_token
        if bool(sid) != bool(token):
            raise ValueError("twilio_account_sid and twilio_auth_token go together: set both"
                             " (or neither, for the local outbox)")
        if sid and not (self.twilio_from_number or self.twilio_messaging_service_sid):
            raise ValueError("Twilio needs a sender: set twilio_from_number (E.164) or"
                             " twilio_messaging_service_sid")
        return self

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c for c in self.node_channels.split(",") if c)

    @property
    def cluster_peer_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(entry, strict=False)
                     for entry in self.cluster_peers.split(",") if entry)

    @property
    def convention_address(self) -> tuple[str, int] | None:
        if self.convention is None:
            return None
        host, _, port = self.convention.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def email_provider_names(self) -> tuple[str, ...]:
        if self.email_providers:
            return tuple(self.email_providers.split(","))
        return ("sendgrid",) if self.sendgrid_api_key else ("outbox",)

    @property
    def email_provider(self) -> str:
        return ",".join(self.email_provider_names)

    @property
    def push_provider(self) -> str:
        return "fcm" if self.fcm_credentials_file else "outbox"

    @property
    def sms_provider_names(self) -> tuple[str, ...]:
        if self.sms_providers:
            return tuple(self.sms_providers.split(","))
        return ("twilio",) if self.twilio_account_sid and self.twilio_auth_token else ("outbox",)

    @property
    def sms_provider(self) -> str:
        return ",".join(self.sms_provider_names)

    def provider_names(self, channel: str) -> tuple[str, ...]:
        """A channel's providers, in failover order."""
        return {"email": self.email_provider_names, "push": (self.push_provider,),
                "sms": self.sms_provider_names}[channel]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: another host as far as we can tell without asking DNS


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise SettingsError naming every bad one."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if error["loc"]:
                name = "CLARION_" + "_".join(str(part) for part in error["loc"]).upper()
                problems.append(f"{name}: {error['msg']}")
            else:  # a rule across settings: its message names them
                problems.append(error["msg"].removeprefix("Value error, "))
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The settings as CLARION_* variables, secrets included: for the processes Clarion starts
    (the actor-system launcher, HTTP workers), which read their settings from the environment."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env["CLARION_" + name.upper()] = str(value)
    return env
