"""The floors of the house (docs/architecture.md, Layers), read from the packages' imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "ml_common": "ml-common",
    "ml_api": "ml-api",
    "ml_celery": "ml-celery",
    "ml_client": "ml-client",
    "mlprod_client": "ml-sdk",
    "ml_tools": "ml-tools",
}
SERVICES = ("ml_api", "ml_celery", "ml_client")
# each package and the packages of the house it may import
MAY_IMPORT = {
    "mlprod_client": set(),
    "ml_common": set(),
    **{service: {"ml_common"} for service in SERVICES},
    "ml_tools": {"ml_common", "mlprod_client"},
}
# the modules of ml_common used through one user or one other module (docs/architecture.md)
ALONE = {"retention", "documents", "jpegscan", "imagescan", "storagekeys", "s3storage"}


def _imported(module: Path) -> set[str]:
    """The first-party modules `module` imports, by dotted name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _modules(package: str) -> dict[str, set[str]]:
    folder = ROOT / PACKAGES[package] / package
    return {
        ".".join(path.relative_to(folder.parent).with_suffix("").parts): _imported(path)
        for path in folder.rglob("*.py")
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_a_floor_above_or_beside_it(package: str) -> None:
    allowed = MAY_IMPORT[package] | {package}
    wrong = {
        (module, name)
        for module, names in _modules(package).items()
        for name in names
        if name.split(".")[0] not in allowed
    }
    assert wrong == set()


def test_no_two_modules_of_common_import_each_other() -> None:
    modules = _modules("ml_common")
    pairs = {(a, b) for a, names in modules.items() for b in names if a in modules.get(b, set())}
    assert pairs == set()


def test_each_module_of_common_serves_two_of_the_api_worker_client_and_sdk() -> None:
    common = _modules("ml_common")
    users: dict[str, set[str]] = {name: set() for name in common}
    for package in (*SERVICES, "mlprod_client"):
        for names in _modules(package).values():
            for name in names & set(common):
                users[name].add(package)
    alone = {name.split(".")[-1] for name, found in users.items() if len(found) < 2}
    assert alone - {"__init__"} == ALONE
