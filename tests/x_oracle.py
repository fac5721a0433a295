"""X's official twitter-text library (npm ``twitter-text``, run by node) as a test judge.

``judge(texts)`` sends every text to one node process and returns, per text, what the
official library sees (see ``tests/twitter_text_js/oracle.js``). Tests that use it skip
with a clear reason where node or the npm packages are missing; CI has both
(``make venv`` runs ``npm ci`` in ``tests/twitter_text_js``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ORACLE_DIR = Path(__file__).resolve().parent / "twitter_text_js"
ORACLE = ORACLE_DIR / "oracle.js"


def missing() -> str | None:
    """Why the official library cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed: the official twitter-text library cannot judge"
    if not (ORACLE_DIR / "node_modules" / "twitter-text").is_dir():
        return f"npm packages missing: run `npm ci --prefix {ORACLE_DIR}` (make venv does)"
    return None


requires_node = pytest.mark.skipif(missing() is not None, reason=missing() or "")


def judge(texts: list[str]) -> list[dict[str, Any]]:
    """What the official library sees in each text, in one node process."""
    node = shutil.which("node")
    assert node is not None, missing()
    result = subprocess.run(
        [node, str(ORACLE)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    judged: list[dict[str, Any]] = json.loads(result.stdout)
    return judged
