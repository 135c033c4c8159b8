"""The shape of the tree: no import circle, config modules import no runtime code, no module over
400 lines, and the installed top-level packages are exactly ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("logship", "protocol", "shipper", "receiver")
MAX_LINES = 400
# Modules a config module may import: settings, parsing and names, nothing that runs.
CONFIG_MAY_IMPORT = (
    "logship.config",
    "shipper.config_values",
    "receiver.replay_config",
    "receiver.space_config",
    "receiver.retention_config",
    "logship.duration",
    "protocol.names",
    "protocol.compression",
    "protocol.limits",
    # Error classes only: a config check uses the wire's stream-name rule and catches its error.
    "protocol.errors",
    # The pure history document (forks and epochs) a shipper's --history file holds.
    "protocol.history",
    # The shipper's frozen settings dataclasses, which config builds and the runtime reads.
    "shipper.settings",
)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``path`` imports anywhere, TYPE_CHECKING blocks and function bodies included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(n for n in names if n in modules)
    found.discard(module_name(path))
    return found


def graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """Return one import circle as a list of modules, or None."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if color.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in color and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        color[node] = 2
        return None

    for node in sorted(edges):
        if node not in color and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_find_cycle_finds_a_circle_through_three_modules() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle() -> None:
    edges = graph()
    # A package's __init__ is imported with each of its modules; only edges between modules count.
    for deps in edges.values():
        deps.difference_update(PACKAGES)
    assert find_cycle(edges) is None, f"import circle: {' -> '.join(find_cycle(edges) or [])}"


@pytest.mark.parametrize("config", ["logship.config", "shipper.config", "receiver.config"])
def test_config_modules_import_no_runtime_code(config: str) -> None:
    runtime = {m for m in graph()[config] if m not in PACKAGES and not m.startswith(CONFIG_MAY_IMPORT)}
    assert not runtime, f"{config} imports runtime modules: {sorted(runtime)}"


def test_no_source_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in source_modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_pyproject_installs_exactly_our_top_level_packages() -> None:
    import tomllib

    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = doc["tool"]["setuptools"]["packages"]
    assert sorted({p.split(".")[0] for p in packages}) == sorted(PACKAGES)
    # Every subpackage on disk is listed, or setuptools would leave it out of a wheel.
    on_disk = {module_name(p.parent) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
    assert on_disk == set(packages)
