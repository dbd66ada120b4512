"""A Griffe extension for the docs site: the constructor of every attrs class.

attrs writes a class's ``__init__`` at run time, so a static reading of the source (what
mkdocstrings does) sees no constructor and the API reference would show none. This rebuilds it
from the class's annotated fields, as Griffe's own dataclasses extension does for dataclasses:
a field's default is its value, or ``attrs.field(default=...)``, or ``factory()``; fields with
``init=False`` are left out. Loaded by mkdocs.yml (mkdocstrings' ``extensions`` option).
"""

from __future__ import annotations

from typing import Any

import griffe

_ATTRS_DECORATORS = {
    "attrs.frozen",
    "attrs.define",
    "attrs.mutable",
    "attr.s",
    "attr.attrs",
    "attr.frozen",
    "attr.define",
}
_FIELD_CALLS = {"attrs.field", "attr.ib", "attr.attrib", "attr.field"}


def _is_attrs(cls: griffe.Class) -> bool:
    for decorator in cls.decorators:
        value = decorator.value
        path = value.function.canonical_path if isinstance(value, griffe.ExprCall) else None
        if path is None and isinstance(value, griffe.Expr):
            path = value.canonical_path
        if path in _ATTRS_DECORATORS:
            return True
    return False


def _field_arguments(attribute: griffe.Attribute) -> dict[str, Any] | None:
    value = attribute.value
    if isinstance(value, griffe.ExprCall) and value.function.canonical_path in _FIELD_CALLS:
        return {
            argument.name: argument.value
            for argument in value.arguments
            if isinstance(argument, griffe.ExprKeyword)
        }
    return None


def _parameters(cls: griffe.Class) -> list[griffe.Parameter]:
    parameters = []
    for member in cls.members.values():
        if not isinstance(member, griffe.Attribute) or member.annotation is None:
            continue
        if "class-attribute" in member.labels and "instance-attribute" not in member.labels:
            continue
        arguments = _field_arguments(member)
        if arguments is not None and str(arguments.get("init")) == "False":
            continue
        if arguments is None:
            default = member.value
        elif "factory" in arguments:
            default = griffe.ExprCall(function=arguments["factory"], arguments=[])
        else:
            default = arguments.get("default")
        kind = (
            griffe.ParameterKind.keyword_only
            if arguments is not None and str(arguments.get("kw_only")) == "True"
            else griffe.ParameterKind.positional_or_keyword
        )
        parameters.append(
            griffe.Parameter(
                member.name,
                annotation=member.annotation,
                kind=kind,
                default=default,
                docstring=member.docstring,
            )
        )
    return parameters


class AttrsInit(griffe.Extension):
    """Adds ``__init__`` to attrs classes that have none in their source."""

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        if "__init__" in cls.members or not _is_attrs(cls):
            return
        self_parameter = griffe.Parameter(
            "self", annotation=None, kind=griffe.ParameterKind.positional_or_keyword
        )
        cls.set_member(
            "__init__",
            griffe.Function(
                "__init__",
                lineno=0,
                endlineno=0,
                parent=cls,
                parameters=griffe.Parameters(self_parameter, *_parameters(cls)),
                returns="None",
            ),
        )
