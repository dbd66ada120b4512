"""The package's shape: imports point one way, with no cycle anywhere in avatario_wrapper."""

from __future__ import annotations

import ast
from pathlib import Path

import avatario_wrapper

PACKAGE = Path(avatario_wrapper.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every avatario_wrapper module `path` imports, at any depth of its code."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.startswith("avatario_wrapper"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("avatario_wrapper"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_inside_the_package() -> None:
    graph = _graph()
    assert len(graph) > 15  # the walk found the modules
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_lower_layers_never_import_the_clients_or_the_command_line() -> None:
    graph = _graph()
    top = {"avatario_wrapper._clients", "avatario_wrapper.compat"} | {
        name for name in graph if name.startswith("avatario_wrapper.cli")
    }
    for module in (
        "avatario_wrapper.errors",
        "avatario_wrapper._inputs",
        "avatario_wrapper._settings",
        "avatario_wrapper._retry",
        "avatario_wrapper._reply",
        "avatario_wrapper._request",
        "avatario_wrapper._flow",
        "avatario_wrapper._transports.base",
        "avatario_wrapper._transports.httpx",
        "avatario_wrapper._transports.aiohttp",
    ):
        assert not graph[module] & top, module


def test_the_call_flow_imports_no_transport_and_no_network_library() -> None:
    # The sans-I/O core: the transports import the flow, never the other way round.
    flow = PACKAGE / "_flow.py"
    assert not {m for m in _graph()["avatario_wrapper._flow"] if "_transports" in m}
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(flow.read_text(encoding="utf-8")))
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(flow.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and not node.level
    }
    assert not imported & {"httpx", "httpcore", "aiohttp", "socket", "ssl", "asyncio", "time"}
