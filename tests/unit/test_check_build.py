"""scripts/check_build.py, which `make build` runs on the sam build output, fails what it should.

A package without byte-code compiles every module it imports on every cold
start (Lambda's code folders are read-only); these tests build small package
folders and check the checker tells each wrong kind apart.
"""

from __future__ import annotations

import importlib.util
import py_compile
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def check_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_build", ROOT / "scripts" / "check_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def package(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "app.py").write_text("import pkg\n")
    (tmp_path / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    return tmp_path


def compile_all(folder: Path, mode: py_compile.PycInvalidationMode) -> None:
    for source in folder.rglob("*.py"):
        py_compile.compile(str(source), doraise=True, invalidation_mode=mode)


def test_unchecked_hash_bytecode_for_every_module_passes(check_build: ModuleType, tmp_path: Path) -> None:
    folder = package(tmp_path)
    compile_all(folder, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    assert check_build.bytecode_problems(folder) == []


def test_a_module_without_bytecode_fails(check_build: ModuleType, tmp_path: Path) -> None:
    folder = package(tmp_path)
    compile_all(folder, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    (folder / "late.py").write_text("X = 2\n")
    assert check_build.bytecode_problems(folder) == ["late.py: no __pycache__/late.cpython-313.pyc"]


def test_timestamp_bytecode_fails(check_build: ModuleType, tmp_path: Path) -> None:
    # What a plain `python -m compileall` writes: checked against an mtime the zip does not keep.
    folder = package(tmp_path)
    compile_all(folder, py_compile.PycInvalidationMode.TIMESTAMP)
    problems = check_build.bytecode_problems(folder)
    assert len(problems) == 2 and all("unchecked-hash" in p for p in problems)


def test_bytecode_of_another_source_fails(check_build: ModuleType, tmp_path: Path) -> None:
    folder = package(tmp_path)
    compile_all(folder, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    (folder / "pkg" / "__init__.py").write_text("VALUE = 2\n")
    assert check_build.bytecode_problems(folder) == [
        "pkg/__init__.py: __init__.cpython-313.pyc was compiled from another version of the source"
    ]


def test_bytecode_of_another_python_fails(check_build: ModuleType, tmp_path: Path) -> None:
    folder = package(tmp_path)
    compile_all(folder, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    pyc = folder / "__pycache__" / "app.cpython-313.pyc"
    pyc.write_bytes(b"\x00\x00\r\n" + pyc.read_bytes()[4:])  # another magic number
    assert check_build.bytecode_problems(folder) == [
        f"app.py: app.cpython-313.pyc is not {sys.version.split()[0]} byte-code"
    ]


def test_installed_versions_must_be_the_pinned_ones(check_build: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "# generated\nhttpx==0.28.1\n    # via x\ntyping-extensions==4.16.0 ; python_full_version < '3.15'\n"
    )
    dist = tmp_path / "httpx-0.28.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.4\nName: httpx\nVersion: 0.28.1\n")
    assert check_build.dependency_problems(tmp_path) == []  # a marker's package may be absent
    (dist / "METADATA").write_text("Metadata-Version: 2.4\nName: httpx\nVersion: 0.27.0\n")
    extra = tmp_path / "setuptools-80.10.2.dist-info"
    extra.mkdir()
    (extra / "METADATA").write_text("Metadata-Version: 2.4\nName: setuptools\nVersion: 80.10.2\n")
    assert check_build.dependency_problems(tmp_path) == [
        "httpx 0.27.0 is installed but requirements.txt pins 0.28.1",
        "setuptools 80.10.2 is installed but requirements.txt pins nothing",
    ]
