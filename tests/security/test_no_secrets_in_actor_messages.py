"""Finding: `Configure` carried the whole Settings (database URL, internal secret, SendGrid key)
to every actor, and to other hosts in clear for placed actors. Now no message type can hold
settings or a secret: each node reads its own from its environment."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from pydantic import SecretStr

from clarion.actors import messages
from clarion.config.settings import Settings

MESSAGE_CLASSES = [obj for obj in vars(messages).values()
                   if isinstance(obj, type) and dataclasses.is_dataclass(obj)
                   and obj.__module__ == messages.__name__]
# Names under which a secret or an address of the infrastructure would travel.
SECRET_NAMES = re.compile(r"secret|password|api_key|credential|database_url|redis_url|amqp_url"
                          r"|^settings$")


def _types_in(hint: Any) -> set[Any]:
    """`hint` and every type nested in it (optionals, tuples, dicts)."""
    found = {hint}
    for arg in typing.get_args(hint):
        found |= _types_in(arg)
    return found


def test_no_actor_message_can_carry_settings_or_a_secret() -> None:
    assert messages.Configure in MESSAGE_CLASSES
    for cls in MESSAGE_CLASSES:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            nested = _types_in(hints[field.name])
            assert Settings not in nested and SecretStr not in nested, f"{cls.__name__}.{field.name}"
            assert not SECRET_NAMES.search(field.name), f"{cls.__name__}.{field.name}"


def test_configure_names_the_child_and_nothing_else() -> None:
    assert [f.name for f in dataclasses.fields(messages.Configure)] == ["name", "placed_by"]
