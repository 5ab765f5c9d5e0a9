"""The pure core imports no I/O, and imports flow one way (checked with `ast`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HUB = Path(__file__).resolve().parent.parent / "hub"
CORE = ["messages", "errors", "capabilities", "pmap", "snapshot", "selector", "jobs"]
FORBIDDEN = {"asyncio", "websockets", "redis", "loguru", "time", "socket"}
# Each core module may import only the core modules listed for it.
ALLOWED = {
    "errors": set(),
    "messages": {"errors"},
    "pmap": set(),
    "capabilities": {"messages", "errors"},
    "snapshot": {"messages", "errors", "capabilities", "pmap"},
    "selector": {"messages", "errors", "capabilities", "pmap", "snapshot"},
    "jobs": {"messages", "errors", "capabilities", "pmap", "snapshot", "selector"},
}
OUTER = {"service", "server", "store", "cli"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the hub package
                base = "hub" if node.level == 1 else ""
                module = f"{base}.{node.module}" if node.module else base
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
            elif node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def existing_core() -> list[str]:
    return [name for name in CORE if (HUB / f"{name}.py").exists()]


@pytest.mark.parametrize("name", existing_core())
def test_core_imports_no_io(name: str) -> None:
    found = {m.split(".")[0] for m in imported_modules(HUB / f"{name}.py")}
    assert not found & FORBIDDEN, f"hub/{name}.py imports {sorted(found & FORBIDDEN)}"


@pytest.mark.parametrize("name", existing_core())
def test_core_imports_flow_one_way(name: str) -> None:
    hub_imports = {
        m.split(".")[1] for m in imported_modules(HUB / f"{name}.py")
        if m.startswith("hub.") and len(m.split(".")) > 1
    }
    # `from hub.snapshot import X` yields "hub.snapshot" and "hub.snapshot.X";
    # only module names count.
    hub_imports = {m for m in hub_imports if (HUB / f"{m}.py").exists() or (HUB / m).is_dir()}
    assert not hub_imports & OUTER, f"hub/{name}.py imports {sorted(hub_imports & OUTER)}"
    assert hub_imports <= ALLOWED[name], (
        f"hub/{name}.py imports {sorted(hub_imports - ALLOWED[name])} against the flow"
    )


def test_the_checker_sees_imports() -> None:
    # Guard against a vacuous pass: the selector does import the snapshot.
    assert "hub.snapshot" in imported_modules(HUB / "selector.py")
    assert "random" in imported_modules(HUB / "selector.py")
