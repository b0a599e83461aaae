"""The lock files cover pyproject.toml: a dependency added without `./dev lock` fails here."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", re.M)


def locked(name: str) -> dict[str, Version]:
    """`name==version` pins of one lock file, by canonical name."""
    text = (ROOT / "requirements" / name).read_text()
    return {canonicalize_name(n): Version(v) for n, v in PIN.findall(text)}


def declared(extra: str | None) -> list[Requirement]:
    """pyproject.toml's requirements: the main ones, or one extra's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(("lock", "extras"), [("main.txt", [None]), ("dev.txt", [None, "dev"])])
def test_every_declared_dependency_is_locked_within_its_range(
    lock: str, extras: list[str | None]
) -> None:
    pins = locked(lock)
    for extra in extras:
        for req in declared(extra):
            if req.marker and not req.marker.evaluate({"sys_platform": "linux"}):
                continue
            name = canonicalize_name(req.name)
            assert name in pins, f"{req.name} is not in requirements/{lock}: run ./dev lock"
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"requirements/{lock} pins {req.name}=={pins[name]}, outside {req.specifier}"
            )


def test_every_pin_carries_a_hash() -> None:
    for lock in ("main.txt", "dev.txt"):
        blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", (ROOT / "requirements" / lock).read_text())
        for block in blocks[1:]:
            assert "--hash=sha256:" in block, block.splitlines()[0]
