"""The body the fake answers with for a documented response: the spec's example, or else a
minimal instance built from the response's schema."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Canned strings for the formats a minimal instance may need.
_FORMATS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}
_MAX_DEPTH = 32


def resolve(document: Mapping[str, Any], node: Any) -> Any:
    """`node`, or what its local ``$ref`` (``#/...``) points to in `document`, followed."""
    seen = 0
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref: str = node["$ref"]
        if not ref.startswith("#/") or seen > _MAX_DEPTH:
            raise ValueError(f"the fake follows local references only ('#/...'), not {ref!r}")
        target: Any = document
        for part in ref[2:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or key not in target:
                raise ValueError(f"the reference {ref!r} points to nothing in the spec")
            target = target[key]
        node = target
        seen += 1
    return node


def media_example(document: Mapping[str, Any], media: Mapping[str, Any]) -> Any:
    """The example of a media type object: ``example``, else the first of ``examples``, else
    one built from its schema."""
    if "example" in media:
        return media["example"]
    examples = media.get("examples")
    if isinstance(examples, Mapping):
        for example in examples.values():
            resolved = resolve(document, example)
            if isinstance(resolved, Mapping) and "value" in resolved:
                return resolved["value"]
    return schema_example(document, media.get("schema", {}))


def schema_example(document: Mapping[str, Any], schema: Any, depth: int = 0) -> Any:
    """An instance of `schema`: its own example, const, default or first enum value, else the
    smallest one its type allows (required properties only, minItems items)."""
    schema = resolve(document, schema)
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    for key in ("const", "example", "default"):
        if key in schema:
            return schema[key]
    for key in ("examples", "enum"):
        values = schema.get(key)
        if isinstance(values, list) and values:
            return values[0]
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = schema_example(document, part, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    for key in ("oneOf", "anyOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema_example(document, schema[key][0], depth + 1)
    return _of_type(document, schema, _first_type(schema), depth)


def _first_type(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        concrete = [k for k in kind if k != "null"]
        return concrete[0] if concrete else ("null" if kind else None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _of_type(
    document: Mapping[str, Any], schema: Mapping[str, Any], kind: str | None, depth: int
) -> Any:
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: schema_example(document, properties.get(name, {}), depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        item = schema_example(document, schema.get("items", {}), depth + 1)
        return [item] * int(schema.get("minItems", 0))
    if kind == "string":
        text = _FORMATS.get(str(schema.get("format")), "string")
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        text = text.ljust(low, "x")
        return text[: int(high)] if high is not None else text
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    return None


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    """A number within the schema's bounds: its lower bound, the middle of a closed range, or
    zero when that is allowed."""
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum")
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum")
    if integer:
        first = None if low is None else math.floor(low) + 1 if low_open else math.ceil(low)
        last = None if high is None else math.ceil(high) - 1 if high_open else math.floor(high)
        if first is not None:
            return first
        return 0 if last is None else min(0, last)
    if low is not None and high is not None:
        return (low + high) / 2
    if low is not None:
        return float(low + 1 if low_open else low)
    if high is not None:
        return float(high - 1 if high_open else min(0, high))
    return 0.0


def _bound(schema: Mapping[str, Any], closed: str, opened: str) -> tuple[float | None, bool]:
    if isinstance(schema.get(opened), (int, float)) and not isinstance(schema[opened], bool):
        return schema[opened], True
    if isinstance(schema.get(closed), (int, float)) and not isinstance(schema[closed], bool):
        return schema[closed], False
    return None, False
