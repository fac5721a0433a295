"""node's ``Intl.Segmenter`` (what the Bluesky PDS counts graphemes with) as a test judge.

``counts(texts)`` and ``around(cases)`` run ``tests/intl_segmenter.js`` in one node
process. It needs node only (ICU is built in, no npm packages); tests that use it skip
with a clear reason where node is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent / "intl_segmenter.js"


def missing() -> str | None:
    """Why Intl.Segmenter cannot judge here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed: Intl.Segmenter cannot judge the grapheme counts"
    return None


requires_node = pytest.mark.skipif(missing() is not None, reason=missing() or "")


def _ask(request: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, missing()
    result = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def counts(texts: list[str]) -> list[int]:
    """Intl.Segmenter's grapheme count of each text."""
    found: list[int] = _ask({"texts": texts})["counts"]
    return found


def around(cases: list[tuple[str, str, list[int]]]) -> list[list[int]]:
    """For each ``(prefix, suffix, code points)``: the count of prefix + chr(cp) + suffix, per cp."""
    found: list[list[int]] = _ask({"around": cases})["around"]
    return found


def unicode_version() -> str:
    return str(_ask({"texts": []})["unicode"])
