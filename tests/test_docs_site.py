"""The docs site builds with `mkdocs build --strict`, offline: every page, the API reference.

Runs scripts/docs (MkDocs, Material, mkdocstrings; mkdocs.yml) into a temporary folder.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .spec_helpers import ROOT

pytestmark = pytest.mark.slow

# Reference page -> (module, names documented on it with their own anchors).
REFERENCE = {
    "avatario_wrapper": ["AvatarioClient", "AsyncAvatarioClient", "RetryPolicy", "VideoOptions"],
    "errors": ["AvatarioError", "APIStatusError", "RateLimitError", "APITimeoutError"],
    "compat": ["AvatarioAPI"],
    "testing": ["run_fake_server"],
    "livekit": ["AvatarSession", "mint_avatar_token"],
}


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    assert isinstance(nav, dict)
    return [page for value in nav.values() for page in _nav_pages(value)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [str(ROOT / "scripts" / "docs"), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr
    return out


def test_every_docs_page_is_in_the_nav_and_built(site: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav) == pages
    for page in pages:
        built = site / ("index.html" if page == "index.md" else page[: -len(".md")] + "/index.html")
        assert built.is_file(), page


def test_the_api_reference_comes_from_the_docstrings(site: Path) -> None:
    for page, names in REFERENCE.items():
        html = (site / "reference" / page / "index.html").read_text()
        module = "avatario_wrapper" if page == "avatario_wrapper" else f"avatario_wrapper.{page}"
        for name in names:
            assert f'id="{module}.{name}"' in html, (page, name)


def test_the_changelog_page_is_the_changelog(site: Path) -> None:
    html = (site / "changelog" / "index.html").read_text()
    assert "Unreleased" in html
    assert "Keep a Changelog" in html


def test_the_site_loads_nothing_from_font_services(site: Path) -> None:
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis.com" not in text, page
        assert "fonts.gstatic.com" not in text, page
