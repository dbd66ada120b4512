"""The `livekit` extra: livekit-agents and livekit-api in the range the old plugin accepts.

livekit-plugins-avatario 1.8.9 requires livekit-agents>=1.8.9; the extra takes that and any
newer 1.x, and the dev lock installs it on every tested Python.
"""

from __future__ import annotations

import sys
from importlib.metadata import version

from packaging.requirements import Requirement
from packaging.version import Version

from .spec_helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _optional(name: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements: list[str] = project["optional-dependencies"][name]
    return requirements


def _extra(name: str) -> dict[str, Requirement]:
    return {r.name: r for r in map(Requirement, _optional(name))}


def test_the_extra_takes_what_the_plugin_takes_within_1_x() -> None:
    livekit = _extra("livekit")
    assert sorted(livekit) == ["livekit-agents", "livekit-api"]
    agents = livekit["livekit-agents"].specifier
    assert not agents.contains("1.8.8")
    assert agents.contains("1.8.9")  # the plugin's own floor
    assert agents.contains("1.99")
    assert not agents.contains("2.0")
    api = livekit["livekit-api"].specifier
    assert api.contains("1.2.0")  # livekit-agents 1.8.9 needs livekit-api>=1.2.0,<2
    assert not api.contains("2.0")
    assert _optional("all") == ["avatario-wrapper[server,cli,aiohttp,livekit,otel,contract,redis]"]


def test_livekit_agents_and_api_import_at_versions_the_extra_allows() -> None:
    import livekit.agents
    import livekit.api

    assert isinstance(livekit.api.AccessToken, type)
    assert hasattr(livekit.agents, "AgentSession")
    for name, requirement in _extra("livekit").items():
        assert Version(version(name)) in requirement.specifier, name
