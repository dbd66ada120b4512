"""The generated client imports on every supported Python, whatever the spec holds.

The committed package is imported module by module on the Python running the tests (every
supported one, under scripts/test). And a spec with the constructs that bit before (a string
enum generated as `enum.StrEnum`, 3.11+ only) is generated with codegen/config.yml into a
temporary folder and imported by every supported Python this machine has: the generator runs
only on 3.11+, the code it writes must run on 3.10 too.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .spec_helpers import ROOT


def test_every_committed_generated_module_imports() -> None:
    from avatario_wrapper import _generated

    prefix = "avatario_wrapper._generated."
    names = [m.name for m in pkgutil.walk_packages(_generated.__path__, prefix)]
    assert f"{prefix}models.start_session_response" in names
    for name in names:
        importlib.import_module(name)


#: A read operation with the constructs the generator may render with 3.11-only code.
EXTRA_PATHS = {
    "/sessions/{session_id}": {
        "get": {
            "operationId": "getSession",
            "summary": "Read a session",
            "description": "A session's status.",
            "parameters": [
                {
                    "name": "session_id",
                    "in": "path",
                    "required": True,
                    "description": "The session.",
                    "schema": {"type": "string"},
                },
                {
                    "name": "view",
                    "in": "query",
                    "required": False,
                    "description": "How much to show.",
                    "schema": {"type": "string", "enum": ["brief", "full"]},
                },
            ],
            "responses": {
                "200": {
                    "description": "The session.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Session"}}
                    },
                },
                "404": {"$ref": "#/components/responses/NotFound"},
            },
        }
    }
}
SESSION_SCHEMA = {
    "type": "object",
    "description": "A session.",
    "required": ["session_id", "status"],
    "properties": {
        "session_id": {"type": "string", "description": "Its id."},
        "status": {
            "type": "string",
            "enum": ["starting", "live", "ended"],
            "description": "Where it is.",
        },
        "started_at": {"type": "string", "format": "date-time", "description": "When."},
        "ended_reason": {"type": ["string", "null"], "description": "Why it ended."},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "Labels."},
    },
}


def _other_pythons() -> list[Path]:
    """The interpreters of scripts/test's other environments, when they exist."""
    return sorted(p for p in ROOT.glob(".venv-py3.*/bin/python") if p.is_file())


@pytest.mark.skipif(
    importlib.util.find_spec("openapi_python_client") is None,
    reason="the generator is a development tool for Python 3.11+",
)
def test_code_generated_from_a_spec_with_enums_imports_on_every_python(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    spec["paths"].update(EXTRA_PATHS)
    spec["components"]["schemas"]["Session"] = SESSION_SCHEMA
    spec_path = tmp_path / "openapi.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        codegen = importlib.import_module("codegen")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    out = tmp_path / "gen" / "avatario_client"
    original = codegen.SPEC
    codegen.SPEC = spec_path
    try:
        codegen.render(out)
    finally:
        codegen.SPEC = original
    enum_module = (out / "models" / "session_status.py").read_text()
    assert "Literal[" in enum_module
    assert "StrEnum" not in enum_module

    script = (
        "import importlib, pkgutil, avatario_client\n"
        "for m in pkgutil.walk_packages(avatario_client.__path__, 'avatario_client.'):\n"
        "    importlib.import_module(m.name)\n"
        "from avatario_client.models.session import Session\n"
        "s = Session.from_dict({'session_id': 'x', 'status': 'live'})\n"
        "assert s.status == 'live'\n"
        "print('ok')\n"
    )
    pythons = [Path(sys.executable), *_other_pythons()]
    for python in pythons:
        result = subprocess.run(
            [str(python), "-c", script],
            env={"PYTHONPATH": str(out.parent), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.stdout.strip() == "ok", (python, result.stderr)
