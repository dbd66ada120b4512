"""The public surface is locked, and a plain import stays light."""

from __future__ import annotations

import subprocess
import sys

import avatario_wrapper
from avatario_wrapper import errors

EXPECTED = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncAvatarioClient",
    "AuthenticationError",
    "AvatarioClient",
    "AvatarioConfigError",
    "AvatarioError",
    "AvatarioException",
    "BadRequestError",
    "ClientClosedError",
    "Clock",
    "ConflictError",
    "InternalServerError",
    "MissingAgentIdentityError",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "StartSessionResult",
    "UnprocessableEntityError",
    "VideoOptions",
    "WrongEventLoopError",
    "__version__",
]


def test_all_is_sorted_and_locked() -> None:
    assert avatario_wrapper.__all__ == sorted(avatario_wrapper.__all__)
    assert avatario_wrapper.__all__ == EXPECTED
    for name in EXPECTED:
        assert hasattr(avatario_wrapper, name), name


def test_errors_module_exports_the_same_classes() -> None:
    for name in errors.__all__:
        if name in avatario_wrapper.__all__:
            assert getattr(errors, name) is getattr(avatario_wrapper, name)
    assert errors.__all__ == sorted(errors.__all__)
    assert avatario_wrapper.AvatarioException is avatario_wrapper.AvatarioError


def test_error_tree_is_as_designed() -> None:
    e = errors
    assert issubclass(e.AvatarioConfigError, (e.AvatarioError, ValueError))
    assert issubclass(e.MissingAgentIdentityError, e.AvatarioConfigError)
    assert issubclass(e.APITimeoutError, e.APIConnectionError)
    assert issubclass(e.APIConnectionError, e.APIError)
    for cls in (
        e.BadRequestError,
        e.AuthenticationError,
        e.PermissionDeniedError,
        e.NotFoundError,
        e.ConflictError,
        e.UnprocessableEntityError,
        e.RateLimitError,
        e.InternalServerError,
    ):
        assert issubclass(cls, e.APIStatusError)
    assert issubclass(e.APIResponseValidationError, e.APIError)
    assert not issubclass(e.APIResponseValidationError, e.APIStatusError)


def test_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    # pyproject reads the version from _version.py (hatch's dynamic version): one source.
    assert avatario_wrapper.__version__ == version("avatario-wrapper")


HEAVY = ("starlette", "uvicorn", "rich", "click", "aiohttp", "livekit", "jsonschema", "yaml")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_a_plain_import_pulls_in_no_server_cli_or_plugin_code() -> None:
    # httpx itself imports click and rich when they are installed (for its own CLI), so
    # compare with a bare `import httpx`: what is left is what this package adds.
    added = _loaded_after("import avatario_wrapper, avatario_wrapper.testing") - _loaded_after(
        "import httpx"
    )
    assert added == set()


def test_py_typed_is_shipped() -> None:
    from .spec_helpers import ROOT

    assert (ROOT / "avatario_wrapper" / "py.typed").exists()
