"""Every message in `actors/messages.py` is a frozen, slotted dataclass that pickles.

The messages are found by walking the module, so a message added later is covered without
touching this file; a sample instance is built from each field's type hint.
"""

from __future__ import annotations

import dataclasses
import pickle
import types
import typing
from typing import Any

import pytest
from thespian.actors import ActorAddress

from clarion.actors import messages
from clarion.persistence.records import Template, User

MESSAGE_CLASSES = sorted(
    (obj for obj in vars(messages).values()
     if isinstance(obj, type) and dataclasses.is_dataclass(obj)
     and obj.__module__ == messages.__name__),
    key=lambda cls: cls.__name__,
)

def _user() -> User:
    return User("user-1", email_address="ada@example.com", phone_number="+351900000000",
                preferred_language="pt-BR", preferences={"digest": True},
                push_tokens=("token-a", "token-b"))


def _template() -> Template:
    return Template("welcome", "pt-BR", 3, "Olá {{ name }}", "Corpo {{ name }}",
                    html_body="<p>{{ name }}</p>", push_title="Olá", push_body="Oi",
                    description="welcome mail")


# Leaf types by type hint; message dataclasses, tuples, dicts and optionals are built from these.
LEAF_SAMPLES: dict[Any, Any] = {
    str: lambda: "sample text",
    int: lambda: 42,
    bool: lambda: True,
    float: lambda: 1.5,
    Any: lambda: ActorAddress("sample-actor-address"),
    User: _user,
    Template: _template,
}


def sample_value(hint: Any) -> Any:
    """A non-default value of type `hint` (the non-None branch of an optional)."""
    if hint in LEAF_SAMPLES:
        return LEAF_SAMPLES[hint]()
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return sample_value(next(a for a in args if a is not type(None)))
    if origin is tuple:
        return (sample_value(args[0]), sample_value(args[0]))
    if origin is dict:
        return {"key-1": sample_value(args[1])}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return sample_message(hint)
    raise AssertionError(f"no sample for type {hint!r}: add one to LEAF_SAMPLES")


def sample_message(cls: type) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample_value(hints[f.name]) for f in dataclasses.fields(cls)})


def test_the_module_defines_the_messages_we_expect_to_cover() -> None:
    names = {cls.__name__ for cls in MESSAGE_CLASSES}
    assert {"Configure", "SendBatch", "Replies", "RenderBatch", "Rendered", "RelayOutbox",
            "SweepOutbox", "LocateGateway"} <= names


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_message_round_trips_through_pickle_equal_to_itself(cls: type) -> None:
    message = sample_message(cls)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(message, protocol=protocol))
        assert type(copy) is cls
        assert copy == message, f"protocol {protocol}"


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_message_is_frozen(cls: type) -> None:
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    message = sample_message(cls)
    for field in dataclasses.fields(cls):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, field.name, "changed")
    # A name that is not a field cannot be added either. (On CPython 3.11 a frozen, slotted
    # dataclass raises TypeError here rather than an AttributeError: a CPython quirk of the
    # class that `slots=True` recreates, not Clarion's.)
    with pytest.raises((AttributeError, TypeError)):
        message.not_a_field = "changed"


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_message_has_slots(cls: type) -> None:
    assert "__slots__" in vars(cls)
    assert not hasattr(sample_message(cls), "__dict__")
