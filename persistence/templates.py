"""Templates in PostgreSQL: versions x languages, looked up for a whole batch at once.

Versions are immutable rows. Retiring a key marks its rows `retired_at` instead of deleting them:
the lookups here see only live rows, so a retired key renders as not found, while notifications
already sent keep their rendered content and still name the version they used. Creating a retired
key again continues its version numbers (`next_version` counts retired rows too), so a version
number never names two different templates, and compiled templates cached by (key, language,
version) never go stale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import psycopg

from clarion.persistence.records import Template

COLUMNS = (
    "template_key, language, version, subject, body, html_body, push_title, push_body,"
    " description, sms_body, fallback_channels"
)


class DuplicateTemplate(Exception):
    """This template key already exists in this language (create a new version instead)."""


class UnknownTemplate(Exception):
    """No template with this key (in any language) exists."""


def fetch_latest(conn: psycopg.Connection, keys: Iterable[str]) -> dict[tuple[str, str], Template]:
    """The latest version of every language of each key, by (key, language): one query."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(
        f"SELECT DISTINCT ON (template_key, language) {COLUMNS} FROM templates"
        " WHERE template_key = ANY(%s) AND retired_at IS NULL"
        " ORDER BY template_key, language, version DESC",
        (wanted,),
    )
    return {(t.template_key, t.language): t for t in (Template(*row) for row in rows)}


def fetch_version(
    conn: psycopg.Connection, key: str, version: int
) -> dict[tuple[str, str], Template]:
    """Every language of one version of a key, by (key, language)."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM templates WHERE template_key = %s AND version = %s"
        " AND retired_at IS NULL",
        (key, version),
    )
    return {(t.template_key, t.language): t for t in (Template(*row) for row in rows)}


def create_template(conn: psycopg.Connection, template: Template,
                    variables: Sequence[str] | None = None) -> Template:
    """Store one version of a key in a language as given, with the variables it declares."""
    try:
        with conn.transaction():
            row = conn.execute(
                f"INSERT INTO templates ({COLUMNS}, variables)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {COLUMNS}",
                (
                    template.template_key,
                    template.language,
                    template.version,
                    template.subject,
                    template.body,
                    template.html_body,
                    template.push_title,
                    template.push_body,
                    template.description,
                    template.sms_body,
                    template.fallback_channels or None,
                    None if variables is None else list(variables),
                ),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise DuplicateTemplate(f"{template.template_key} ({template.language})") from None
    assert row is not None
    return Template(*row)


def next_version(conn: psycopg.Connection, key: str, language: str) -> int:
    """The next version of a key in a language, counting retired versions too."""
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM templates WHERE template_key = %s"
        " AND language = %s",
        (key, language),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _lock(conn: psycopg.Connection, key: str) -> None:
    # Writes to one key take turns (several hosts may run a Templates actor): the version a
    # write computes is then still free when it inserts.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('clarion:template:' || %s))", (key,))


def _live(conn: psycopg.Connection, key: str, language: str | None = None) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM templates WHERE template_key = %s AND retired_at IS NULL"
        " AND (%s::text IS NULL OR language = %s::text))",
        (key, language, language),
    ).fetchone()
    return bool(row and row[0])


def create_first(conn: psycopg.Connection, template: Template,
                 variables: Sequence[str] | None = None) -> Template:
    """Create a key in a language (`POST`): version 1, or after retirement the next number.

    Raises DuplicateTemplate if the key is live in that language (`template.version` is ignored).
    """
    with conn.transaction():
        _lock(conn, template.template_key)
        if _live(conn, template.template_key, template.language):
            raise DuplicateTemplate(f"{template.template_key} ({template.language})")
        version = next_version(conn, template.template_key, template.language)
        return create_template(conn, replace(template, version=version), variables)


def create_next(conn: psycopg.Connection, template: Template,
                variables: Sequence[str] | None = None) -> Template:
    """Create the next version of a live key in a language (`PUT`); a language the key does not
    have yet starts at its first free number. Raises UnknownTemplate if the key is not live."""
    with conn.transaction():
        _lock(conn, template.template_key)
        if not _live(conn, template.template_key):
            raise UnknownTemplate(template.template_key)
        version = next_version(conn, template.template_key, template.language)
        return create_template(conn, replace(template, version=version), variables)


def retire(conn: psycopg.Connection, key: str) -> int:
    """Retire every live version of a key; how many there were (0: no live key)."""
    with conn.transaction():
        _lock(conn, key)
        return conn.execute(
            "UPDATE templates SET retired_at = now() WHERE template_key = %s"
            " AND retired_at IS NULL",
            (key,),
        ).rowcount
