"""Check `sam build` output before it ships, and print the package sizes.

    python3.13 scripts/check_build.py .aws-sam/build        (`make build` runs it)

Fails (exit 1) unless, in every function and layer folder:

* every ``.py`` has its byte-code next to it, ``__pycache__/<name>.cpython-313.pyc``,
  compiled by this python3.13 for that exact source, in ``unchecked-hash``
  mode. Lambda's code folders are read-only, so a module without it is
  compiled again, in memory, on every cold start; a timestamp-based .pyc is
  no better, because the deployment zip does not keep the timestamps it was
  checked against;
* the installed distributions are exactly the ones its requirements.txt (so
  uv.lock) pins, version for version.

Standard library only: it runs on the python3.13 that `sam build` used.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

#: flags word of a .pyc (PEP 552): bit 0 = hash-based, bit 1 = check the source
UNCHECKED_HASH = 0b01
MIB = 1024 * 1024


def bytecode_problems(folder: Path) -> list[str]:
    """Sources in ``folder`` without up-to-date unchecked-hash byte-code of this interpreter."""
    tag = sys.implementation.cache_tag
    problems = []
    for source in sorted(folder.rglob("*.py")):
        where = source.relative_to(folder)
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if not pyc.is_file():
            problems.append(f"{where}: no __pycache__/{pyc.name}")
            continue
        header = pyc.read_bytes()[:16]
        if header[:4] != importlib.util.MAGIC_NUMBER:
            problems.append(f"{where}: {pyc.name} is not {sys.version.split()[0]} byte-code")
        elif int.from_bytes(header[4:8], "little") != UNCHECKED_HASH:
            problems.append(f"{where}: {pyc.name} is not compiled with --invalidation-mode unchecked-hash")
        elif header[8:16] != importlib.util.source_hash(source.read_bytes()):
            problems.append(f"{where}: {pyc.name} was compiled from another version of the source")
    return problems


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(folder: Path) -> dict[str, str]:
    """Distributions in a package folder: name -> version (from each .dist-info/METADATA)."""
    found = {}
    for metadata in folder.glob("*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1)
            for line in metadata.read_text(encoding="utf-8").splitlines()[:20]
            if line.startswith(("Name: ", "Version: "))
        )
        found[_normalize(fields["Name"])] = fields["Version"]
    return found


def pinned(requirements: Path) -> tuple[dict[str, str], set[str]]:
    """``name==version`` lines of a generated requirements.txt, and which carry a marker."""
    pins, conditional = {}, set()
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(;.*)?$", line)
        if match:
            name = _normalize(match.group(1))
            pins[name] = match.group(2)
            if match.group(3):
                conditional.add(name)
    return pins, conditional


def dependency_problems(folder: Path) -> list[str]:
    requirements = folder / "requirements.txt"
    if not requirements.is_file():
        return [f"{folder.name}: no requirements.txt (sam build copies it with the code)"]
    pins, conditional = pinned(requirements)
    have = installed(folder)
    problems = [
        f"{name} {version} is installed but requirements.txt pins {pins.get(name, 'nothing')}"
        for name, version in sorted(have.items())
        if pins.get(name) != version
    ]
    problems += [
        f"{name}=={version} is pinned but not installed"
        for name, version in sorted(pins.items())
        if name not in have and name not in conditional
    ]
    return problems


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def report(name: str, folder: Path) -> str:
    total = size(folder)
    pyc = sum(f.stat().st_size for f in folder.rglob("*.pyc"))
    largest = sorted(((size(p), p.name) for p in folder.iterdir()), reverse=True)[:5]
    parts = ", ".join(f"{entry} {bytes_ / MIB:.2f}" for bytes_, entry in largest)
    return f"  {name:<16} {total / MIB:6.2f} MiB  (.pyc {pyc / MIB:5.2f})  largest: {parts}"


def main() -> int:
    build = Path(sys.argv[1] if len(sys.argv) > 1 else ".aws-sam/build")
    if sys.version_info[:2] != (3, 13):
        print(f"run this with python3.13 (the runtime's), not {sys.version.split()[0]}")
        return 1
    artifacts = sorted(p for p in build.iterdir() if p.is_dir())
    if not artifacts:
        print(f"{build}: no build output; run `sam build` first")
        return 1
    failed = False
    lines = ["Package sizes (sam build output, unzipped; MiB):"]
    for artifact in artifacts:
        # A layer's Python code lives under python/ (/opt/python in the runtime).
        code = artifact / "python" if (artifact / "python").is_dir() else artifact
        problems = bytecode_problems(code) + dependency_problems(code)
        for problem in problems[:20]:
            print(f"{artifact.name}: {problem}")
        if len(problems) > 20:
            print(f"{artifact.name}: ... and {len(problems) - 20} more")
        failed = failed or bool(problems)
        lines.append(report(artifact.name, code))
    print("\n".join(lines))
    if failed:
        print("build check FAILED")
        return 1
    print("build check passed: every module has python3.13 unchecked-hash byte-code; versions are uv.lock's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
