"""requirements.lock agrees with pyproject.toml, and this environment runs it.

The lock (made by scripts/lock.sh) is what a fresh machine installs for the
tests; pyproject.toml's ranges are what `pip install -e .` resolves. A
dependency added to, removed from or narrowed in one and not the other fails
here, naming the package and the command that fixes it.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PROJECT = "nodehub"
FIX = "run `bash scripts/lock.sh` and commit requirements.lock"

_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]*?))?\s*\\?$")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?(\S.*?)\s*$")


@dataclass
class Pin:
    name: str
    version: Version
    marker: Marker | None
    via: list[str] = field(default_factory=list)

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def read_lock(text: str) -> list[Pin]:
    pins: list[Pin] = []
    for line in text.splitlines():
        match = _ENTRY.match(line)
        if match:
            name, version, marker = match.groups()
            pins.append(Pin(canonicalize_name(name), Version(version),
                            Marker(marker) if marker else None))
            continue
        via = _VIA.match(line)
        if via and pins and not line.lstrip().startswith("--"):
            text_after = via.group(1)
            if text_after != "via":
                pins[-1].via.append(text_after)
    return pins


def declared(pyproject: dict[str, object], extras: tuple[str, ...] = ("test", "bench"),
             ) -> list[Requirement]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    reqs = [Requirement(r) for r in project["dependencies"]]
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        reqs += [Requirement(r) for r in optional.get(extra, [])]
    return reqs


def problems(pyproject: dict[str, object], lock_text: str) -> list[str]:
    """What makes the lock disagree with pyproject.toml (empty when they agree)."""
    pins = read_lock(lock_text)
    by_name: dict[str, list[Pin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
    found: list[str] = []
    wanted = declared(pyproject)
    names = {canonicalize_name(r.name) for r in wanted}
    for req in wanted:
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        locked = [p for p in by_name.get(name, []) if p.applies()]
        if not locked:
            found.append(f"{req} is declared in pyproject.toml but not in the lock")
            continue
        for pin in locked:
            if pin.version not in req.specifier:
                found.append(f"{req} is declared but the lock pins {pin.name}=={pin.version}")
        # The requested extras' own requirements (redis[hiredis] -> hiredis),
        # read from the installed distribution's metadata.
        if req.extras:
            try:
                extra_reqs = importlib.metadata.requires(req.name) or []
            except importlib.metadata.PackageNotFoundError:
                extra_reqs = []
            for raw in extra_reqs:
                sub = Requirement(raw)
                if sub.marker is None or not any(
                    sub.marker.evaluate({"extra": extra}) for extra in req.extras
                ):
                    continue
                if "extra" not in str(sub.marker):
                    continue
                if not any(p.applies() for p in by_name.get(canonicalize_name(sub.name), [])):
                    found.append(f"{req} needs {sub.name}, which the lock does not hold")
    for pin in pins:
        if f"{PROJECT} (pyproject.toml)" in pin.via and pin.name not in names:
            found.append(f"the lock holds {pin.name} for {PROJECT}, "
                         "but pyproject.toml no longer declares it")
    return found


def load_pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_lock_agrees_with_pyproject() -> None:
    found = problems(load_pyproject(), LOCK.read_text())
    assert not found, "\n".join([*found, FIX])


def test_this_environment_runs_the_lock() -> None:
    """The suite runs with the locked versions (scripts/test.sh installs them)."""
    off: list[str] = []
    for pin in read_lock(LOCK.read_text()):
        if not pin.applies():
            continue
        try:
            installed = Version(importlib.metadata.version(pin.name))
        except importlib.metadata.PackageNotFoundError:
            off.append(f"{pin.name}=={pin.version} is locked but not installed")
            continue
        if installed != pin.version:
            off.append(f"{pin.name} {installed} is installed, the lock has {pin.version}")
    assert not off, "\n".join(
        [*off, "install the lock: bash scripts/test.sh (or pip install --require-hashes "
               "--no-deps -r requirements.lock)"])


# The checker itself, on made-up inputs: it must fail where it should.

_PYPROJECT = {"project": {"dependencies": ["websockets>=14"],
                          "optional-dependencies": {"test": ["pytest>=8"]}}}
_LOCK = """\
pytest==9.0 \\
    --hash=sha256:00 \\
    # via nodehub (pyproject.toml)
websockets==15.0 ; python_full_version >= '3.9' \\
    --hash=sha256:00
    # via
    #   nodehub (pyproject.toml)
    #   other
"""


def test_checker_accepts_an_agreeing_pair() -> None:
    assert problems(_PYPROJECT, _LOCK) == []


def test_checker_names_a_dependency_missing_from_the_lock() -> None:
    pyproject = {"project": {"dependencies": ["websockets>=14", "rich>=13"],
                             "optional-dependencies": {"test": ["pytest>=8"]}}}
    found = problems(pyproject, _LOCK)
    assert found == ["rich>=13 is declared in pyproject.toml but not in the lock"]


def test_checker_names_a_pin_outside_the_declared_range() -> None:
    pyproject = {"project": {"dependencies": ["websockets>=16"],
                             "optional-dependencies": {"test": ["pytest>=8"]}}}
    assert problems(pyproject, _LOCK) == [
        "websockets>=16 is declared but the lock pins websockets==15.0"]


def test_checker_names_a_dependency_dropped_from_pyproject() -> None:
    pyproject = {"project": {"dependencies": ["websockets>=14"]}}
    assert problems(pyproject, _LOCK) == [
        "the lock holds pytest for nodehub, but pyproject.toml no longer declares it"]
