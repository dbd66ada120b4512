"""Every ```python block in README.md and docs/ runs (they use the fake server, no network)."""

from __future__ import annotations

import os
import re

import pytest

from .spec_helpers import ROOT

BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    pytest.param(code, id=f"{path.name}:{n}")
    for path in DOCS
    for n, code in enumerate(BLOCK.findall(path.read_text()), start=1)
]


@pytest.mark.parametrize("code", BLOCKS)
def test_documented_example_runs(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVATARIO_BASE_URL", raising=False)
    saved = dict(os.environ)
    try:
        exec(compile(code, "<doc>", "exec"), {"__name__": "__doc_example__"})
    finally:  # an example may set variables (AVATARIO_BASE_URL); none leaks into other tests
        os.environ.clear()
        os.environ.update(saved)


def test_docs_link_to_files_that_exist() -> None:
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_there_are_examples() -> None:
    assert len(BLOCKS) >= 8
