"""Rehearse a release on this machine, or check a release tag against the version and changelog.

    python scripts/release_check.py rehearse [--python PYTHON] [--dist DIR]
    python scripts/release_check.py check-tag vX.Y.Z

`rehearse` (scripts/release-check) does here what .github/workflows/release.yml does on a tag,
short of publishing: build the sdist, then the wheel from it, with the locked hatchling (no
build isolation, so nothing unpinned is fetched); `twine check --strict` both; serve them as a
PEP 503 simple index on 127.0.0.1; make a fresh venv; install `avatario-wrapper[server,cli]`
there **by name** from that index, every other package from the default index at the versions
and hashes of requirements/dev.txt (the wheel's own hash pinned too, and nothing built from
source); check what was installed; run the README's main job, `avatario demo`, from it.
Everything lives in one temporary folder and the index is served from this process, so a run
leaves nothing behind, and a second run does the same as the first. With `--dist DIR` it builds
nothing and rehearses with the sdist and wheel in DIR (the workflow's test job: the files it
built once, on every supported Python).

`check-tag` (the workflow's first step; stdlib only, so it runs before anything is installed)
fails unless the tag is `v` + avatario_wrapper/_version.py's version and CHANGELOG.md has a
dated section for that version.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import html
import http.server
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NAME = "avatario-wrapper"
EXTRAS = "server,cli"
DEMO_PASSED = "every scene behaved as promised"

# Run inside the fresh venv with -I (no current folder, no PYTHONPATH): the installed copy is
# what imports, at the built version, with its typing markers and pytest plugin.
SMOKE = """
import importlib.metadata as md, pathlib, sys
import avatario_wrapper
from avatario_wrapper import _generated
venv = pathlib.Path(sys.prefix).resolve()
for module in (avatario_wrapper, _generated):
    where = pathlib.Path(module.__file__).resolve()
    assert venv in where.parents, f"{module.__name__} imported from {where}, not the venv"
    assert (where.parent / "py.typed").is_file(), f"{module.__name__} has no py.typed"
assert avatario_wrapper.__version__ == md.version("avatario-wrapper") == sys.argv[1]
import importlib.util
assert importlib.util.find_spec("avatario_client") is None, "a second top-level package"
plugins = {e.name: e.value for e in md.entry_points(group="pytest11")}
assert plugins.get("avatario") == "avatario_wrapper.testing.pytest_plugin", plugins
print(f"avatario-wrapper {sys.argv[1]} imports from the venv")
"""


def version() -> str:
    """The package version, read from avatario_wrapper/_version.py (its one home)."""
    text = (ROOT / "avatario_wrapper" / "_version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise SystemExit("avatario_wrapper/_version.py sets no __version__")
    return match[1]


def tag_problems(tag: str, package_version: str, changelog: str) -> list[str]:
    """What is wrong with releasing `tag`: empty when it names this version, which the
    changelog records with a date."""
    problems = []
    if tag != f"v{package_version}":
        problems.append(
            f"the tag {tag!r} is not v{package_version} (the version in "
            "avatario_wrapper/_version.py): tag the version, or change _version.py first"
        )
    heading = rf"^## \[{re.escape(tag.removeprefix('v'))}\] - \d{{4}}-\d{{2}}-\d{{2}}$"
    if not re.search(heading, changelog, re.MULTILINE):
        problems.append(
            f"CHANGELOG.md has no '## [{tag.removeprefix('v')}] - YYYY-MM-DD' section: move "
            "the Unreleased entries under one before tagging"
        )
    return problems


def project_of(filename: str) -> str:
    """The normalized project name (PEP 503) of a wheel or sdist file name."""
    stem = filename.removesuffix(".tar.gz")
    name = stem.split("-", 1)[0] if filename.endswith(".whl") else stem.rsplit("-", 1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def write_index(files: list[Path], root: Path) -> Path:
    """Lay `files` out under root as a PEP 503 simple index (with sha256 fragments); returns
    its `simple/` folder. Files are copied, so the index does not depend on where they were."""
    projects: dict[str, list[Path]] = {}
    (root / "files").mkdir(parents=True, exist_ok=True)
    for file in files:
        copy = root / "files" / file.name
        copy.write_bytes(file.read_bytes())
        projects.setdefault(project_of(file.name), []).append(copy)
    simple = root / "simple"
    simple.mkdir(exist_ok=True)
    page = "<!DOCTYPE html>\n<html><body>\n{}</body></html>\n"
    anchors = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(projects))
    (simple / "index.html").write_text(page.format(anchors))
    for project, copies in projects.items():
        (simple / project).mkdir(exist_ok=True)
        anchors = "".join(
            f'<a href="../../files/{html.escape(c.name)}#sha256={_sha256(c)}">'
            f"{html.escape(c.name)}</a>\n"
            for c in sorted(copies)
        )
        (simple / project / "index.html").write_text(page.format(anchors))
    return simple


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Requests are not worth a line each."""


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve the folder root on 127.0.0.1 (a free port) from a thread; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _step(title: str) -> float:
    print(f"==> {title}", file=sys.stderr, flush=True)
    return time.monotonic()


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"release-check: failed ({result.returncode}): {' '.join(map(str, args))}")
    return result.stdout


def rehearse(python: str, prebuilt: Path | None) -> int:
    """The whole rehearsal; 0 when the installed package ran the demo as promised."""
    started = time.monotonic()
    want = version()
    uv = BIN / "uv"
    # The venv's programs see neither this checkout nor this process's virtual environment.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    with tempfile.TemporaryDirectory(prefix="avatario-release-check-") as tmp:
        work = Path(tmp)
        dist = prebuilt or work / "dist"
        if prebuilt is None:
            _step("build the sdist, then the wheel from it (the locked hatchling, no isolation)")
            _run(uv, "build", "--no-build-isolation", "--python", sys.executable, "-o", dist, ROOT)
        built = sorted([*dist.glob("*.tar.gz"), *dist.glob("*.whl")])
        names = [b.name for b in built]
        expected = [f"avatario_wrapper-{want}-py3-none-any.whl", f"avatario_wrapper-{want}.tar.gz"]
        if sorted(names) != sorted(expected):
            raise SystemExit(f"release-check: {dist} holds {names}, expected {expected}")
        _step("twine check --strict")
        _run(BIN / "twine", "check", "--strict", *built)
        simple = write_index(built, work / "index")
        wheel = next(simple.parent.glob("files/*.whl"))
        # The wheel by its hash: the install cannot take another file, or build the sdist.
        own = work / "own.txt"
        own.write_text(f"{NAME}=={want} --hash=sha256:{_sha256(wheel)}\n")
        with serve(simple.parent) as base:
            _step(f"install {NAME}[{EXTRAS}] by name from a local index ({base}/simple)")
            venv = work / "venv"
            _run(uv, "venv", "--quiet", "--python", python, venv, env=env)
            lock = ROOT / "requirements" / "dev.txt"
            install = ["pip", "install", "--quiet", "--python", venv / "bin" / "python"]
            pins = ["--require-hashes", "--no-build", "-c", lock, "-c", own]
            index = ["--index", f"{base}/simple", "--refresh-package", NAME]
            _run(uv, *install, *pins, *index, f"{NAME}[{EXTRAS}]=={want}", env=env)
        _step("check the install: its requirements, where it imports from, its markers")
        _run(uv, "pip", "check", "--quiet", "--python", venv / "bin" / "python", env=env)
        print(_run(venv / "bin" / "python", "-I", "-c", SMOKE, want, cwd=work, env=env), end="")
        _step("the README's main job from that install: avatario demo")
        out = _run(venv / "bin" / "avatario", "demo", cwd=work, env=env)
        if DEMO_PASSED not in out:
            sys.stderr.write(out)
            raise SystemExit("release-check: the demo did not say every scene behaved")
        print(f"avatario demo: {DEMO_PASSED}")
    print(f"release-check: passed in {time.monotonic() - started:.1f} s (nothing left behind)")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="release_check.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("rehearse", help="build, check, install by name, run the demo")
    run.add_argument(
        "--python", default=sys.executable, help="the venv's interpreter (default: this one)"
    )
    run.add_argument("--dist", type=Path, help="rehearse with these built files; build none")
    check = commands.add_parser("check-tag", help="the tag names this version and its changelog")
    check.add_argument("tag")
    args = parser.parse_args(argv)
    if args.command == "rehearse":
        return rehearse(args.python, args.dist)
    problems = tag_problems(args.tag, version(), (ROOT / "CHANGELOG.md").read_text())
    for problem in problems:
        print(f"check-tag: {problem}", file=sys.stderr)
    if not problems:
        print(f"check-tag: {args.tag} is the package version, and CHANGELOG.md records it")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
