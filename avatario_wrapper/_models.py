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


_FIELDS: dict[type[Any], tuple[tuple[str, Any], ...]] = {}


def _fields(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    """The annotated fields of a generated model (its extra properties left out)."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = _annotated_fields(cls)
    return found


def _annotated_fields(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    package = sys.modules.get(cls.__module__.rpartition(".")[0])
    if package is None:
        package = importlib.import_module(cls.__module__.rpartition(".")[0])
    hints = typing.get_type_hints(cls, localns=dict(vars(package)))
    return tuple(
        (field.name, hints.get(field.name, Any))
        for field in attrs.fields(cls)
        if field.name != "additional_properties"
    )


def _problem(value: Any, where: str) -> str | None:
    """Why a model instance does not match its annotations, or None."""
    for name, hint in _fields(type(value)):
        path = f"{where}{name}"
        if not _matches(getattr(value, name), hint, path):
            found = getattr(value, name)
            return f"its {path} is {_kind(found)}, not {_expected(hint)}"
        nested = getattr(value, name)
        if attrs.has(type(nested)) and hasattr(type(nested), "from_dict"):
            problem = _problem(nested, f"{path}.")
            if problem is not None:
                return problem
    return None


def _matches(value: Any, hint: Any, path: str) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, option, path) for option in typing.get_args(hint))
    if origin is typing.Literal:
        return any(type(value) is type(v) and value == v for v in typing.get_args(hint))
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, item, path) for v in value)
    if origin is dict:
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return isinstance(value, dict) and all(_matches(v, item, path) for v in value.values())
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a construct the generator does not write: accept what came


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
