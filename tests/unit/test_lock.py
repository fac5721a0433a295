"""uv.lock is the one source of dependency versions; what ships is generated from it.

pyproject.toml gives the bounds and, in its dependency groups, which Lambda
package ships what; uv.lock pins every version (with hashes); `make
requirements` writes each package's requirements.txt from the lock. These
tests fail when any of the three drifts from the others.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LAMBDA_GROUPS = ("layer", "fetcher", "poster")
#: in the python3.13 Lambda runtime: a dependency of the package, shipped by no Lambda package
RUNTIME_PROVIDED = {"boto3"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("requirements_script", ROOT / "scripts" / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lock_is_current_with_pyproject() -> None:
    # Offline: an up-to-date lock needs no index. A bound changed without `make lock` fails here
    # (and `make venv`, whose `uv sync --locked` refuses a stale lock).
    check = subprocess.run(
        [sys.executable, "-m", "uv", "lock", "--check", "--offline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_requirements_files_are_what_the_lock_gives() -> None:
    assert _script().main(["--check"]) == 0, "run `make requirements`"


def test_a_hand_edited_requirements_file_is_caught(tmp_path: Path) -> None:
    script = _script()
    packages = {}
    for group in script.PACKAGES:
        packages[group] = tmp_path / group
        packages[group].mkdir()
        (packages[group] / "requirements.txt").write_text(script.render(group), encoding="utf-8")
    assert script.main(["--check"], packages) == 0
    poster = packages["poster"] / "requirements.txt"
    poster.write_text(poster.read_text().replace("tweepy==", "tweepy>="), encoding="utf-8")
    assert script.main(["--check"], packages) == 1


def test_each_runtime_dependency_ships_in_exactly_one_lambda_package() -> None:
    groups = PYPROJECT["dependency-groups"]
    placed = [_name(r) for group in LAMBDA_GROUPS for r in groups[group]]
    assert len(placed) == len(set(placed)), "a dependency in two Lambda packages"
    assert set(placed) == {_name(r) for r in PYPROJECT["project"]["dependencies"]} - RUNTIME_PROVIDED
    # Names only: bounds live in [project].dependencies, versions in uv.lock.
    for group in LAMBDA_GROUPS:
        for requirement in groups[group]:
            assert not Requirement(requirement).specifier, f"{group}: {requirement}"


@pytest.mark.parametrize("tool", ["sam", "checkov"])
def test_tool_locks_pin_what_their_inputs_ask(tool: str) -> None:
    wanted = [
        Requirement(line)
        for line in (ROOT / "tools" / f"{tool}.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    lock = (ROOT / "tools" / f"{tool}.lock").read_text()
    for requirement in wanted:
        ((operator, version),) = ((s.operator, s.version) for s in requirement.specifier)
        assert operator == "==", f"tools/{tool}.in pins its tool exactly"
        assert re.search(rf"^{re.escape(requirement.name)}=={re.escape(version)} \\$", lock, re.M), (
            f"tools/{tool}.lock does not pin {requirement}: run `make lock`"
        )
    assert "--hash=sha256:" in lock
