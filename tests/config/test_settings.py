"""`load_settings`: typed, validated, read from the environment then `.env`; secrets never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from clarion.config.settings import Settings, SettingsError, load_settings, settings_to_env

SENDGRID_KEY = "SG.settings-test-key.do-not-print"
INTERNAL_SECRET = "internal-settings-secret-do-not-print"


pytestmark = pytest.mark.usefixtures("no_clarion_environment")


def write_dotenv(directory: Path, **values: str) -> None:
    lines = [f"{name}={value}" for name, value in values.items()]
    (directory / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_the_defaults_are_valid_settings() -> None:
    settings = load_settings()

    assert isinstance(settings, Settings)
    assert settings.database_url.startswith("postgresql://")
    assert settings.redis_url.startswith("redis://")
    assert settings.amqp_url.startswith("amqp://")
    assert settings.http_port == 8000
    assert settings.default_language == "en"
    assert settings.log_level == "INFO"
    assert settings.sendgrid_api_key is None
    assert settings.internal_secret is None
    assert settings.fcm_credentials_file is None


BAD_VALUES = [
    ("CLARION_HTTP_PORT", "abc"),
    ("CLARION_HTTP_PORT", "0"),
    ("CLARION_DEFAULT_LANGUAGE", "xx_1"),
    ("CLARION_DATABASE_URL", "mysql://root@127.0.0.1/clarion"),
    ("CLARION_REDIS_URL", "http://127.0.0.1:6379/0"),
    ("CLARION_AMQP_URL", "redis://127.0.0.1:5672/"),
    ("CLARION_FCM_CREDENTIALS_FILE", "{tmp}/no-such-service-account.json"),
    ("CLARION_LOG_LEVEL", "LOUD"),
    ("CLARION_NODE_ADDRESS", "0.0.0.0"),
    ("CLARION_NODE_ADDRESS", "gw.internal"),
    ("CLARION_CLUSTER_PEERS", "10.0.0.12,10.0.0.300"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES,
                         ids=[f"{name}={value}" for name, value in BAD_VALUES])
def test_a_bad_value_raises_a_settings_error_naming_its_variable(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value.format(tmp=tmp_path))

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert variable in str(raised.value)


def test_several_bad_values_are_all_named_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {"CLARION_HTTP_PORT": "abc", "CLARION_LOG_LEVEL": "LOUD",
           "CLARION_REDIS_URL": "http://x", "CLARION_DEFAULT_LANGUAGE": "xx_1"}
    for name, value in bad.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    message = str(raised.value)
    for name in bad:
        assert name in message


def test_a_bad_url_is_refused_without_echoing_its_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_DATABASE_URL", "mysql://root:hunter2-password@db/clarion")

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert "CLARION_DATABASE_URL" in str(raised.value)
    assert "hunter2-password" not in str(raised.value)


def test_values_are_read_from_environment_variables_and_typed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_HTTP_PORT", "9001")
    monkeypatch.setenv("CLARION_REQUEST_TIMEOUT", "2.5")
    monkeypatch.setenv("CLARION_DEFAULT_LANGUAGE", "pt-BR")
    monkeypatch.setenv("CLARION_STATE_DIR", "/var/lib/clarion")

    settings = load_settings()

    assert settings.http_port == 9001
    assert settings.request_timeout == 2.5
    assert settings.default_language == "pt-BR"
    assert settings.state_dir == Path("/var/lib/clarion")


def test_values_are_read_from_a_dotenv_file_in_the_current_directory(tmp_path: Path) -> None:
    write_dotenv(tmp_path, CLARION_HTTP_PORT="9002", CLARION_DEFAULT_LANGUAGE="fr",
                 CLARION_SENDGRID_API_KEY=SENDGRID_KEY, UNRELATED_VARIABLE="ignored")

    settings = load_settings()

    assert settings.http_port == 9002
    assert settings.default_language == "fr"
    assert settings.sendgrid_api_key is not None
    assert settings.sendgrid_api_key.get_secret_value() == SENDGRID_KEY


def test_a_bad_value_in_the_dotenv_file_is_named_too(tmp_path: Path) -> None:
    write_dotenv(tmp_path, CLARION_LOG_LEVEL="LOUD")

    with pytest.raises(SettingsError, match="CLARION_LOG_LEVEL"):
        load_settings()


def test_the_environment_wins_over_the_dotenv_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_dotenv(tmp_path, CLARION_HTTP_PORT="9002", CLARION_HTTP_HOST="0.0.0.0")
    monkeypatch.setenv("CLARION_HTTP_PORT", "9003")

    settings = load_settings()

    assert settings.http_port == 9003
    assert settings.http_host == "0.0.0.0"  # what the environment does not set still comes in


def test_sendgrid_host_loses_its_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_SENDGRID_HOST", "http://127.0.0.1:8025/")

    assert load_settings().sendgrid_host == "http://127.0.0.1:8025"


def test_secrets_never_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_SENDGRID_API_KEY", SENDGRID_KEY)
    monkeypatch.setenv("CLARION_INTERNAL_SECRET", INTERNAL_SECRET)

    settings = load_settings()

    assert settings.sendgrid_api_key is not None and settings.internal_secret is not None
    assert settings.sendgrid_api_key.get_secret_value() == SENDGRID_KEY
    assert settings.internal_secret.get_secret_value() == INTERNAL_SECRET
    for text in (repr(settings), str(settings)):
        assert SENDGRID_KEY not in text
        assert INTERNAL_SECRET not in text
        assert "sendgrid_api_key" in text  # the field is shown, masked


def every_field_changed(tmp_path: Path) -> Settings:
    credentials = tmp_path / "service-account.json"
    credentials.write_text("{}", encoding="utf-8")
    return load_settings(
        database_url="postgresql://clarion:pw@db.internal:5433/clarion_prod",
        redis_url="rediss://cache.internal:6380/2",
        amqp_url="amqps://user:pw@mq.internal:5671/clarion",
        queue_type="quorum",
        http_host="0.0.0.0",
        http_port=8443,
        http_workers=4,
        email_providers="sendgrid,smtp,outbox",
        sendgrid_webhook_public_key="MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE-test-key",
        lanes=False,
        smtp_host="smtp.internal",
        smtp_port=2525,
        smtp_username="clarion",
        smtp_password="smtp-password-for-tests",
        smtp_security="tls",
        smtp_pool_size=4,
        twilio_account_sid="AC" + "1" * 32,
        twilio_auth_token="twilio-token-for-tests",
        twilio_from_number="+15005550006",
        twilio_messaging_service_sid="MG" + "2" * 32,
        twilio_host="http://twilio.internal:8080",
        sms_providers="twilio,twilio-backup,outbox",
        twilio_backup_account_sid="AC" + "3" * 32,
        twilio_backup_auth_token="twilio-backup-token-for-tests",
        twilio_backup_from_number="+15005550007",
        twilio_status_callback_url="https://clarion.example.com/v1/providers/twilio/status",
        callbacks_allow_private=True, callback_retry_window=3600.0, callback_backoff=1.0,
        callback_timeout=2.0, callback_concurrency=8, callback_host_concurrency=2,
        max_body_bytes=128 * 1024,
        request_timeout=7.5,
        actor_port=19_001,
        state_dir=tmp_path / "state",
        node_address="198.51.100.12",
        cluster_peers="198.51.100.11,198.51.100.0/28",
        internal_secret=INTERNAL_SECRET,
        default_language="pt-BR",
        log_level="DEBUG",
        sendgrid_api_key=SENDGRID_KEY,
        sendgrid_host="https://sendgrid.example.com",
        email_from="noreply@example.com",
        fcm_credentials_file=credentials,
        fcm_endpoint="http://127.0.0.1:9999",
        provider_timeout=2.5,
        delivery_concurrency=8,
        delivery_prefetch=16,
        delivery_max_attempts=4,
        delivery_actors=3,
        rate_limit_per_second=10.5,
        rate_limit_burst=20,
        auth_lookups_per_second=3.5,
        console_insecure_cookie=True,
        breaker_failure_threshold=3,
        breaker_reset_timeout=7.5,
        infra_breaker_reset_timeout=0.5,
        restart_max=4,
        restart_window=30.0,
        alert_backlog_threshold=50,
        alert_backlog_window=10.0,
        alert_webhook_url="http://127.0.0.1:9998/hook",
        bridge_batches_in_flight=5,
        bridge_queue_limit=500,
        node_name="delivery-3.eu",
        node_role="delivery",
        node_channels="push",
        convention="198.51.100.11:1950",
        heartbeat_interval=2.0,
        host_down_after=8.0,
        convention_reregistration_period=10,
        convention_restart_period=6,
        convention_miss_max=4,
    )


def test_settings_to_env_round_trips_every_field_including_secrets(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = every_field_changed(tmp_path)
    defaults = load_settings()
    changed = [name for name in Settings.model_fields
               if getattr(original, name) == getattr(defaults, name)]
    assert changed == [], "every field should differ from its default in this test"

    env = settings_to_env(original)
    assert all(name.startswith("CLARION_") and isinstance(value, str)
               for name, value in env.items())
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reloaded = load_settings()

    assert reloaded == original
    assert reloaded.sendgrid_api_key is not None and reloaded.internal_secret is not None
    assert reloaded.sendgrid_api_key.get_secret_value() == SENDGRID_KEY
    assert reloaded.internal_secret.get_secret_value() == INTERNAL_SECRET


def test_settings_to_env_round_trips_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_settings()

    for name, value in settings_to_env(original).items():
        monkeypatch.setenv(name, value)

    assert load_settings() == original


def test_the_email_provider_is_sendgrid_only_with_an_api_key() -> None:
    assert load_settings().email_provider == "outbox"
    assert load_settings(sendgrid_api_key=SENDGRID_KEY).email_provider == "sendgrid"


def test_the_push_provider_is_fcm_only_with_a_credentials_file(tmp_path: Path) -> None:
    credentials = tmp_path / "service-account.json"
    credentials.write_text("{}", encoding="utf-8")

    assert load_settings().push_provider == "outbox"
    assert load_settings(fcm_credentials_file=credentials).push_provider == "fcm"


def test_a_convention_on_another_host_needs_the_nodes_cluster_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_CONVENTION", "10.0.0.11:1950")

    with pytest.raises(SettingsError, match="CLARION_NODE_ADDRESS"):
        load_settings()
    monkeypatch.setenv("CLARION_NODE_ADDRESS", "10.0.0.12")
    monkeypatch.setenv("CLARION_CLUSTER_PEERS", " 10.0.0.11, 10.0.1.0/24 ")
    settings = load_settings()
    assert settings.cluster_peers == "10.0.0.11,10.0.1.0/24"
    assert [str(n) for n in settings.cluster_peer_networks] == ["10.0.0.11/32", "10.0.1.0/24"]


def test_a_convention_on_this_host_binds_loopback_by_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_CONVENTION", "127.0.0.1:1950")

    assert load_settings().node_address == "127.0.0.1"


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    import re

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#?\s*CLARION_([A-Z_]+)=", text, re.MULTILINE))
    assert listed == {name.upper() for name in Settings.model_fields}


def test_twilio_needs_its_token_and_one_sender(no_clarion_environment: None) -> None:
    sid = "AC" + "0" * 32
    with pytest.raises(SettingsError, match="go together"):
        load_settings(twilio_account_sid=sid)
    with pytest.raises(SettingsError, match="needs a sender"):
        load_settings(twilio_account_sid=sid, twilio_auth_token="token")
    with pytest.raises(SettingsError, match="CLARION_TWILIO_FROM_NUMBER"):
        load_settings(twilio_from_number="0612345678")
    settings = load_settings(twilio_account_sid=sid, twilio_auth_token="s3cret-twilio",
                             twilio_from_number="+15005550006")
    assert settings.sms_provider == "twilio"
    assert "s3cret-twilio" not in repr(settings)
    assert load_settings().sms_provider == "outbox"
    assert load_settings().channels == ("email", "push", "sms")
