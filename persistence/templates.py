"""Templates in PostgreSQL: versions x languages, looked up for a whole batch at once."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from clarion.persistence.records import Template

COLUMNS = (
    "template_key, language, version, subject, body, html_body, push_title, push_body, description"
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
        " WHERE template_key = ANY(%s) ORDER BY template_key, language, version DESC",
        (wanted,),
    )
    return {(t.template_key, t.language): t for t in (Template(*row) for row in rows)}


def fetch_version(
    conn: psycopg.Connection, key: str, version: int
) -> dict[tuple[str, str], Template]:
    """Every language of one version of a key, by (key, language)."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM templates WHERE template_key = %s AND version = %s",
        (key, version),
    )
    return {(t.template_key, t.language): t for t in (Template(*row) for row in rows)}


def create_template(conn: psycopg.Connection, template: Template) -> Template:
    """Store version 1 of a key in a language, or with `version` > 1 the next version."""
    try:
        with conn.transaction():
            row = conn.execute(
                f"INSERT INTO templates ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
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
                ),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise DuplicateTemplate(f"{template.template_key} ({template.language})") from None
    assert row is not None
    return Template(*row)


def next_version(conn: psycopg.Connection, key: str, language: str) -> int:
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM templates WHERE template_key = %s"
        " AND language = %s",
        (key, language),
    ).fetchone()
    assert row is not None
    return int(row[0])
