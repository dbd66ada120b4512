"""Generate generated/avatario_client from openapi.yaml, or check that it is up to date.

    python scripts/codegen.py generate   # rewrite generated/ in place
    python scripts/codegen.py check      # regenerate into a temporary folder and diff

Both run the pinned openapi-python-client with codegen/config.yml, then two post-processing
steps, then the pinned ruff with fixed command-line settings (never a config file found on disk),
so the output is the same on every machine. Paths are relative to this script's checkout, so a
copy of the tree works too.

Post-processing (covered by the drift check, since `check` renders the same way):

- Python 3.10: the generator imports `typing.Self` (3.11+) at run time. Modules that do get
  `from __future__ import annotations` and import `Self` only for type checkers, from
  `typing_extensions` (bundled with every type checker), so nothing new is needed at run time.
- `py.typed` is written into the package, so type checkers read its annotations (PEP 561).
"""

from __future__ import annotations

import ast
import difflib
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "openapi.yaml"
CONFIG = ROOT / "codegen" / "config.yml"
TARGET = ROOT / "generated" / "avatario_client"
BIN = Path(sys.executable).parent
RUFF_FIXED = ["--isolated", "--line-length", "120", "--target-version", "py310"]


def _run(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(a) for a in args], check=True, cwd=cwd, stdout=subprocess.DEVNULL)


def render(dest: Path) -> None:
    """Write a freshly generated and formatted avatario_client package at dest."""
    _run(
        BIN / "openapi-python-client",
        "generate",
        "--path",
        SPEC,
        "--config",
        CONFIG,
        "--meta",
        "none",
        "--output-path",
        dest,
        "--overwrite",
        "--fail-on-warning",
    )
    for module in sorted(dest.rglob("*.py")):
        module.write_text(backport_self(module.read_text()))
    (dest / "py.typed").write_text("")
    ruff = BIN / "ruff"
    _run(ruff, "check", *RUFF_FIXED, "--select", "I,F401", "--fix", "--quiet", dest)
    _run(ruff, "format", *RUFF_FIXED, "--quiet", dest)


def backport_self(source: str) -> str:
    """Rewrite a module importing `typing.Self` so that it imports on Python 3.10.

    `Self` then appears only in annotations, which `from __future__ import annotations` leaves
    unevaluated, so it is imported under `TYPE_CHECKING` alone, after the module's imports.
    Modules that do not import it are returned unchanged.
    """
    tree = ast.parse(source)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    found = next(
        (
            n
            for n in imports
            if isinstance(n, ast.ImportFrom)
            and n.module == "typing"
            and any(a.name == "Self" and a.asname is None for a in n.names)
        ),
        None,
    )
    if found is None:
        return source
    lines = source.splitlines(keepends=True)
    rest = [a.name for a in found.names if a.name != "Self"]
    last = imports[-1].end_lineno or 0
    lines[last:last] = ["\nif TYPE_CHECKING:\n", "    from typing_extensions import Self\n"]
    kept = f"from typing import {', '.join(['TYPE_CHECKING', *rest])}\n"
    lines[found.lineno - 1 : found.end_lineno] = [kept]
    has_future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imports)
    if not has_future:
        docstring = ast.get_docstring(tree, clean=False) is not None
        at = (tree.body[0].end_lineno or 0) if docstring else 0
        lines[at:at] = ["from __future__ import annotations\n"]
    return "".join(lines)


def _files(folder: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(folder)): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def diff(expected: Path, actual: Path) -> list[str]:
    """A unified diff turning `actual` (committed) into `expected` (fresh); empty when equal."""
    want, have = _files(expected), _files(actual)
    lines: list[str] = []
    for name in sorted(want.keys() | have.keys()):
        a, b = have.get(name), want.get(name)
        if a is not None and b is not None and filecmp.cmp(a, b, shallow=False):
            continue
        old = a.read_text().splitlines(keepends=True) if a else []
        new = b.read_text().splitlines(keepends=True) if b else []
        lines += difflib.unified_diff(old, new, f"committed/{name}", f"regenerated/{name}")
    return lines


def generate() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "avatario_client"
        render(fresh)
        shutil.rmtree(TARGET, ignore_errors=True)
        shutil.copytree(fresh, TARGET, ignore=shutil.ignore_patterns("__pycache__"))
    print(f"regenerated {TARGET.relative_to(ROOT)} from {SPEC.name}")
    return 0


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "avatario_client"
        render(fresh)
        lines = diff(fresh, TARGET)
    if not lines:
        print(f"{TARGET.relative_to(ROOT)} is up to date with {SPEC.name}")
        return 0
    sys.stdout.writelines(line if line.endswith("\n") else line + "\n" for line in lines)
    print(
        f"\n{TARGET.relative_to(ROOT)} is stale: {SPEC.name} or codegen/ changed since it was "
        "generated. Run scripts/generate and commit the result.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    commands = {"generate": generate, "check": check}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} generate|check")
    sys.exit(commands[sys.argv[1]]())
