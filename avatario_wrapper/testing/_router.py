"""Finds the operation a request is for, from the spec's path templates.

A request path is split on ``/`` while still percent-encoded, then each segment is decoded:
a path parameter matches one whole segment of any characters once decoded (``%2F``, ``%0A``
and non-ASCII included), and never an empty one. Concrete paths win over templated ones
(OpenAPI's rule); each path is served at the root and under every server URL's path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

import attrs

from ._spec import Segment, SpecOperation


@attrs.frozen
class Match:
    """Where a request lands: an operation, a known path with another method, or nowhere."""

    operation: SpecOperation | None = None
    route: str | None = None  # the path template, when the path is known
    path_params: Mapping[str, str] = attrs.field(factory=dict)
    allowed: tuple[str, ...] = ()  # the path's methods, when the method is not one of them


def request_segments(scope: Mapping[str, Any]) -> list[str]:
    """The request path's segments, percent-decoded one by one."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        path = raw.decode("latin-1").partition("?")[0]  # some clients' raw_path has the query
        return [unquote(part, errors="replace") for part in path.split("/")[1:]]
    return str(scope.get("path", "/")).split("/")[1:]  # already decoded: the best we have


class Router:
    """Matches (method, path segments) to the operations of a spec."""

    def __init__(self, operations: Iterable[SpecOperation], prefixes: Iterable[str]) -> None:
        routes: dict[str, dict[str, SpecOperation]] = {}
        shapes: dict[str, tuple[Segment, ...]] = {}
        for op in operations:
            routes.setdefault(op.route, {})[op.method] = op
            shapes[op.route] = op.segments
        # Most literal segments first: a concrete path beats a template of the same length.
        order = sorted(routes, key=lambda r: (-sum(s.literal is not None for s in shapes[r]), r))
        self._routes = [(route, shapes[route], routes[route]) for route in order]
        self._prefixes = [
            [unquote(p) for p in prefix.split("/")[1:]] for prefix in prefixes if prefix
        ]

    def match(self, method: str, segments: list[str]) -> Match:
        candidates = [segments]
        for prefix in self._prefixes:
            if segments[: len(prefix)] == prefix:
                candidates.append(segments[len(prefix) :])
        for candidate in candidates:
            for route, shape, methods in self._routes:
                params = _match(shape, candidate)
                if params is None:
                    continue
                operation = methods.get(method)
                if operation is None:
                    return Match(route=route, allowed=tuple(sorted(methods)))
                return Match(operation, route, params)
        return Match()


def _match(shape: tuple[Segment, ...], segments: list[str]) -> dict[str, str] | None:
    if len(shape) != len(segments):
        return None
    params: dict[str, str] = {}
    for segment, text in zip(shape, segments, strict=True):
        if segment.literal is not None:
            if text != segment.literal:
                return None
            continue
        assert segment.pattern is not None
        found = segment.pattern.fullmatch(text)
        if found is None:
            return None
        params.update(zip(segment.names, found.groups(), strict=True))
    return params
