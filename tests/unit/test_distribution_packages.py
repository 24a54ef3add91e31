"""The installed distribution carries every package of the project.

`pyproject.toml` lists its packages by hand, and a package missing from that list is
absent from a wheel (and from what `pulumi up` imports: infra/__main__.py runs with the
project root off sys.path), while every test here still passes from the checkout. The
kits (shared.clouds) and the trigger registry (shared.triggers) were added without a line
there; this test is what notices the next one.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> tuple[set[str], dict[str, str]]:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(conf["packages"]), dict(conf["package-dir"])


def _on_disk(package_dirs: dict[str, str]) -> set[str]:
    roots = dict(package_dirs)
    # Packages without a package-dir entry sit at the root under their own name.
    for name in ("infra", "layers"):
        roots.setdefault(name, name)
    found = set()
    for top, rel in roots.items():
        base = ROOT / rel
        for init in base.rglob("__init__.py"):
            if "__pycache__" in init.parts or "node_modules" in init.parts:
                continue
            parts = init.parent.relative_to(base).parts
            found.add(".".join((top, *parts)))
    return found


def test_every_package_on_disk_is_in_the_distribution() -> None:
    declared, package_dirs = _declared()
    missing = _on_disk(package_dirs) - declared
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_every_declared_package_exists() -> None:
    declared, package_dirs = _declared()
    assert declared - _on_disk(package_dirs) == set()
