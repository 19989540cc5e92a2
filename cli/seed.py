"""Demo data for a fresh installation: one user (an email address, a device, a phone number) and
one template in English and French."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

DEMO_USER = {
    "user_id": "demo-user",
    "email_address": "demo@example.com",
    "preferred_language": "fr",
    "phone_number": "+15555550100",
    "preferences": {"email_enabled": True, "push_enabled": True, "sms_enabled": True},
    "push_tokens": ["demo-device-token"],
}

WELCOME = {
    "en": {
        "subject": "Welcome to {{ product }}, {{ name }}!",
        "body": "Hello {{ name }},\n\nYour {{ product }} account is ready.\n",
        "html_body": "<p>Hello <strong>{{ name }}</strong>,</p><p>Your {{ product }} account"
                     " is ready.</p>",
        "push_title": "Welcome, {{ name }}!",
        "push_body": "Your {{ product }} account is ready.",
        "sms_body": "{{ name }}, your {{ product }} account is ready.",
    },
    "fr": {
        "subject": "Bienvenue sur {{ product }}, {{ name }} !",
        "body": "Bonjour {{ name }},\n\nVotre compte {{ product }} est prêt.\n",
        "html_body": "<p>Bonjour <strong>{{ name }}</strong>,</p><p>Votre compte {{ product }}"
                     " est prêt.</p>",
        "push_title": "Bienvenue, {{ name }} !",
        "push_body": "Votre compte {{ product }} est prêt.",
        "sms_body": "{{ name }}, votre compte {{ product }} est prêt.",
    },
}


def seed(conn: psycopg.Connection) -> None:
    """Insert the demo user and the `welcome` template; leave them alone if they exist."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO users (user_id, email_address, phone_number, preferred_language,"
            " preferences, push_tokens) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (DEMO_USER["user_id"], DEMO_USER["email_address"], DEMO_USER["phone_number"],
             DEMO_USER["preferred_language"], Jsonb(DEMO_USER["preferences"]),
             DEMO_USER["push_tokens"]),
        )
        for language, t in WELCOME.items():
            conn.execute(
                "INSERT INTO templates (template_key, language, version, subject, body,"
                " html_body, push_title, push_body, sms_body, description)"
                " VALUES ('welcome', %s, 1, %s, %s, %s, %s, %s, %s, 'Demo welcome message')"
                " ON CONFLICT DO NOTHING",
                (language, t["subject"], t["body"], t["html_body"], t["push_title"],
                 t["push_body"], t["sms_body"]),
            )
