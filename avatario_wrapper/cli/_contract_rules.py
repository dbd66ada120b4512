"""What ``avatario contract-test`` may send: pure decisions, read from openapi.yaml.

openapi.yaml is our reconstruction of Avatario's API: what a deployment refuses is unknown, so
no rule here rests on "the spec says it must be refused". They rest on what a server would have
to make up to start a session:

- `may_start`: whether a request could start a session. True when its body or query names the
  avatar or the agent in any form a lenient server might read: a field name of the spec's
  (``avatario_face_id``, ``agent_id``) or the short ``face_id`` / ``avatar_id``, in any case
  and spelling (``agentId``, ``AGENT-ID``), escaped (``\\u005f``), percent-encoded, inside a
  string, in raw text that is not JSON. The key and Content-Type are not looked at: a gateway
  may add the key, and a server may parse JSON whatever the header says. To start a session
  from any other request a server must invent both the avatar and the agent.
- `safe_requests`: the fixed list safe mode sends (docs/contract-testing.md lists it). None
  names the avatar or the agent, and its one JSON object names an unusable LiveKit room
  (`DUMMY_LIVEKIT_URL`, `DUMMY_LIVEKIT_TOKEN`), so that even a server that invents both ids
  starts an avatar that can join no room.

Nothing here sends anything; `_contract` does.
"""

from __future__ import annotations

import enum
import json
import unicodedata
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import httpx

from ..testing._spec import load_spec

#: The one operation that starts an avatar.
PATH = "/start-session"
METHOD = "POST"
JSON_TYPE = "application/json"
#: The room in the one JSON object safe mode sends: ``.invalid`` never resolves (RFC 6761), and
#: a LiveKit token is a JWT (three dot-separated parts) signed with the LiveKit server's
#: secret, which this dotless string is not.
DUMMY_LIVEKIT_URL = "wss://livekit.invalid"
DUMMY_LIVEKIT_TOKEN = "avatario-contract-test-not-a-livekit-token"  # noqa: S105 - a dummy
DUMMY_NAME = "avatario-contract-test"
#: Names a server might take for the avatar besides the spec's: the old plugin's and this
#: package's ``avatar_id``.
ALIASES = ("avatar_id",)


class Key(enum.Enum):
    """Which key a hand-built request carries."""

    NONE = "none"
    WRONG = "wrong"  # a random one, never the deployment's
    EMPTY = "empty"
    REAL = "real"


@attrs.frozen
class Refusal:
    """A hand-built request safe mode sends; `expect` None means any 4xx."""

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


def id_fields(spec: Mapping[str, Any]) -> list[str]:
    """The required top-level strings: the avatar's and the agent's ids, nothing a server has."""
    return [name for name, inner in required_fields(spec).items() if inner is None]


def examples(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The start-session body examples in the spec, by name."""
    examples = _json_body(spec).get("examples", {})
    return [(name, _resolve(spec, example)["value"]) for name, example in examples.items()]


# -- which requests may start a session ----------------------------------------------------


def _squash(text: str) -> str:
    """`text` as a server matching names loosely sees it: decoded, case folded, alphanumeric."""
    text = urllib.parse.unquote_plus(urllib.parse.unquote_plus(text))
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in text if c.isascii() and c.isalnum())


def _markers(spec: Mapping[str, Any]) -> set[str]:
    """Each id field's name squashed, and its last two words (``avatario_face_id``: ``faceid``)."""
    names = [*id_fields(spec), *ALIASES]
    return {_squash(form) for name in names for form in (name, "_".join(name.split("_")[-2:]))}


class _Members(tuple[tuple[str, Any], ...]):
    """A JSON object as its members in order, repeated names kept."""


def _strings(node: Any) -> Iterator[str]:
    """Every member name and string in a parsed JSON document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, _Members):
        for name, value in node:
            yield name
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _texts(request: httpx.Request) -> Iterator[str]:
    """What a server might read names from: the query, the raw body, the body's JSON strings."""
    yield request.url.query.decode("latin-1")
    content = request.content
    yield content.decode("utf-8", "replace")
    yield content.decode("latin-1")  # UTF-16 text and the like: squashing drops the NULs
    try:  # bytes: json detects UTF-8, UTF-16 and UTF-32 as a lenient parser would
        document = json.loads(content, object_pairs_hook=_Members)
    except (ValueError, RecursionError):
        return
    yield from _strings(document)


def may_start(request: httpx.Request, spec: Mapping[str, Any] | None = None) -> bool:
    """Whether some server could start a session for `request`.

    True for a request to the start-session operation whose query or body names the avatar
    or the agent in any form (see the module's docstring), whatever its key and Content-Type.
    """
    spec = spec if spec is not None else load_spec()
    if request.method != METHOD or not request.url.path.endswith(PATH):
        return False
    markers = _markers(spec)
    return any(marker in _squash(text) for text in _texts(request) for marker in markers)


# -- what safe mode sends ------------------------------------------------------------------


def room_only_body() -> bytes:
    """The one JSON object safe mode sends: the unusable room, and neither id."""
    room = {"url": DUMMY_LIVEKIT_URL, "token": DUMMY_LIVEKIT_TOKEN}
    return json.dumps({"livekit": room}).encode()


def safe_requests(spec: Mapping[str, Any] | None = None) -> list[Refusal]:
    """Everything safe mode sends, in order; full mode sends it first too.

    None names the avatar or the agent. The key tests carry the room-only object (a gateway
    may add the real key), and so does the first request with the real key: a server that
    starts an avatar whatever the body names then gets the unusable room, and the run stops.
    """
    spec = spec if spec is not None else load_spec()
    room = room_only_body()
    unauthorized, malformed, invalid = frozenset({401}), frozenset({400}), frozenset({422})
    no_ids = " and no ".join(id_fields(spec))
    return [
        Refusal("no key", Key.NONE, JSON_TYPE, room, unauthorized),
        Refusal("a wrong key", Key.WRONG, JSON_TYPE, room, unauthorized),
        Refusal("an empty key", Key.EMPTY, JSON_TYPE, room, unauthorized),
        Refusal(f"no {no_ids}", Key.REAL, JSON_TYPE, room, invalid),
        Refusal(f"Content-Type text/plain (and no {no_ids})", Key.REAL, "text/plain", room, None),
        Refusal("a body that is not JSON", Key.REAL, JSON_TYPE, b"this is not JSON", malformed),
        Refusal("an empty body", Key.REAL, JSON_TYPE, b"", malformed),
        Refusal("JSON null", Key.REAL, JSON_TYPE, b"null", malformed),
        Refusal("a JSON number", Key.REAL, JSON_TYPE, b"0", malformed),
        Refusal("JSON true", Key.REAL, JSON_TYPE, b"true", malformed),
        Refusal("a JSON string", Key.REAL, JSON_TYPE, b'"not an object"', malformed),
    ]
