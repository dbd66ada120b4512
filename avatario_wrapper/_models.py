"""A 2xx JSON object read into its generated model, checked against the model's annotations.

The generated ``from_dict`` builds a model from any mapping: a missing required field is a
`KeyError`, an enum value it does not know a `TypeError`, a malformed date a `ValueError`, and a
field of the wrong type goes through unchecked. `read_model` turns each of these into
`InvalidReply` naming the field, so every operation gets the same `APIResponseValidationError`
without a line of its own. Types are checked as the generator writes them: ``str``, ``int``,
``float``, ``bool``, ``None``, ``Unset``, ``Literal`` enums, unions, ``list``, ``dict``,
``datetime`` and nested models; anything else is accepted as it came.
"""

from __future__ import annotations

import importlib
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

__all__ = ["InvalidReply", "read_model"]

M = TypeVar("M")


class InvalidReply(Exception):
    """A 2xx body breaks the spec; the message says how (it may quote server text)."""


def read_model(model: type[M], data: dict[str, Any]) -> M:
    """`model.from_dict(data)`, checked field by field; `InvalidReply` names what is wrong."""
    try:
        parsed: M = model.from_dict(data)  # type: ignore[attr-defined]
    except KeyError as exc:
        raise InvalidReply(f"its body has no {exc.args[0]!s} field") from exc
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise InvalidReply(f"its body does not fit {model.__name__}: {exc}") from exc
    problem = _problem(parsed, "")
    if problem is not None:
        raise InvalidReply(problem)
    return parsed


Check = Callable[[Any], bool]
#: Per model class: (field, annotation, its compiled check, whether it may hold a model).
_FIELDS: dict[type[Any], tuple[tuple[str, Any, Check, bool], ...]] = {}


def _fields(cls: type[Any]) -> tuple[tuple[str, Any, Check, bool], ...]:
    """The annotated fields of a generated model (its extra properties left out), each with
    its check compiled once."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple(
            (name, hint, _compile(hint), _may_nest(hint)) for name, hint in _annotated(cls)
        )
    return found


def _annotated(cls: type[Any]) -> list[tuple[str, Any]]:
    package = sys.modules.get(cls.__module__.rpartition(".")[0])
    if package is None:
        package = importlib.import_module(cls.__module__.rpartition(".")[0])
    hints = typing.get_type_hints(cls, localns=dict(vars(package)))
    return [
        (field.name, hints.get(field.name, Any))
        for field in attrs.fields(cls)
        if field.name != "additional_properties"
    ]


def _problem(value: Any, where: str) -> str | None:
    """Why a model instance does not match its annotations, or None."""
    for name, hint, check, may_nest in _fields(type(value)):
        found = getattr(value, name)
        if not check(found):
            return f"its {where}{name} is {_kind(found)}, not {_expected(hint)}"
        if may_nest and attrs.has(type(found)) and hasattr(type(found), "from_dict"):
            problem = _problem(found, f"{where}{name}.")
            if problem is not None:
                return problem
    return None


def _always(value: Any) -> bool:
    return True


#: Annotations checked by more than isinstance (a bool is an int to isinstance).
_SPECIAL = (bool, int, float, type(None))


def _compile(hint: Any) -> Check:
    """A function telling whether a value fits `hint`, as the generator writes annotations."""
    if hint is Any:
        return _always
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(hint)
        if all(_plain(o) and o not in _SPECIAL for o in options):
            plain = tuple(options)  # e.g. str | Unset: one isinstance call
            return lambda value: isinstance(value, plain)
        checks = tuple(_compile(option) for option in options)
        return lambda value: any(check(value) for check in checks)
    if origin is typing.Literal:
        allowed = {(type(v), v) for v in typing.get_args(hint)}
        return lambda value: (type(value), value) in allowed if _hashable(value) else False
    if hint is None or hint is type(None):
        return lambda value: value is None
    if hint is bool:
        return lambda value: isinstance(value, bool)
    if hint is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        (item_hint,) = typing.get_args(hint) or (Any,)
        item = _compile(item_hint)
        return lambda value: isinstance(value, list) and all(item(v) for v in value)
    if origin is dict:
        args = typing.get_args(hint)
        entry = _compile(args[1] if len(args) == 2 else Any)
        return lambda value: isinstance(value, dict) and all(entry(v) for v in value.values())
    if isinstance(hint, type):
        return lambda value: isinstance(value, hint)
    return _always  # a construct the generator does not write: accept what came


def _plain(hint: Any) -> bool:
    """A class `isinstance` takes as it is (on 3.10 `list[str]` passes for a type too)."""
    return isinstance(hint, type) and typing.get_origin(hint) is None


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def _may_nest(hint: Any) -> bool:
    """Whether a value of `hint` can be a generated model (checked field by field in turn)."""
    if _plain(hint):
        return attrs.has(hint)
    return any(_may_nest(arg) for arg in typing.get_args(hint))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _expected(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(hint) if getattr(a, "__name__", "") != "Unset"]
        return " or ".join(_expected(a) for a in options)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if hint is None or hint is type(None):
        return "null"
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )
