"""Delivery providers per channel, and the choice between them made from the settings.

Email: SendGrid when `CLARION_SENDGRID_API_KEY` is set, else the local outbox.
Push:  Firebase Cloud Messaging when `CLARION_FCM_CREDENTIALS_FILE` is set, else the local outbox.
SMS:   Twilio when `CLARION_TWILIO_ACCOUNT_SID` and `CLARION_TWILIO_AUTH_TOKEN` are set, else the
       local outbox.
"""

from __future__ import annotations

from clarion.actors.providers.base import Provider
from clarion.config.settings import Settings


def email_provider(settings: Settings) -> Provider:
    if settings.sendgrid_api_key is not None:
        from clarion.actors.providers.sendgrid_email import SendGridEmailProvider

        return SendGridEmailProvider(
            settings.sendgrid_api_key.get_secret_value(),
            settings.email_from,
            host=settings.sendgrid_host,
            timeout=settings.provider_timeout,
            # One keep-alive connection per worker thread of the delivery actor.
            pool_size=settings.delivery_concurrency,
        )
    from clarion.actors.providers.outbox import OutboxProvider

    return OutboxProvider("email", settings.database_url)


def push_provider(settings: Settings) -> Provider:
    if settings.fcm_credentials_file is not None:
        from clarion.actors.providers.fcm_push import FcmPushProvider

        return FcmPushProvider(
            str(settings.fcm_credentials_file),
            endpoint=settings.fcm_endpoint,
            timeout=settings.provider_timeout,
            # firebase-admin's session (a google-auth AuthorizedSession, i.e. requests) keeps
            # 10 connections per host by default, the provider 32: a worker beyond that opens
            # a connection per call and urllib3 discards it ("Connection pool is full").
            pool_size=settings.delivery_concurrency,
        )
    from clarion.actors.providers.outbox import OutboxProvider

    return OutboxProvider("push", settings.database_url)


def sms_provider(settings: Settings) -> Provider:
    if settings.twilio_account_sid and settings.twilio_auth_token is not None:
        from clarion.actors.providers.twilio_sms import TwilioSmsProvider

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
        )
    from clarion.actors.providers.outbox import OutboxProvider

    return OutboxProvider("sms", settings.database_url)
