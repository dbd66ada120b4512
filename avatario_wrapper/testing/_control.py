"""The control endpoint: change a running fake's faults, and count its sessions, over HTTP
(``control=True`` only).

    GET    /_fake/faults                 what is left: {"faults", "pending", "seed"}
    PUT    /_fake/faults[?seed=N]        replace every fault with the script in the body
    POST   /_fake/faults                 add the script's faults to those already there
    DELETE /_fake/faults                 drop every fault
    GET    /_fake/sessions               the sessions started: {"count", "sessions": [{
                                         "session_id", "avatario_face_id", "agent_id"}]}

The body is the script as text (any Content-Type but JSON), or JSON: a string, or
``{"faults": "...", "seed": N}``. Each answer is the state after the change, as GET shows it.
A request must come from a loopback address (else 403) and carry the fake's ``x-api-key``
(else 401); a script that does not parse is a 422 naming the problem. The endpoints are served
at the root only, are not operations of the spec, take no faults and are not recorded.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from ._fault_plan import FaultPlan
from ._handlers import OperationResponse, error_body
from ._spec import is_json
from .faults import FaultSyntaxError

CONTROL_PATH = "/_fake/faults"
SESSIONS_PATH = "/_fake/sessions"
CONTROL_SEGMENTS = ["_fake", "faults"]
SESSIONS_SEGMENTS = ["_fake", "sessions"]
#: The control endpoints' paths, as request segments.
CONTROL_ROUTES = (CONTROL_SEGMENTS, SESSIONS_SEGMENTS)
CONTROL_METHODS = ("DELETE", "GET", "POST", "PUT")


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (an IPv4-mapped one too)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _state(plan: FaultPlan) -> OperationResponse:
    return OperationResponse(
        200, {"faults": plan.script, "pending": plan.pending, "seed": plan.seed}
    )


def sessions_state(sessions: list[dict[str, Any]]) -> OperationResponse:
    """``GET /_fake/sessions``: how many sessions the fake started, and which."""
    return OperationResponse(
        200,
        {
            "count": len(sessions),
            "sessions": [
                {
                    "session_id": session["session_id"],
                    "avatario_face_id": session["payload"].get("avatario_face_id"),
                    "agent_id": session["payload"].get("agent_id"),
                }
                for session in sessions
            ],
        },
    )


def _refusal(
    status: int, code: str, message: str, request_id: str, **headers: str
) -> OperationResponse:
    return OperationResponse(status, error_body(code, message, request_id), headers)


def _script(
    headers: Mapping[str, str], body: bytes, query: Mapping[str, list[str]]
) -> tuple[str, int | None]:
    """The script and the seed a PUT or POST gives; ValueError says what is wrong."""
    seed_text = query.get("seed", [None])[-1]
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    script: Any
    if is_json(media_type):
        try:
            given = json.loads(body)
        except (ValueError, RecursionError):
            raise ValueError("the body is not JSON") from None
        if isinstance(given, dict):
            script, seed_value = given.get("faults", ""), given.get("seed", seed_text)
            seed_text = None if seed_value is None else str(seed_value)
        else:
            script = given
    else:
        try:
            script = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the body is not UTF-8 text") from None
    if not isinstance(script, str):
        raise ValueError('give the script as text, a JSON string or {"faults": "..."}')
    if seed_text is None:
        return script, None
    try:
        return script, int(seed_text)
    except ValueError:
        raise ValueError("the seed must be an integer") from None


def control_answer(
    *,
    segments: list[str],
    method: str,
    client_host: str | None,
    headers: Mapping[str, str],
    query_string: bytes,
    body: bytes,
    api_key: str,
    plan: FaultPlan,
    sessions: Callable[[], list[dict[str, Any]]],
    request_id: str,
) -> OperationResponse:
    """The answer of the control endpoint at `segments` (one of `CONTROL_ROUTES`)."""
    if not is_loopback(client_host):
        return _refusal(
            403,
            "forbidden",
            "The fake's control endpoint answers loopback clients only.",
            request_id,
        )
    given_key = headers.get("x-api-key", "")
    if not hmac.compare_digest(given_key.encode(), api_key.encode()):
        return _refusal(401, "unauthorized", "Missing or invalid API key.", request_id)
    if segments == SESSIONS_SEGMENTS:
        if method != "GET":
            return _refusal(
                405, "method_not_allowed", f"{SESSIONS_PATH} takes GET.", request_id, allow="GET"
            )
        return sessions_state(sessions())
    if method not in CONTROL_METHODS:
        return _refusal(
            405,
            "method_not_allowed",
            f"{CONTROL_PATH} takes {', '.join(CONTROL_METHODS)}.",
            request_id,
            allow=", ".join(CONTROL_METHODS),
        )
    if method == "GET":
        return _state(plan)
    if method == "DELETE":
        plan.clear()
        return _state(plan)
    query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    try:
        script, seed = _script(headers, body, query)
        if method == "PUT":
            plan.replace(script, seed=seed)
        elif seed is not None:
            raise ValueError("a seed is given with PUT (it restarts the draws), not POST")
        else:
            plan.add(script)
    except FaultSyntaxError as problem:
        return _refusal(422, "validation_error", f"faults: {problem}", request_id)
    except ValueError as problem:
        return _refusal(400, "bad_request", str(problem), request_id)
    return _state(plan)
