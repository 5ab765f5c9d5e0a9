"""The layering holds: imports flow one way, the core does no I/O (checked with `ast`).

    core <- runtime <- store <- cluster <- jobs <- live <- net <- app

Every module of every layer may import its own layer and the layers below
it, never one above. Third-party I/O libraries stay in the layers that own
that I/O. `agent_sim` (the node SDK) uses only the wire model of the core.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HUB = ROOT / "hub"
LAYERS = ["core", "runtime", "store", "cluster", "jobs", "live", "net", "app"]
RANK = {name: i for i, name in enumerate(LAYERS)}

NO_IO = {"asyncio", "websockets", "redis", "hiredis", "loguru", "time", "socket", "os", "ssl",
         "subprocess", "threading", "tomllib", "uvloop"}
"""What the pure core may not import."""
ONLY_IN = {
    "websockets": {"net"},
    "redis": {"store"},
    "hiredis": {"store"},
    "agent_sim": {"app"},
    "jwt": {"net"},  # tokens are checked at the door
    "cryptography": {"net"},
}
"""Third-party (and sibling) packages and the only layers that may import them."""


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import (use absolute `hub.` imports)")
            if node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_of(module: str) -> str | None:
    """`hub.jobs.service` -> `jobs`; None for `hub` itself or a non-hub module."""
    parts = module.split(".")
    if parts[0] != "hub" or len(parts) < 2 or parts[1] not in RANK:
        return None
    return parts[1]


def hub_modules() -> list[Path]:
    return sorted(p for p in HUB.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", hub_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path: Path) -> None:
    rel = path.relative_to(HUB)
    if len(rel.parts) == 1:
        assert rel.name in ("__init__.py", "__main__.py"), f"hub/{rel} belongs in a layer"
        return
    own = rel.parts[0]
    assert own in RANK, f"hub/{own}/ is not a layer: add it to LAYERS in its place"
    imports = imported_modules(path)
    above = sorted(
        m for m in imports if (layer := layer_of(m)) is not None and RANK[layer] > RANK[own]
    )
    assert not above, f"hub/{rel} ({own}) imports from a higher layer: {above}"
    for package, layers in ONLY_IN.items():
        used = {m for m in imports if m.split(".")[0] == package}
        assert not used or own in layers, f"hub/{rel} imports {package} outside {sorted(layers)}"
    if own == "core":
        found = {m.split(".")[0] for m in imports} & NO_IO
        assert not found, f"hub/{rel} (pure core) imports {sorted(found)}"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "agent_sim").glob("*.py")), ids=lambda p: p.name
)
def test_the_sdk_uses_only_the_wire_model(path: Path) -> None:
    hub_imports = {m for m in imported_modules(path) if m.split(".")[0] == "hub"}
    outside = sorted(m for m in hub_imports if layer_of(m) not in ("core", None))
    assert not outside, f"agent_sim/{path.name} imports {outside}"


def project_classes() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for path in [*hub_modules(), *sorted((ROOT / "agent_sim").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        found += [
            (f"{path.relative_to(ROOT)}:{node.lineno}", node)
            for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
        ]
    return found


def test_no_class_has_two_project_bases() -> None:
    """Composition, not mixins: a class may extend one project class at most."""
    names = {node.name for _, node in project_classes()}
    offenders = []
    for where, node in project_classes():
        bases = [b.id for b in node.bases if isinstance(b, ast.Name) and b.id in names]
        if len(bases) >= 2:
            offenders.append(f"{where} {node.name}({', '.join(bases)})")
    assert not offenders, offenders


def test_the_checker_sees_imports() -> None:
    # Guard against a vacuous pass: the selector does import the snapshot, the session
    # layer the job path; and an upward import is caught.
    assert "hub.core.snapshot" in imported_modules(HUB / "core" / "selector.py")
    assert layer_of("hub.jobs.service") == "jobs"
    assert any(layer_of(m) == "jobs" for m in imported_modules(HUB / "net" / "sessions.py"))
    assert layer_of("hub") is None and layer_of("agent_sim.agent") is None
    assert len(hub_modules()) > 40


def test_the_sdk_composes_its_parts() -> None:
    """`NodeAgent` holds its connection, jobs and frames; no SDK class extends another."""
    sdk = [(w, n) for w, n in project_classes() if w.startswith("agent_sim/")]
    names = {node.name for _, node in sdk}
    inheriting = [
        f"{where} {node.name}"
        for where, node in sdk
        if any(isinstance(b, ast.Name) and b.id in names for b in node.bases)
        and not node.name.endswith(("Error", "Refused", "Failed"))
    ]
    assert not inheriting, inheriting
    assert "NodeAgent" in names and len(sdk) > 8


ROLES = {"home": "hub.jobs.owner", "owner": "hub.jobs.home"}
"""The job path's two roles (hub/jobs/roles.py): neither imports the other."""


@pytest.mark.parametrize(
    "path",
    sorted(p for role in ROLES for p in (HUB / "jobs" / role).glob("*.py")),
    ids=lambda p: str(p.relative_to(HUB)),
)
def test_the_two_roles_meet_only_through_their_interfaces(path: Path) -> None:
    forbidden = ROLES[path.parent.name]
    crossing = sorted(m for m in imported_modules(path) if m.startswith(forbidden))
    assert not crossing, f"hub/{path.relative_to(HUB)} imports {crossing}"


def test_parts_are_wired_at_construction() -> None:
    """No late setter closes a cycle of the job path, the cluster or the inbox: what a
    part needs is a constructor argument (the setters these names were once are gone,
    and the checker would see them come back)."""
    late = []
    for path in hub_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in (
                "report_to", "resolve_with", "attach",
            ):
                late.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Attribute) and t.attr == "handler"
                        and not (isinstance(t.value, ast.Name) and t.value.id == "self")
                        for t in node.targets)
            ):
                late.append(f"{path.relative_to(ROOT)}:{node.lineno} .handler = ...")
    assert not late, late


def test_only_the_sdk_transport_imports_websockets() -> None:
    """The SDK's parts talk to a hub through `agent_sim.link.HubLink`; websockets stays in
    the link's implementation (`wslink.py`) and in `HubClient`, whose callers see its
    exceptions."""
    users = sorted(
        path.name
        for path in (ROOT / "agent_sim").glob("*.py")
        if any(m.split(".")[0] == "websockets" for m in imported_modules(path))
    )
    assert users == ["client.py", "wslink.py"]
