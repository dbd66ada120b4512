"""Release metadata: one version, a changelog that names it, the license, the tested Pythons,
and what a package index shows.

The version lives in avatario_wrapper/_version.py; pyproject.toml reads it (hatch's dynamic
version), CHANGELOG.md's newest release must carry it, and the Pythons pyproject.toml declares
are exactly the ones scripts/test runs the suite on. The index's project page is README.md with
its relative links made absolute at build time (hatch-fancy-pypi-readme): every link of the
built wheel's long description is absolute and names a file of this repository.
"""

from __future__ import annotations

import email
import hashlib
import html.parser
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import urlopen

import pytest
import trove_classifiers
import yaml
from readme_renderer.markdown import render

from .spec_helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _pyproject() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def _version_file() -> str:
    text = (ROOT / "avatario_wrapper" / "_version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match, "avatario_wrapper/_version.py sets __version__"
    return match[1]


def _tested_pythons() -> list[str]:
    text = (ROOT / "scripts" / "test").read_text()
    match = re.search(r"^supported=\(([^)]*)\)$", text, re.MULTILINE)
    assert match, "scripts/test lists the supported Pythons"
    return match[1].split()


def test_the_version_has_one_source() -> None:
    project = _pyproject()["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert _pyproject()["tool"]["hatch"]["version"]["path"] == "avatario_wrapper/_version.py"
    import avatario_wrapper._version

    assert avatario_wrapper._version.__version__ == _version_file()


def test_the_newest_changelog_release_is_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.MULTILINE)
    assert headings[0] == ("Unreleased", "")
    newest, date = headings[1]
    assert newest == _version_file()
    assert date, "a release heading carries its date"
    # The Unreleased section keeps Keep a Changelog's headings for the next entries.
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    for kind in ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"):
        assert f"### {kind}" in unreleased


def test_the_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert _pyproject()["project"]["license"] == "Apache-2.0"


def test_declared_pythons_are_the_tested_ones() -> None:
    tested = _tested_pythons()
    project = _pyproject()["project"]
    declared = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert declared == tested
    assert project["requires-python"] == f">={tested[0]}"
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in tested
    assert _pyproject()["tool"]["ruff"]["target-version"] == "py" + tested[0].replace(".", "")
    assert _pyproject()["tool"]["mypy"]["python_version"] == tested[0]


@pytest.mark.slow
def test_the_wheel_ships_the_license_and_both_typed_markers(built_wheel: Path) -> None:
    wheel = built_wheel
    assert wheel.name.startswith(f"avatario_wrapper-{_version_file()}-py3-none-any")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"avatario_wrapper/py.typed", "avatario_wrapper/_generated/py.typed"} <= names
        [license_file] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(license_file) == (ROOT / "LICENSE").read_bytes()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    assert f"Version: {_version_file()}\n" in text
    assert "License-Expression: Apache-2.0" in text
    for version in _tested_pythons():
        assert f"Classifier: Programming Language :: Python :: {version}\n" in text


def _home() -> str:
    home: str = _pyproject()["project"]["urls"]["Homepage"]
    return home


def _raw_home() -> str:
    return _home().replace("https://github.com/", "https://raw.githubusercontent.com/")


class _Targets(html.parser.HTMLParser):
    """Every link and image address of a rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"a": "href", "img": "src"}.get(tag)
        self.found += [value for name, value in attrs if name == wanted and value]


def _targets(markdown: str) -> list[str]:
    """The link and image addresses of markdown as the index renders it (readme-renderer),
    less the anchors the renderer gives each heading."""
    page = render(markdown)
    assert page is not None, "readme-renderer renders markdown (its md extra is installed)"
    parser = _Targets()
    parser.feed(page)
    return [t for t in parser.found if not t.startswith("#user-content-")]


def _relative(target: str) -> bool:
    return not urlsplit(target).scheme


def test_the_index_shows_urls_keywords_and_classifiers() -> None:
    project = _pyproject()["project"]
    urls = project["urls"]
    # The well-known labels an index shows with their icons.
    assert set(urls) == {"Homepage", "Source", "Documentation", "Changelog", "Issues"}
    assert all(url == _home() or url.startswith(_home() + "/") for url in urls.values())
    assert _home().startswith("https://github.com/")
    assert len(project["keywords"]) >= 5
    classifiers = project["classifiers"]
    assert not set(classifiers) - trove_classifiers.classifiers, "only known classifiers"
    assert len([c for c in classifiers if c.startswith("Development Status :: ")]) == 1
    for wanted in ("Intended Audience :: Developers", "Framework :: AsyncIO", "Typing :: Typed"):
        assert wanted in classifiers
    assert any(c.startswith("Topic :: ") for c in classifiers)


def test_the_readme_rules_point_at_the_release_tag_of_the_home() -> None:
    project = _pyproject()["project"]
    assert "readme" not in project
    assert "readme" in project["dynamic"]
    hook = _pyproject()["tool"]["hatch"]["metadata"]["hooks"]["fancy-pypi-readme"]
    assert hook["content-type"] == "text/markdown"
    assert hook["fragments"] == [{"path": "README.md"}]
    for rule in hook["substitutions"]:
        assert rule["replacement"].startswith("\\1")
        assert rule["replacement"][2:].startswith(
            (f"{_home()}/blob/v$HFPR_VERSION/", f"{_raw_home()}/v$HFPR_VERSION/")
        )


def test_the_readme_rules_make_every_kind_of_relative_link_absolute(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "README.md").write_text(
        "[inline](docs/a.md) [here](#a-heading) [web](https://example.com/x) [m](mailto:a@b.c)\n"
        '![picture](docs/p.png) <img src="docs/p.svg" alt="p"> <a href="docs/b.md">b</a>\n'
        "[see the design][design]\n\n[design]: docs/design.md\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "hatch_fancy_pypi_readme", "pyproject.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    targets = _targets(result.stdout.replace("v42.0", "vX"))  # the CLI's stand-in version
    blob, raw = f"{_home()}/blob/vX/", f"{_raw_home()}/vX/"
    assert targets == [
        blob + "docs/a.md",
        blob + "README.md#a-heading",
        "https://example.com/x",
        "mailto:a@b.c",
        raw + "docs/p.png",
        raw + "docs/p.svg",
        blob + "docs/b.md",
        blob + "docs/design.md",
    ]


def test_the_readmes_relative_links_name_files_of_the_repository() -> None:
    relative = [t for t in _targets((ROOT / "README.md").read_text()) if _relative(t)]
    assert len(relative) >= 10
    for target in relative:
        path = target.split("#", 1)[0]
        assert not path or (ROOT / path).exists(), f"README.md links to missing {target}"


def _long_description(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(metadata))


@pytest.mark.slow
def test_the_index_page_has_only_absolute_links_to_files_that_exist(built_wheel: Path) -> None:
    metadata = _long_description(built_wheel)
    assert metadata["Description-Content-Type"] == "text/markdown"
    body = metadata.get_payload()
    assert isinstance(body, str)
    targets = _targets(body)
    assert all(not _relative(t) for t in targets), [t for t in targets if _relative(t)]
    tag = f"v{_version_file()}/"
    ours = [
        t.split(prefix, 1)[1]
        for t in targets
        for prefix in (f"{_home()}/blob/{tag}", f"{_raw_home()}/{tag}")
        if t.startswith(prefix)
    ]
    readme = [t for t in _targets((ROOT / "README.md").read_text()) if _relative(t)]
    assert len(ours) == len(readme), "every relative link of README.md, and no other"
    for target in ours:
        path = target.split("#", 1)[0]
        assert (ROOT / path).exists(), f"the index page links to missing {target}"


@pytest.mark.slow
def test_twine_check_strict_passes_on_the_sdist_and_the_wheel(
    built_sdist: Path, built_wheel: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(built_sdist), str(built_wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def _script(name: str) -> ModuleType:
    """A module of scripts/, imported from its file."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_tag(tag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release_check.py"), "check-tag", tag],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_release_tag_must_be_the_version_with_a_changelog_section() -> None:
    good = _check_tag(f"v{_version_file()}")
    assert good.returncode == 0, good.stderr
    assert f"v{_version_file()} is the package version" in good.stdout
    bad = _check_tag("v99.0.0")
    assert bad.returncode == 1
    assert f"'v99.0.0' is not v{_version_file()}" in bad.stderr
    assert "CHANGELOG.md has no '## [99.0.0] - YYYY-MM-DD' section" in bad.stderr


def test_a_changelog_section_without_a_date_is_no_release() -> None:
    problems = _script("release_check").tag_problems
    assert problems("v1.2.0", "1.2.0", "## [1.2.0] - 2026-12-01\n") == []
    [undated] = problems("v1.2.0", "1.2.0", "## [Unreleased]\n\n## [1.2.0]\n")
    assert "no '## [1.2.0] - YYYY-MM-DD' section" in undated
    assert len(problems("1.2.0", "1.2.0", "## [1.2.0] - 2026-12-01\n")) == 1  # no "v"


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v for k, v in attrs if tag == "a" and k == "href" and v]


def _hrefs(url: str) -> list[str]:
    with urlopen(url, timeout=10) as page:
        parser = _Anchors()
        parser.feed(page.read().decode())
    return [urljoin(url, href) for href in parser.hrefs]


def test_the_local_index_serves_a_pep_503_layout_with_hashes(tmp_path: Path) -> None:
    release_check = _script("release_check")
    files = [tmp_path / "My_Pkg-1.0-py3-none-any.whl", tmp_path / "my.pkg-1.0.tar.gz"]
    for n, file in enumerate(files):
        file.write_bytes(b"distribution %d" % n)
    simple = release_check.write_index(files, tmp_path / "index")
    with release_check.serve(simple.parent) as base:
        assert urlsplit(base).hostname == "127.0.0.1"
        assert _hrefs(f"{base}/simple/") == [f"{base}/simple/my-pkg/"]
        links = _hrefs(f"{base}/simple/my-pkg/")
        assert len(links) == 2
        for link in links:
            address, digest = link.split("#sha256=")
            with urlopen(address, timeout=10) as got:
                body = got.read()
            assert hashlib.sha256(body).hexdigest() == digest
            assert body in {f.read_bytes() for f in files}


def _freshness(index_url: str) -> subprocess.CompletedProcess[str]:
    # Only the given index: none of this machine's pip configuration reaches the test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "deps_freshness.py"), "--index-url", index_url],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )


@pytest.mark.slow  # scripts/deps-freshness asks .venv's pip
def test_the_freshness_report_compares_the_lock_with_the_index(tmp_path: Path) -> None:
    locked = _script("deps_freshness").locked((ROOT / "requirements" / "dev.txt").read_text())
    [attrs] = locked["attrs"]
    names = [
        "httpx-0.27.0-py3-none-any.whl",
        "httpx-99.0.0-py3-none-any.whl",
        "httpx-100.0.0rc1-py3-none-any.whl",  # a pre-release is not "newest"
        f"attrs-{attrs}-py3-none-any.whl",
        "uvicorn-0.30.0-py3-none-any.whl",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    release_check = _script("release_check")
    simple = release_check.write_index([tmp_path / n for n in names], tmp_path / "index")
    with release_check.serve(simple.parent) as base:
        result = _freshness(f"{base}/simple")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[3:]}
    assert rows["httpx"].endswith("99.0.0  behind: 99.0.0 is out, outside pyproject's range")
    assert rows["attrs"].endswith(f"{attrs}  up to date")
    assert rows["uvicorn"].endswith("0.30.0  up to date")  # the lock is newer
    assert rows["backoff"].endswith("the index has no release of it")
    # Every runtime dependency and extra has its row; `all` only repeats the others.
    assert {"click", "rfc3986-validator", "livekit-agents", "opentelemetry-api"} <= set(rows)
    assert " all " not in result.stdout


@pytest.mark.slow  # scripts/deps-freshness asks .venv's pip
def test_the_freshness_report_says_when_the_index_is_unreachable() -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = _freshness(f"http://127.0.0.1:{port}/simple")
    assert result.returncode == 0
    assert "could not be reached, so nothing was compared (Connection refused)" in result.stdout


WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def _workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_the_release_runs_on_version_tags_and_only_publishing_may_mint_a_token() -> None:
    workflow = _workflow()
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads the key `on` as True
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    assert set(jobs) == {"build", "test", "publish"}
    for name in ("build", "test"):
        assert jobs[name]["permissions"] == {"contents": "read"}
    publish = jobs["publish"]
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["needs"] == ["build", "test"]
    assert publish["environment"]["name"] == "pypi"
    assert publish["if"] == f"github.repository == '{urlsplit(_home()).path.strip('/')}'"
    assert publish["steps"][-1]["uses"].startswith("pypa/gh-action-pypi-publish@")
    assert "secrets." not in WORKFLOW.read_text(), "trusted publishing needs no stored token"


def test_every_action_is_pinned_to_a_commit_with_its_version_named() -> None:
    uses = re.findall(r"^\s*- uses: (\S+)(.*)$", WORKFLOW.read_text(), re.MULTILINE)
    assert len(uses) >= 6
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action
        assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", comment), f"{action}: {comment!r}"


def test_the_release_builds_once_and_tests_those_files_on_every_supported_python() -> None:
    jobs = _workflow()["jobs"]
    build = _runs(jobs["build"])
    assert 'scripts/release_check.py check-tag "$GITHUB_REF_NAME"' in build
    assert "--require-hashes -r requirements/build.txt" in build
    assert "uv build --no-build-isolation" in build
    assert "twine check --strict" in build
    test = jobs["test"]
    assert test["needs"] == "build"
    assert test["strategy"]["matrix"]["python"] == _tested_pythons()
    assert "uv build" not in _runs(test)
    assert "hatchling" not in _runs(test)
    assert "--no-deps dist/*.whl" in _runs(test)
    [suite] = [s for s in test["steps"] if "pytest" in s.get("run", "")]
    assert suite["env"] == {"AVATARIO_TEST_ARTIFACT": "1"}
    assert suite["run"].startswith(".venv/bin/pytest ")
    assert "--import-mode=append" in suite["run"]
    assert "scripts/release_check.py rehearse --dist dist" in _runs(test)


def test_the_build_tools_are_locked_at_the_dev_locks_versions() -> None:
    locked = _script("deps_freshness").locked
    build = locked((ROOT / "requirements" / "build.txt").read_text())
    dev = locked((ROOT / "requirements" / "dev.txt").read_text())
    assert {"hatchling", "hatch-fancy-pypi-readme", "twine", "readme-renderer"} <= set(build)
    assert all(dev[name] == versions for name, versions in build.items())
