"""Imports go one way (README "Layout"): HTTP → actors → persistence, and never back.

Every module of every package is parsed (imports inside functions included) and each import of
another Clarion package is checked against the package's allowed arrows. Each rule is also shown
to fail: a deliberately wrong import added to a temporary copy of the tree is reported.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Which Clarion packages each package may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "supervision": {"config"},  # plain policies, metrics and the cluster model
    "persistence": {"config"},  # storage knows no actors and no HTTP
    "simulator": set(),  # a stand-in for the providers: nothing of Clarion
    "actors": {"config", "persistence", "supervision"},
    "node": {"config", "persistence", "supervision", "actors"},  # the Supervisor, the launcher
    "http": {"config", "persistence", "supervision", "actors"},
    "cli": {"config", "persistence", "supervision", "actors", "node", "http", "simulator"},
}
# Of the actors, the HTTP layer may use the messages only: never an actor class.
HTTP_MAY_IMPORT_FROM_ACTORS = {"clarion.actors.messages"}


def imports_of(path: Path) -> list[str]:
    """The Clarion modules `path` imports, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("clarion.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "clarion" or node.module.count(".") == 1 and \
                    node.module.startswith("clarion."):
                # `from clarion.actors import messages`: the modules are the names.
                found += [f"{node.module}.{a.name}" for a in node.names]
            elif node.module.startswith("clarion."):
                found.append(node.module)
    return found


def violations(root: Path) -> list[str]:
    """Every import in the tree under `root` that goes against ALLOWED."""
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root)
            for module in imports_of(path):
                target = module.split(".")[1]  # clarion.<package>...
                if target == package or target not in ALLOWED:
                    continue
                if target not in allowed:
                    wrong.append(f"{where}: {package} → {module}")
                elif package == "http" and target == "actors" and not any(
                        module == m or module.startswith(m + ".")
                        for m in HTTP_MAY_IMPORT_FROM_ACTORS):
                    wrong.append(f"{where}: http → {module} (only actors.messages)")
    return wrong


def test_every_import_goes_the_documented_way() -> None:
    assert violations(ROOT) == []


def test_every_package_of_the_tree_has_its_rule() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (
        (p / "__init__.py").exists() or p.name == "http")}
    assert packages - {"tests", "bench"} <= set(ALLOWED)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("tree")
    for package in ALLOWED:
        shutil.copytree(ROOT / package, target / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return target


BAD_IMPORTS = [
    ("config/settings.py", "from clarion.persistence import database"),
    ("supervision/breaker.py", "from clarion.actors import messages"),
    ("persistence/users.py", "from clarion.actors.messages import Reply"),
    ("persistence/cache.py", "import clarion.http.responses"),
    ("actors/gateway.py", "from clarion.http.responses import success"),
    ("actors/users.py", "from clarion.node.supervisor import Supervisor"),
    ("http/app.py", "from clarion.actors.gateway import Gateway"),
    ("http/bridge.py", "from clarion.node import launcher"),
    ("node/launcher.py", "from clarion.http.app import create_app"),
    ("simulator/app.py", "from clarion.config import settings"),
]


@pytest.mark.parametrize(("module", "line"), BAD_IMPORTS,
                         ids=[m for m, _ in BAD_IMPORTS])
def test_a_wrong_import_is_reported(copy: Path, module: str, line: str) -> None:
    path = copy / module
    original = path.read_text(encoding="utf-8")
    try:
        # Inside a function too: the check reads every import, not only the module's top.
        path.write_text(original + f"\n\ndef _wrong() -> None:\n    {line}\n", encoding="utf-8")
        wrong = violations(copy)
    finally:
        path.write_text(original, encoding="utf-8")
    assert len(wrong) == 1 and wrong[0].startswith(module), wrong
