"""The spec's checks of a request, as pure functions: credentials, parameters, body.

Each check returns what it found wrong as a `Problem` (status, error code, one-line message),
in the order the fake applies them: the API key (401), the body's media type (415), its JSON
(400), its schema (422), then the parameters (422). A message never quotes a value whose
name says it is a secret (a token, a key, a password).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs
import jsonschema

from .._text import REDACTED, redact
from ._spec import Credential, Parameter, RequestBody, SpecOperation, is_json

MAX_MESSAGE = 300
_SECRET = re.compile(r"token|secret|password|api[-_]?key|authorization", re.IGNORECASE)
#: Query parameters whose values the fake never records.
_SECRET_NAME = re.compile(
    r"token|secret|passw|api[-_]?key|auth|credential|^(?:key|sig|signature)$", re.IGNORECASE
)


@attrs.frozen
class Problem:
    """Why a request is refused."""

    status: int
    code: str
    message: str


@attrs.frozen
class Inputs:
    """A request's parts, as the checks read them."""

    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, list[str]]
    path_params: Mapping[str, str]
    body: bytes = attrs.field(repr=False)

    @property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no cookies
            return {}
        return {name: morsel.value for name, morsel in jar.items()}

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def first_error(validator: jsonschema.protocols.Validator, instance: Any, where: str) -> str | None:
    """The most relevant schema violation as ``"<where>/<path>: <message>"``, or None."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    path = [str(p) for p in error.absolute_path]
    location = "/".join(path) or where
    if _SECRET.search(location) or _SECRET.search(where):
        message = f"the value breaks the schema's {error.validator!r} rule"
    else:
        message = error.message
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    return f"{location}: {message}"


# -- credentials --------------------------------------------------------------------------------


def _presented(credential: Credential, inputs: Inputs) -> str | None:
    if credential.location == "header":
        return inputs.headers.get(credential.name.lower())
    if credential.location == "query":
        values = inputs.query.get(credential.name)
        return values[-1] if values else None
    if credential.location == "cookie":
        return inputs.cookies.get(credential.name)
    scheme, _, token = inputs.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _matches(given: str | None, api_key: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), api_key.encode())


def credential_problem(op: SpecOperation, inputs: Inputs, api_key: str) -> Problem | None:
    """401 unless one of the operation's security alternatives is met with the fake's key."""
    if not op.security:
        return None
    for alternative in op.security:
        if all(_matches(_presented(c, inputs), api_key) for c in alternative):
            return None
    return Problem(401, "unauthorized", "Missing or invalid API key.")


def credential_headers(op: SpecOperation | None) -> set[str]:
    """The header names that carry the operation's credentials (kept out of records): a
    ``Cookie`` header holding one is hidden whole."""
    names = {"x-api-key", "authorization"}
    for alternative in op.security if op is not None else ():
        for credential in alternative:
            if credential.location == "header":
                names.add(credential.name.lower())
            elif credential.location == "cookie":
                names.add("cookie")
    return names


def redacted_query(
    op: SpecOperation | None, query_string: str, secrets: tuple[str, ...] = ()
) -> str:
    """The query string with credentials redacted: the values of the operation's credential
    parameters and of any parameter named like a secret (``token``, ``api_key``, ``key``...),
    then each of `secrets` wherever it is, as sent or escaped (see `avatario_wrapper._text`)."""
    names = {
        c.name
        for alternative in (op.security if op is not None else ())
        for c in alternative
        if c.location == "query"
    }
    if query_string:
        pairs = parse_qsl(query_string, keep_blank_values=True)
        kept = [(k, REDACTED if k in names or _SECRET_NAME.search(k) else v) for k, v in pairs]
        if kept != pairs:
            query_string = urlencode(kept)
    return redact(query_string, secrets)


# -- body ---------------------------------------------------------------------------------------


def body_problem(body: RequestBody | None, inputs: Inputs) -> tuple[Any, Problem | None]:
    """The parsed JSON body (None when there is none), or why it is refused."""
    if body is None:
        return None, None  # the operation takes no body: whatever came is ignored
    media_type = inputs.media_type
    if not inputs.body and not media_type and not body.required:
        return None, None
    if body.media_types and media_type not in body.media_types:
        wanted = " or ".join(body.media_types)
        return None, Problem(
            415, "unsupported_media_type", f"The body must be sent as {wanted} (Content-Type)."
        )
    if not is_json(media_type):
        return None, None  # a non-JSON media type the spec allows: passed on as bytes
    try:
        value = json.loads(inputs.body)
    except (ValueError, RecursionError):
        return None, Problem(400, "bad_request", "The body is not JSON.")
    if body.wants_object and not isinstance(value, dict):
        return None, Problem(400, "bad_request", "The body is not a JSON object.")
    if body.validator is not None:
        problem = first_error(body.validator, value, "body")
        if problem is not None:
            return None, Problem(422, "validation_error", problem)
    return value, None


# -- parameters -----------------------------------------------------------------------------------


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return [str(k) for k in kind]
    return [str(kind)] if isinstance(kind, str) else []


def _scalar(text: str, schema: Mapping[str, Any]) -> Any:
    """`text` as the type its schema asks for, when it reads as one; else the text."""
    for kind in _types(schema):
        if kind == "integer" and re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        if kind == "number":
            try:
                return float(text) if re.search(r"[.eE]", text) else int(text)
            except ValueError:
                continue
        if kind == "boolean" and text in ("true", "false"):
            return text == "true"
        if kind == "null" and text == "":
            return None
    return text


def _typed(parameter: Parameter, values: list[str]) -> Any:
    schema = parameter.schema
    if "array" in _types(schema):
        items = schema.get("items", {})
        if len(values) == 1 and parameter.location != "query":
            values = values[0].split(",")  # the "simple" style of path and header parameters
        return [_scalar(v, items if isinstance(items, Mapping) else {}) for v in values]
    return _scalar(values[0], schema)


def _raw(parameter: Parameter, inputs: Inputs) -> list[str] | None:
    if parameter.location == "path":
        value = inputs.path_params.get(parameter.name)
        return None if value is None else [value]
    if parameter.location == "query":
        return inputs.query.get(parameter.name)
    if parameter.location == "header":
        value = inputs.headers.get(parameter.key)
        return None if value is None else [value]
    cookie = inputs.cookies.get(parameter.name)
    return None if cookie is None else [cookie]


def parameter_problem(
    op: SpecOperation, inputs: Inputs, ignored: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], Problem | None]:
    """The parameters that were given, typed by their schemas, or the first that is wrong.

    `ignored` names header parameters to leave unread (a fake ignoring ``Idempotency-Key``).
    """
    params: dict[str, Any] = {}
    for parameter in op.parameters:
        if parameter.location == "header" and parameter.key in ignored:
            continue
        label = f"{parameter.name} ({parameter.location})"
        raw = _raw(parameter, inputs)
        if raw is None:
            if parameter.required:
                return params, Problem(422, "validation_error", f"{label}: it is required")
            continue
        value = _typed(parameter, raw)
        problem = first_error(parameter.validator, value, parameter.name)
        if problem is not None:
            message = f"{label}: {problem.partition(': ')[2]}"
            return params, Problem(422, "validation_error", message)
        params[parameter.name] = value
    return params, None
