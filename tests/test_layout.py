"""The repository layout: the root `http/` folder never shadows the standard library's `http`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Run from the repository root, where `-c` puts the current directory first on sys.path: the
# worst case for shadowing.
PROBE = """
import json, sys
import http, http.client
import clarion.http.app
print(json.dumps({
    "cwd_first_on_path": sys.path[0] == "",
    "http": http.__file__,
    "http_client": http.client.__file__,
    "clarion_http_app": clarion.http.app.__file__,
}))
"""


@pytest.fixture(scope="module")
def found() -> dict[str, Any]:
    """What a fresh interpreter started in the repository root imports (one subprocess)."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def is_under(path: str, directory: str) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(directory))


def test_http_resolves_to_the_standard_library_from_the_repository_root(
        found: dict[str, Any]) -> None:
    stdlib = sysconfig.get_paths()["stdlib"]

    assert found["cwd_first_on_path"] is True  # the probe really had the root first on sys.path
    assert is_under(str(found["http"]), stdlib), found["http"]
    assert is_under(str(found["http_client"]), stdlib), found["http_client"]
    assert Path(str(found["http_client"])).name == "client.py"
    assert not is_under(str(found["http_client"]), str(REPO_ROOT))


def test_clarion_http_app_is_the_repositorys_http_app_module(found: dict[str, Any]) -> None:
    assert Path(os.path.realpath(str(found["clarion_http_app"]))) == (
        REPO_ROOT / "http" / "app.py").resolve()


def test_the_root_http_folder_has_no_init_file() -> None:
    assert (REPO_ROOT / "http" / "app.py").is_file()  # we are looking at the right folder
    assert not (REPO_ROOT / "http" / "__init__.py").exists()


def test_no_test_folder_has_an_init_file() -> None:
    tests = REPO_ROOT / "tests"
    inits = sorted(str(p.relative_to(REPO_ROOT)) for p in tests.rglob("__init__.py"))

    assert inits == []
