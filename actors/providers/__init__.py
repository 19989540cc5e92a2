"""Delivery providers per channel, in failover order, chosen from the settings.

Email: `CLARION_EMAIL_PROVIDERS` in order (`sendgrid`, `smtp`, `outbox`); unset, SendGrid when
       `CLARION_SENDGRID_API_KEY` is set, else the local outbox.
Push:  Firebase Cloud Messaging when `CLARION_FCM_CREDENTIALS_FILE` is set, else the local outbox.
SMS:   `CLARION_SMS_PROVIDERS` in order (`twilio`, `twilio-backup`: a second Twilio account,
       `outbox`); unset, Twilio when `CLARION_TWILIO_ACCOUNT_SID` and `CLARION_TWILIO_AUTH_TOKEN`
       are set, else the local outbox.
"""

from __future__ import annotations

from clarion.actors.providers.base import Provider
from clarion.config.settings import Settings


def email_providers(settings: Settings) -> list[Provider]:
    return [_email_provider(settings, name) for name in settings.email_provider_names]


def _email_provider(settings: Settings, name: str) -> Provider:
    if name == "sendgrid":
        from clarion.actors.providers.sendgrid_email import SendGridEmailProvider

        assert settings.sendgrid_api_key is not None  # the settings refuse it otherwise
        return SendGridEmailProvider(
            settings.sendgrid_api_key.get_secret_value(),
            settings.email_from,
            host=settings.sendgrid_host,
            timeout=settings.provider_timeout,
            # One keep-alive connection per worker thread of the delivery actor.
            pool_size=settings.delivery_concurrency,
        )
    if name == "smtp":
        from clarion.actors.providers.smtp_email import SmtpEmailProvider

        assert settings.smtp_host is not None  # the settings refuse it otherwise
        return SmtpEmailProvider(
            settings.smtp_host, settings.smtp_port, settings.email_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            security=settings.smtp_security, timeout=settings.provider_timeout,
            pool_size=settings.smtp_pool_size,
        )
    from clarion.actors.providers.outbox import OutboxProvider

    return OutboxProvider("email", settings.database_url)


def push_providers(settings: Settings) -> list[Provider]:
    if settings.fcm_credentials_file is not None:
        from clarion.actors.providers.fcm_push import FcmPushProvider

        return [FcmPushProvider(
            str(settings.fcm_credentials_file),
            endpoint=settings.fcm_endpoint,
            timeout=settings.provider_timeout,
            # firebase-admin's session (a google-auth AuthorizedSession, i.e. requests) keeps
            # 10 connections per host by default, the provider 32: a worker beyond that opens
            # a connection per call and urllib3 discards it ("Connection pool is full").
            pool_size=settings.delivery_concurrency,
        )]
    from clarion.actors.providers.outbox import OutboxProvider

    return [OutboxProvider("push", settings.database_url)]


def sms_providers(settings: Settings) -> list[Provider]:
    return [_sms_provider(settings, name) for name in settings.sms_provider_names]


def _sms_provider(settings: Settings, name: str) -> Provider:
    from clarion.actors.providers.twilio_sms import TwilioSmsProvider

    if name == "twilio":
        assert settings.twilio_account_sid and settings.twilio_auth_token is not None
        return TwilioSmsProvider(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            # One sender: the Messaging Service when there is one (it picks its own numbers).
            from_number=None if settings.twilio_messaging_service_sid
            else settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            host=settings.twilio_host,
            timeout=settings.provider_timeout,
            pool_size=settings.delivery_concurrency,
            status_callback=settings.twilio_status_callback_url,
        )
    if name == "twilio-backup":
        assert settings.twilio_backup_account_sid and settings.twilio_backup_auth_token
        return TwilioSmsProvider(
            settings.twilio_backup_account_sid,
            settings.twilio_backup_auth_token.get_secret_value(),
            from_number=settings.twilio_backup_from_number,
            host=settings.twilio_host,
            timeout=settings.provider_timeout,
            pool_size=settings.delivery_concurrency,
            name="twilio-backup",
            status_callback=settings.twilio_status_callback_url,
        )
    from clarion.actors.providers.outbox import OutboxProvider

    return OutboxProvider("sms", settings.database_url)
