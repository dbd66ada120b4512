"""Our errors as livekit.agents' errors too, for ``except`` clauses written for the old plugin.

The old plugin raised livekit.agents' `APIStatusError` / `APIConnectionError`. Code around it
catches those. At the boundary of `avatario_wrapper.compat` and `avatario_wrapper.livekit`,
`as_livekit_error` turns one of our `APIError`s into an instance of a class that inherits from
both our class and the matching livekit.agents class, so both kinds of ``except`` catch it:

    our class                     livekit.agents class it also becomes
    APITimeoutError           →   APITimeoutError
    APIConnectionError        →   APIConnectionError
    APIStatusError (and 4xx/5xx subclasses) → APIStatusError
    APIError, APIResponseValidationError    → APIError

The copy keeps every attribute, the message, ``__cause__``, ``__context__`` and the traceback;
our ``__str__`` still wins (it never shows a secret). livekit.agents' own attributes are
meaningful: `status_code`, `request_id` and `body` where a response arrived (else ``body`` is
None), `retryable` as our client decided.

Only `compat` and `livekit` import this module, never ``import avatario_wrapper``. It imports
livekit.agents only when it converts an error and only if it is installed; without it, errors
pass through unchanged.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Any, TypeVar

from . import errors

__all__ = ["as_livekit_error", "livekit_agents_installed"]

E = TypeVar("E", bound=BaseException)

# Our class → the name of the livekit.agents class it maps to, most specific first.
_MATCHES: tuple[tuple[type[errors.APIError], str], ...] = (
    (errors.APITimeoutError, "APITimeoutError"),
    (errors.APIConnectionError, "APIConnectionError"),
    (errors.APIStatusError, "APIStatusError"),
    (errors.APIError, "APIError"),
)


@functools.cache
def livekit_agents_installed() -> bool:
    try:
        return importlib.util.find_spec("livekit.agents") is not None
    except (ImportError, ValueError):  # a broken or partial `livekit` namespace
        return False


def _livekit_agents() -> Any:
    return importlib.import_module("livekit.agents")


_DUAL: dict[type[errors.APIError], type[errors.APIError]] = {}


def _dual_class(ours: type[errors.APIError]) -> type[errors.APIError]:
    """A subclass of `ours` and of the matching livekit.agents error, made once per class."""
    made = _DUAL.get(ours)
    if made is not None:
        return made
    agents = _livekit_agents()
    name = next(theirs for base, theirs in _MATCHES if issubclass(ours, base))
    theirs = getattr(agents, name)
    namespace = {
        "__module__": __name__,
        "__qualname__": ours.__qualname__,
        "__doc__": f"{ours.__name__} that is also livekit.agents.{name}.",
        # Our __str__ comes first in the MRO anyway; repr stays ours (no body, no secrets).
        "__repr__": _repr,
    }
    dual: type[errors.APIError] = type(ours.__name__, (ours, theirs), namespace)
    return _DUAL.setdefault(ours, dual)


def _repr(self: errors.APIError) -> str:
    return f"{type(self).__name__}({str(self)!r})"


def as_livekit_error(error: E) -> E:
    """`error`, catchable as the matching livekit.agents error too, when livekit-agents is
    installed; anything else (a config error, a bug, livekit-agents absent) is returned as is.
    """
    if not isinstance(error, errors.APIError) or not livekit_agents_installed():
        return error
    if type(error) in _DUAL.values():
        return error  # already converted
    dual = _dual_class(type(error))
    converted: Any = dual.__new__(dual)
    converted.args = error.args
    converted.__dict__.update(error.__dict__)
    if not hasattr(converted, "body"):
        converted.body = None  # livekit.agents' APIError promises `body`; no response, no body
    converted.__cause__ = error.__cause__
    converted.__context__ = error.__context__
    converted.__suppress_context__ = error.__suppress_context__
    converted.__traceback__ = error.__traceback__
    notes = getattr(error, "__notes__", None)
    if notes is not None:
        converted.__notes__ = list(notes)
    result: E = converted
    return result
