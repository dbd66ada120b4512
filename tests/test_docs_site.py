"""The docs site builds with `mkdocs build --strict`, offline: every page, the API reference.

Runs scripts/docs (MkDocs, Material, mkdocstrings; mkdocs.yml) into a temporary folder.
"""

from __future__ import annotations

import html
import inspect
import re
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


def _public_constructors() -> list[tuple[str, str, Any]]:
    """(reference page, dotted name on it, class) for every public class users construct."""
    import avatario_wrapper
    from avatario_wrapper import compat, errors, livekit

    found: list[tuple[str, str, Any]] = [
        ("avatario_wrapper", f"avatario_wrapper.{name}", getattr(avatario_wrapper, name))
        for name in (
            "AvatarioClient",
            "AsyncAvatarioClient",
            "RetryPolicy",
            "VideoOptions",
            "StartSessionResult",
        )
    ]
    found += [
        ("errors", f"avatario_wrapper.errors.{name}", getattr(errors, name))
        for name in ("APIError", "APIStatusError", "RateLimitError", "AvatarioConfigError")
    ]
    found.append(("compat", "avatario_wrapper.compat.AvatarioAPI", compat.AvatarioAPI))
    found.append(("livekit", "avatario_wrapper.livekit.AvatarSession", livekit.AvatarSession))
    found.append(
        (
            "livekit",
            "avatario_wrapper.livekit.AvatarSession.VideoInfo",
            livekit.AvatarSession.VideoInfo,
        )
    )
    return found


def _signature_text(site: Path, page: str, dotted: str) -> str:
    text = (site / "reference" / page / "index.html").read_text()
    start = text.index(f'id="{dotted}"')
    block = text[start : text.index("</pre></div>", start)]
    assert "doc-signature" in block, f"{dotted}: no signature shown"
    return html.unescape(re.sub(r"<[^>]+>", "", block))


@pytest.mark.parametrize(
    ("page", "dotted", "cls"), _public_constructors(), ids=lambda v: getattr(v, "__name__", "")
)
def test_the_reference_shows_every_constructor_parameter_and_its_default(
    site: Path, page: str, dotted: str, cls: Any
) -> None:
    shown = _signature_text(site, page, dotted)
    for name, parameter in inspect.signature(cls).parameters.items():
        assert re.search(rf"\b{name}\b", shown), (dotted, name, shown)
        default = parameter.default
        if default is not inspect.Parameter.empty and isinstance(
            default, (int, float, bool, type(None))
        ):
            assert re.search(rf"\b{name}\b[^,]*=\s*{re.escape(repr(default))}", shown), (
                dotted,
                name,
                default,
                shown,
            )


def test_the_reference_shows_members_not_private_bases(site: Path) -> None:
    text = (site / "reference" / "avatario_wrapper" / "index.html").read_text()
    for member in ("NOT_SENT", "REFUSED", "UNKNOWN", "STARTED"):
        assert f'id="avatario_wrapper.Outcome.{member}"' in text, member
    for client in ("AvatarioClient", "AsyncAvatarioClient"):
        assert f'id="avatario_wrapper.{client}.with_options"' in text, client
    assert "_ClientBase" not in text
    assert 'href="../../retries/' in text  # "see Retries" is a working link
