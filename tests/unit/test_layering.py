"""The core knows neither the CLI nor the emulators (issue 17): no module under
``shared/`` (nor ``functions/``, shipped to the clouds with it) imports ``dhow_cli`` or
``dhow_local``. Both live under localstack/ because no cloud function carries them, so
an import of either from the core would fail in the cloud, or pull the local platform in.

Read with ``ast``, not by importing: a lazy import inside a function counts as much as
one at the top of a module (the CLI's were all lazy)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("shared", "functions")
LOCAL_ONLY = ("dhow_cli", "dhow_local")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import in ``tree``, at any depth, and every
    ``importlib.import_module`` / ``__import__`` of a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def reaches(module: str, forbidden: str) -> bool:
    return module == forbidden or module.startswith(forbidden + ".")


def imports_of(package: str, forbidden: str) -> list[str]:
    hits = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        hits += [
            f"{path.relative_to(ROOT)}:{line} imports {module}"
            for line, module in imported_modules(tree)
            if reaches(module, forbidden)
        ]
    return hits


@pytest.mark.parametrize("package", SHIPPED)
@pytest.mark.parametrize("forbidden", LOCAL_ONLY)
def test_the_core_imports_neither_the_cli_nor_the_emulators(package: str, forbidden: str) -> None:
    assert imports_of(package, forbidden) == []


def test_the_walk_sees_lazy_and_dynamic_imports() -> None:
    """The check can fail: an import inside a function, a from-import of a submodule and
    an import_module of a literal name are all found; a name that only starts alike is
    not."""
    source = (
        "def f():\n"
        "    from dhow_local.platform import ROUTER_URL\n"
        "    import dhow_cli.app\n"
        "    importlib.import_module('dhow_local.router')\n"
        "import dhow_cli_notes\n"
    )
    found = [m for _, m in imported_modules(ast.parse(source))]
    assert sorted(m for m in found if any(reaches(m, f) for f in LOCAL_ONLY)) == [
        "dhow_cli.app",
        "dhow_local.platform",
        "dhow_local.router",
    ]
