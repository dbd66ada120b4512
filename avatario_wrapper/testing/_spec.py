"""An OpenAPI 3.1 document read as the fake serves it: for each operation its route, its
parameters, its request body, who may call it and what it answers.

The bundled openapi.yaml is read once (`bundled_api`); a test may hand the fake another
document (a dict, as ``yaml.safe_load`` returns it).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import jsonschema
import yaml

from ._examples import media_example, resolve

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
JSON_MEDIA_TYPE = "application/json"


class SpecError(ValueError):
    """A document the fake cannot serve; the message says what and where."""


def _spec_text() -> str:
    bundled = resources.files("avatario_wrapper.testing").joinpath("openapi.yaml")
    if bundled.is_file():  # an installed wheel carries its own copy
        return bundled.read_text(encoding="utf-8")
    # A source checkout (editable install): the one spec at the repository root.
    return (Path(__file__).resolve().parents[2] / "openapi.yaml").read_text(encoding="utf-8")


@functools.cache
def load_spec() -> dict[str, Any]:
    """The bundled openapi.yaml, parsed once."""
    spec: dict[str, Any] = yaml.safe_load(_spec_text())
    return spec


def is_json(media_type: str) -> bool:
    """True for ``application/json`` and the ``+json`` types."""
    return media_type == JSON_MEDIA_TYPE or media_type.endswith("+json")


@attrs.frozen
class Parameter:
    """One parameter of an operation (path, query, header or cookie)."""

    name: str
    location: str
    required: bool
    schema: Mapping[str, Any] = attrs.field(repr=False)
    validator: jsonschema.protocols.Validator = attrs.field(repr=False)

    @property
    def key(self) -> str:
        """The name to look it up by: header names are case-insensitive."""
        return self.name.lower() if self.location == "header" else self.name


@attrs.frozen
class RequestBody:
    """What an operation accepts as its body."""

    required: bool
    media_types: tuple[str, ...]
    #: The JSON media type's schema validator, when the operation takes JSON.
    validator: jsonschema.protocols.Validator | None = attrs.field(repr=False)
    schema: Mapping[str, Any] = attrs.field(repr=False)
    #: The schema asks for a JSON object: anything else is a malformed request (400).
    wants_object: bool = False


@attrs.frozen
class Credential:
    """One security scheme the fake checks against its API key."""

    location: str  # "header", "query", "cookie", or "bearer" (an Authorization header)
    name: str


@attrs.frozen
class Answer:
    """A documented response: its status and its JSON body (`has_body` False: none)."""

    status: int
    body: Any = None
    has_body: bool = True


@attrs.frozen
class Segment:
    """One segment of a path template: a literal, or a pattern with path parameters."""

    literal: str | None
    pattern: re.Pattern[str] | None = None
    names: tuple[str, ...] = ()


@attrs.frozen
class SpecOperation:
    """One operation of the spec, ready to serve."""

    operation_id: str
    method: str  # upper case
    route: str  # the path template, e.g. "/sessions/{session_id}"
    segments: tuple[Segment, ...]
    parameters: tuple[Parameter, ...]
    body: RequestBody | None
    #: Alternatives, any one of which admits a request; each is a set of credentials that
    #: must all be given. Empty: anyone may call.
    security: tuple[tuple[Credential, ...], ...]
    success: Answer = attrs.field(repr=False)
    answers: Mapping[int, Answer] = attrs.field(repr=False)

    def answer_for(self, status: int) -> Answer:
        """What a 2xx status fault answers: that status's documented body, else the success
        body."""
        documented = self.answers.get(status)
        if documented is not None:
            return documented
        return Answer(status, self.success.body, self.success.has_body)


class ApiSpec:
    """The operations of one OpenAPI document, and the path prefixes it is served under."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        if not isinstance(document, Mapping) or not isinstance(document.get("paths"), Mapping):
            raise SpecError("the spec must be an OpenAPI document (a mapping with 'paths')")
        self.document: Mapping[str, Any] = copy.deepcopy(document)  # later edits change nothing
        document = self.document
        self._components = document.get("components", {})
        self.prefixes = self._prefixes()
        operations: list[SpecOperation] = []
        for route, raw_item in document["paths"].items():
            item = resolve(document, raw_item)
            for method in HTTP_METHODS:
                if method in item:
                    operations.append(self._operation(route, method, item))
        ids = [op.operation_id for op in operations]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise SpecError(f"operationIds must be unique; repeated: {', '.join(duplicates)}")
        self.operations: dict[str, SpecOperation] = {op.operation_id: op for op in operations}

    def validator(self, schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
        """A Draft 2020-12 validator (formats checked) for a schema of this document."""
        cls = jsonschema.Draft202012Validator
        return cls({**schema, "components": self._components}, format_checker=cls.FORMAT_CHECKER)

    # -- reading the document -----------------------------------------------------------------

    def _prefixes(self) -> tuple[str, ...]:
        """The root, and the path of each server URL (``/api/sdk`` for the bundled spec)."""
        prefixes = [""]
        for server in self.document.get("servers") or []:
            path = urlsplit(str(server.get("url", ""))).path.rstrip("/")
            if path and "{" not in path and path not in prefixes:
                prefixes.append(path)
        return tuple(prefixes)

    def _operation(self, route: str, method: str, item: Mapping[str, Any]) -> SpecOperation:
        op = resolve(self.document, item[method])
        where = f"{method.upper()} {route}"
        operation_id = op.get("operationId")
        if not isinstance(operation_id, str) or not operation_id:
            raise SpecError(f"{where} has no operationId: the fake names operations by it")
        parameters: dict[tuple[str, str], Parameter] = {}
        for raw in [*item.get("parameters", []), *op.get("parameters", [])]:
            parameter = self._parameter(resolve(self.document, raw))
            parameters[(parameter.location, parameter.key)] = parameter  # the operation's win
        responses = op.get("responses", {})
        answers = {
            int(code): self._answer(int(code), response)
            for code, response in responses.items()
            if str(code).isdigit()
        }
        return SpecOperation(
            operation_id=operation_id,
            method=method.upper(),
            route=route,
            segments=_segments(route),
            parameters=tuple(parameters.values()),
            body=self._body(op.get("requestBody")),
            security=self._security(op.get("security", self.document.get("security", [])), where),
            success=self._success(responses, answers),
            answers=answers,
        )

    def _parameter(self, raw: Mapping[str, Any]) -> Parameter:
        location = raw.get("in")
        if location not in ("path", "query", "header", "cookie"):
            raise SpecError(f"parameter {raw.get('name')!r} has an unknown location {location!r}")
        schema = resolve(self.document, raw.get("schema", {}))
        return Parameter(
            name=str(raw["name"]),
            location=location,
            required=bool(raw.get("required", location == "path")),
            schema=schema,
            validator=self.validator(schema),
        )

    def _body(self, raw: Any) -> RequestBody | None:
        if raw is None:
            return None
        body = resolve(self.document, raw)
        content: Mapping[str, Any] = body.get("content", {})
        schema: Mapping[str, Any] = {}
        validator = None
        for media_type, media in content.items():
            if is_json(media_type.lower()):
                schema = resolve(self.document, media.get("schema", {}))
                validator = self.validator(schema)
                break
        return RequestBody(
            required=bool(body.get("required", False)),
            media_types=tuple(m.lower() for m in content),
            validator=validator,
            schema=schema,
            wants_object=schema.get("type") == "object",
        )

    def _security(self, requirements: Any, where: str) -> tuple[tuple[Credential, ...], ...]:
        schemes = self._components.get("securitySchemes", {})
        alternatives: list[tuple[Credential, ...]] = []
        for requirement in requirements or []:
            credentials: list[Credential] = []
            for name in requirement:
                scheme = resolve(self.document, schemes.get(name))
                if not isinstance(scheme, Mapping):
                    raise SpecError(f"{where} names the unknown security scheme {name!r}")
                credentials.append(_credential(scheme, name, where))
            alternatives.append(tuple(credentials))
        return tuple(alternatives)

    def _answer(self, status: int, raw: Any) -> Answer:
        response = resolve(self.document, raw)
        for media_type, media in response.get("content", {}).items():
            if is_json(media_type.lower()):
                return Answer(status, media_example(self.document, media))
        return Answer(status, has_body=False)

    def _success(self, responses: Mapping[str, Any], answers: Mapping[int, Answer]) -> Answer:
        documented = sorted(code for code in answers if 200 <= code < 300)
        if documented:
            return answers[documented[0]]
        for code in ("2XX", "2xx", "default"):
            if code in responses:
                return self._answer(200, responses[code])
        return Answer(204, has_body=False)


def _credential(scheme: Mapping[str, Any], name: str, where: str) -> Credential:
    kind = scheme.get("type")
    if kind == "apiKey" and scheme.get("in") in ("header", "query", "cookie"):
        return Credential(str(scheme["in"]), str(scheme["name"]))
    if kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
        return Credential("bearer", "authorization")
    raise SpecError(
        f"{where}: the fake checks apiKey (header, query, cookie) and http bearer schemes, "
        f"not {name!r} ({kind})"
    )


def _segments(route: str) -> tuple[Segment, ...]:
    if not route.startswith("/"):
        raise SpecError(f"the path {route!r} does not start with '/'")
    segments: list[Segment] = []
    for part in route[1:].split("/"):
        if "{" not in part:
            segments.append(Segment(part))
            continue
        pieces = re.split(r"\{([^{}]+)\}", part)
        pattern = "".join(
            re.escape(piece) if n % 2 == 0 else "(.+?)" for n, piece in enumerate(pieces)
        )
        names = tuple(pieces[1::2])
        segments.append(Segment(None, re.compile(pattern, re.DOTALL), names))
    return tuple(segments)


@functools.cache
def bundled_api() -> ApiSpec:
    """The bundled openapi.yaml, read once."""
    return ApiSpec(load_spec())
