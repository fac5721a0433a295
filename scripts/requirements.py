"""Write each Lambda package's requirements.txt from uv.lock, or check that they match it.

    make requirements                      (or: .venv/bin/python scripts/requirements.py)
    .venv/bin/python scripts/requirements.py --check

uv.lock is the one source of dependency versions. pyproject.toml's dependency
groups ``layer``, ``fetcher`` and ``poster`` say which package ships what; each
group's locked closure, exported by ``uv export``, is the requirements.txt that
``sam build`` installs. Nobody edits those files: ``--check`` (and the test
suite) fails when one differs from what the lock gives.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: dependency group -> the folder whose requirements.txt sam build installs
PACKAGES = {
    "layer": ROOT / "src" / "shared",
    "fetcher": ROOT / "src" / "fetcher",
    "poster": ROOT / "src" / "poster",
}

HEADER = """\
# Generated from uv.lock by `make requirements` (dependency group "{group}" in pyproject.toml).
# Do not edit: change pyproject.toml, then `make lock`.
# {note}
"""
NOTES = {
    "layer": "The layer (/opt/python) serves both functions.",
    "fetcher": "The layer adds its own; boto3 comes with the Lambda runtime.",
    "poster": "The layer adds its own; boto3 comes with the Lambda runtime.",
}


def render(group: str) -> str:
    """The requirements.txt of one group, exactly as the lock gives it."""
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "uv",
            "export",
            "--frozen",  # from uv.lock as it is; `uv lock --check` guards lock vs pyproject
            "--only-group",
            group,
            "--no-hashes",
            "--no-header",
            "--quiet",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return HEADER.format(group=group, note=NOTES[group]) + exported


def stale(packages: dict[str, Path]) -> list[Path]:
    """The requirements files that differ from what the lock gives."""
    return [
        folder / "requirements.txt"
        for group, folder in packages.items()
        if not (folder / "requirements.txt").is_file()
        or (folder / "requirements.txt").read_text(encoding="utf-8") != render(group)
    ]


def main(argv: list[str] | None = None, packages: dict[str, Path] = PACKAGES) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if a requirements.txt differs from the lock"
    )
    args = parser.parse_args(argv)

    outdated = stale(packages)
    if args.check:
        if outdated:
            print(f"out of date with uv.lock (run `make requirements`): {', '.join(map(str, outdated))}")
        return 1 if outdated else 0
    groups = {folder: group for group, folder in packages.items()}
    for path in outdated:
        path.write_text(render(groups[path.parent]), encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
