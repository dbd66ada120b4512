"""What ``avatario contract-test`` may send: pure decisions, read from openapi.yaml.

- `may_start`: whether a request could start a session on a server lenient in every way the
  spec leaves open. True when it carries the real key and its body is a JSON object holding
  every field the spec requires, each of a type such a server could take (for a string:
  anything but null, an array or an object; for an object: an object with its own required
  fields). Content-Type is not looked at, since a server may parse JSON whatever the header
  says. Every other request is one the spec says must be refused: 401 without the right key,
  4xx for a body that cannot be a session.
- `safe_requests`: the fixed list safe mode sends (docs/contract-testing.md lists it), none
  of which may start a session, with a dummy LiveKit URL and token.

Nothing here sends anything; `_contract` does.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import httpx

from ..testing._spec import load_spec

#: The one operation that starts an avatar.
PATH = "/start-session"
METHOD = "POST"
JSON_TYPE = "application/json"
#: In every body safe mode sends: ``.invalid`` never resolves (RFC 6761), and a LiveKit token
#: is a JWT signed with the LiveKit server's secret, which this string is not.
DUMMY_LIVEKIT_URL = "wss://livekit.invalid"
DUMMY_LIVEKIT_TOKEN = "avatario-contract-test.not-a-livekit-token"  # noqa: S105 - a dummy
DUMMY_NAME = "avatario-contract-test"


class Key(enum.Enum):
    """Which key a hand-built request carries."""

    NONE = "none"
    WRONG = "wrong"  # a random one, never the deployment's
    EMPTY = "empty"
    REAL = "real"


@attrs.frozen
class Refusal:
    """A hand-built request the spec says must be refused; `expect` None means any 4xx."""

    what: str
    key: Key
    content_type: str
    body: bytes = attrs.field(repr=False)
    expect: frozenset[int] | None


# -- the spec ------------------------------------------------------------------------------


def _resolve(spec: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in str(node["$ref"]).removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _json_body(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    content: Mapping[str, Any] = spec["paths"][PATH][METHOD.lower()]["requestBody"]["content"]
    return _resolve(spec, content[JSON_TYPE])


def key_header(spec: Mapping[str, Any]) -> str:
    """The header the spec's API key goes in (``x-api-key``)."""
    name: str = spec["components"]["securitySchemes"]["apiKey"]["name"]
    return name


def required_fields(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A start-session body's required fields as a tree: an object's own, or None for a leaf."""

    def walk(schema: Mapping[str, Any]) -> dict[str, Any]:
        properties = schema.get("properties", {})
        tree: dict[str, Any] = {}
        for name in schema.get("required", []):
            field = _resolve(spec, properties.get(name, {}))
            tree[name] = walk(field) if field.get("type") == "object" else None
        return tree

    return walk(_resolve(spec, _json_body(spec)["schema"]))


def examples(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The start-session body examples in the spec, by name."""
    examples = _json_body(spec).get("examples", {})
    return [(name, _resolve(spec, example)["value"]) for name, example in examples.items()]


# -- which requests may start a session ----------------------------------------------------


class _RepeatedKey(ValueError):
    pass


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _RepeatedKey  # parsers disagree on which value wins
    return dict(pairs)


def _fits(value: Any, shape: dict[str, Any] | None) -> bool:
    if shape is None:  # a leaf: lenient servers coerce numbers and booleans to strings
        return value is not None and not isinstance(value, (list, dict))
    return isinstance(value, dict) and all(
        name in value and _fits(value[name], inner) for name, inner in shape.items()
    )


def may_start(request: httpx.Request, api_key: str, spec: Mapping[str, Any] | None = None) -> bool:
    """Whether a server lenient in every way the spec leaves open could start a session for it.

    True for a request to the start-session operation that carries `api_key` and whose body
    parses as a JSON object with every required field present and of a type a server could
    coerce; also, assuming the worst, for a JSON object with a repeated key. False exactly for
    requests the spec says must be refused.
    """
    spec = spec if spec is not None else load_spec()
    if request.method != METHOD or not request.url.path.endswith(PATH):
        return False
    if request.headers.get(key_header(spec)) != api_key:
        return False
    try:
        body = json.loads(request.content, object_pairs_hook=_no_repeated_keys)
    except _RepeatedKey:
        return True
    except (ValueError, RecursionError):
        return False
    return _fits(body, required_fields(spec))


# -- what safe mode sends ------------------------------------------------------------------


def _valid_body() -> dict[str, Any]:
    return {
        "avatario_face_id": DUMMY_NAME,
        "agent_id": DUMMY_NAME,
        "livekit": {"url": DUMMY_LIVEKIT_URL, "token": DUMMY_LIVEKIT_TOKEN},
    }


def _edited(body: dict[str, Any], path: tuple[str, ...], value: Any = None) -> bytes:
    """`body` as JSON with the field at `path` replaced by `value`, or removed when None."""
    copy = json.loads(json.dumps(body))
    node = copy
    for part in path[:-1]:
        node = node[part]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(copy).encode()


def _leaves(
    tree: dict[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Every required field's path, parents first, and whether it is an object."""
    for name, inner in tree.items():
        yield (*prefix, name), inner is not None
        if inner is not None:
            yield from _leaves(inner, (*prefix, name))


def safe_requests(spec: Mapping[str, Any] | None = None) -> list[Refusal]:
    """Everything safe mode sends, in order; full mode sends it first too.

    Bodies carry a dummy LiveKit URL and token (`DUMMY_LIVEKIT_URL`, `DUMMY_LIVEKIT_TOKEN`).
    With the real key, no body holds every required field with a usable type.
    """
    spec = spec if spec is not None else load_spec()
    valid = _valid_body()
    text = json.dumps(valid).encode()
    unauthorized, malformed, invalid = frozenset({401}), frozenset({400}), frozenset({422})
    fields = list(_leaves(required_fields(spec)))
    refusals = [
        Refusal("no key", Key.NONE, JSON_TYPE, text, unauthorized),
        Refusal("a wrong key", Key.WRONG, JSON_TYPE, text, unauthorized),
        Refusal("an empty key", Key.EMPTY, JSON_TYPE, text, unauthorized),
        Refusal("a body that is not JSON", Key.REAL, JSON_TYPE, text[:40], malformed),
        Refusal("an empty body", Key.REAL, JSON_TYPE, b"", malformed),
        Refusal("a JSON array", Key.REAL, JSON_TYPE, b"[" + text + b"]", malformed),
        Refusal("JSON null", Key.REAL, JSON_TYPE, b"null", malformed),
        Refusal("an empty JSON object", Key.REAL, JSON_TYPE, b"{}", invalid),
    ]
    for path, _ in fields:
        body = _edited(valid, path)
        refusals.append(Refusal(f"no {'.'.join(path)}", Key.REAL, JSON_TYPE, body, invalid))
    for path, is_object in fields:
        kind, value = ("a string", DUMMY_LIVEKIT_URL) if is_object else ("an array", [DUMMY_NAME])
        body = _edited(valid, path, value)
        what = f"{'.'.join(path)} as {kind}"
        refusals.append(Refusal(what, Key.REAL, JSON_TYPE, body, invalid))
    # Without a required field too, so a server that ignores Content-Type still refuses it.
    missing = next((path for path, is_object in fields if is_object), fields[0][0])
    what = f"Content-Type text/plain (and no {'.'.join(missing)})"
    refusals.append(Refusal(what, Key.REAL, "text/plain", _edited(valid, missing), None))
    return refusals
