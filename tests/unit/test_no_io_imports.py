"""The protocol core stays I/O-free, and the tree stays lint- and format-clean.

Only ``protocol/aio.py``, the asyncio adapter, may import networking or event-loop modules.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "protocol"
ADAPTER = PROTOCOL / "aio.py"
FORBIDDEN = frozenset({"asyncio", "uvloop", "aiofiles", "socket", "selectors", "ssl"})
CORE_FILES = sorted(p for p in PROTOCOL.rglob("*.py") if p != ADAPTER)
LINTED_DIRS = [d for d in ("logship", "protocol", "shipper", "receiver", "tests", "scripts") if (ROOT / d).is_dir()]


def imported_modules(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """Return (line, module) for every absolute import, including ``__import__``/``import_module`` calls."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from protocol import aio`` imports the module protocol.aio: record both spellings.
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def forbidden_imports(source: str, filename: str = "<string>") -> list[str]:
    """Return a line per import of an I/O or event-loop module (or of the adapter) in ``source``."""
    return [
        f"{filename}:{line}: imports {name}"
        for line, name in imported_modules(source, filename)
        if name.split(".")[0] in FORBIDDEN or name == "protocol.aio"
    ]


def test_protocol_core_exists() -> None:
    names = {p.name for p in CORE_FILES}
    assert {"framing.py", "messages.py", "session.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_protocol_core_imports_no_io(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))) == []


def test_protocol_core_loads_no_io_module() -> None:
    # Catches indirect imports too: load every core module in a fresh interpreter and look at sys.modules.
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in CORE_FILES]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {sorted(FORBIDDEN)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import socket as s",
        "import os, ssl",
        "import asyncio.streams",
        "from selectors import DefaultSelector",
        "from uvloop import run",
        "def f():\n    import aiofiles",
        "__import__('socket')",
        "import importlib\nimportlib.import_module('asyncio')",
        "from protocol import aio",
        "import protocol.aio",
    ],
)
def test_checker_finds_forbidden_imports(source: str) -> None:
    # The check above is only worth something if it would notice.
    assert forbidden_imports(source) != []


@pytest.mark.parametrize(
    "source",
    ["import struct", "from protocol.framing import encode", "from . import names", "import asyncio_helpers"],
)
def test_checker_allows_pure_imports(source: str) -> None:
    assert forbidden_imports(source) == []


def _ruff() -> list[str]:
    """Return the command that runs ruff, preferring the one beside this interpreter."""
    local = Path(sys.executable).with_name("ruff")
    if local.exists():
        return [str(local)]
    found = shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed")
    return [found]


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(args: list[str]) -> None:
    out = subprocess.run([*_ruff(), *args, *LINTED_DIRS], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"ruff {' '.join(args)} failed:\n{out.stdout}{out.stderr}"
