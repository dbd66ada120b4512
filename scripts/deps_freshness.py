"""How far behind the index the locked runtime dependencies are: a report, never a gate.

    python scripts/deps_freshness.py [--index-url URL]

For each dependency of the core install and of every extra (pyproject.toml), the version
locked in requirements/dev.txt beside the newest release the index serves (pre-releases left
out), and whether that newest release is inside the range pyproject.toml accepts. The index is
asked through pip (`pip index versions`), so it is the one pip is configured with on this
machine, or only the one given with --index-url; no address is written anywhere. It exits 0 whatever
it finds, also when the index cannot be reached (it says so); moving the lock is scripts/lock's
job (`uv pip compile --upgrade`), and the suite decides whether a newer version is taken.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (the tests run it there too)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "dev.txt"
# pip -vv's line for a page it could not get: a 4xx means the index lacks the package; anything
# else (no connection, a timeout, a 5xx, TLS) that the index did not answer.
FETCH_FAILED = re.compile(r"^Could not fetch URL \S+: (.*?)(?: - skipping)?$", re.MULTILINE)
_PIP_SOURCES = {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"}


class Unreachable(Exception):
    """The index did not answer; the message is pip's last line about it."""


def declared() -> list[tuple[Requirement, str]]:
    """Each runtime requirement with where it comes from: `core` or the extra's name (an extra
    that only names this project's other extras, like `all`, adds nothing)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = canonicalize_name(project["name"])
    found = [(Requirement(r), "core") for r in project["dependencies"]]
    for extra, requirements in project["optional-dependencies"].items():
        found += [(Requirement(r), extra) for r in requirements]
    return [(r, where) for r, where in found if canonicalize_name(r.name) != own]


def locked(text: str) -> dict[str, list[str]]:
    """Name -> the versions the lock pins for it (more than one when a marker splits them)."""
    pins: dict[str, list[str]] = {}
    for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", text, re.MULTILINE):
        pins.setdefault(canonicalize_name(name), []).append(version)
    return pins


def newest(name: str, index_url: str | None) -> str | None:
    """The newest non-pre-release version the index serves for name; None when it has none."""
    command = [sys.executable, "-m", "pip", "-vv", "index", "versions", name]
    command += ["--retries", "0", "--timeout", "10", "--disable-pip-version-check"]
    env = dict(os.environ)
    if index_url:  # that index alone: no other index or find-links from pip's configuration
        command += ["--index-url", index_url]
        env = {k: v for k, v in env.items() if k not in _PIP_SOURCES}
        env["PIP_CONFIG_FILE"] = os.devnull
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    said = result.stdout + result.stderr
    found = re.search(r"^\S+ \(([^)]+)\)$", result.stdout, re.MULTILINE)
    if result.returncode == 0 and found:
        return found[1]
    # Nothing found: either the index has no release of it, or it did not answer.
    failures = [f for f in FETCH_FAILED.findall(said) if not re.match(r"4\d\d ", f)]
    if failures:
        cause = re.search(r"\[Errno -?\d+\] ([^'\")]+)", failures[-1])
        raise Unreachable(cause[1] if cause else failures[-1].split(":", 1)[0])
    if "No matching distribution found" in said:
        return None
    # Anything else (no pip in this Python, a bad option) is no answer about the package.
    last = said.strip().splitlines()[-1] if said.strip() else f"exit status {result.returncode}"
    raise SystemExit(f"deps-freshness: pip index versions {name} failed: {last}")


def verdict(requirement: Requirement, pins: list[str], latest: str | None) -> str:
    if latest is None:
        return "the index has no release of it"
    if not pins:
        return f"not in the lock (newest {latest})"
    if Version(latest) <= max(map(Version, pins)):
        return "up to date"
    outside = "" if requirement.specifier.contains(latest) else ", outside pyproject's range"
    return f"behind: {latest} is out{outside}"


def report(index_url: str | None) -> list[str]:
    rows = declared()
    pins = locked(LOCK.read_text())
    names = sorted({canonicalize_name(r.name) for r, _ in rows})
    # One look-up first: when the index is down, say so once instead of once per package.
    first = newest(names[0], index_url)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        rest = dict(
            zip(names[1:], pool.map(lambda n: newest(n, index_url), names[1:]), strict=True)
        )
    latest = {names[0]: first, **rest}
    table = [("dependency", "from", "declared", "locked", "newest", "")]
    for requirement, where in sorted(rows, key=lambda rw: (rw[1] != "core", rw[1], rw[0].name)):
        name = canonicalize_name(requirement.name)
        have = pins.get(name, [])
        table.append(
            (
                requirement.name,
                where,
                str(requirement.specifier) or "any",
                ", ".join(have) or "-",
                latest[name] or "-",
                verdict(requirement, have, latest[name]),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, [*widths, 0], strict=True)).rstrip()
        for row in table
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deps-freshness", description=__doc__.split("\n")[0])
    parser.add_argument("--index-url", help="the index to ask (default: pip's configured one)")
    args = parser.parse_args(argv)
    where = "the given index" if args.index_url else "the index pip is configured with"
    try:
        lines = report(args.index_url)
    except Unreachable as error:
        print(f"deps-freshness: {where} could not be reached, so nothing was compared ({error})")
        return 0
    print(f"Locked runtime dependencies (requirements/dev.txt) against {where}:\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
