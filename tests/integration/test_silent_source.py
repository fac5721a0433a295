"""A source that lists no new entry for SilentSourceHours is reported silent: a metric per run
(what SilentSourceAlarm watches), a log line, and `bmsuploader status`. A new entry ends it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bmsuploader.aws.state import StateStore, budget_month
from bmsuploader.cli import main
from bmsuploader_local.aws import StackResources, register_stack
from bmsuploader_local.uploader_site import UploaderSite

from .conftest import write_sources

pytestmark = pytest.mark.integration


def silent_metrics(out: str) -> dict[str, float]:
    """SilentSource per source, from the EMF lines of one run."""
    found = {}
    for line in out.splitlines():
        if '"_aws"' in line and '"source"' in line:
            document = json.loads(line)
            found[document["source"]] = document.get("SilentSource", [0.0])[0]
    return found


def test_a_source_without_new_entries_for_the_threshold_is_silent_until_one_appears(
    *,
    stack: StackResources,
    site: UploaderSite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    run_fetcher: Callable[..., dict[str, Any]],
) -> None:
    sources = write_sources(tmp_path / "sources.toml", site, feed=False)
    monkeypatch.setenv("SOURCES_FILE", str(sources))
    monkeypatch.setenv("SILENT_SOURCE_HOURS", "24")
    register_stack(replace(stack, parameters={**stack.parameters, "SilentSourceHours": "24"}))
    store = StateStore.on(stack.table_name)

    run_fetcher()  # the baseline: watched from now on
    assert silent_metrics(capsys.readouterr().out) == {"uploader": 0.0}

    # A day and a bit without anything new.
    states, _ = store.sources.run_state(["uploader"], budget_month(datetime.now(UTC)))
    long_ago = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    store.sources.put("uploader", replace(states["uploader"], last_new_at=long_ago))
    run_fetcher()

    out = capsys.readouterr().out
    assert silent_metrics(out) == {"uploader": 1.0}
    assert any('"outcome":"silent"' in line and '"source":"uploader"' in line for line in out.splitlines())
    code = main(["status", "--stack", stack.stack_name, "--sources", str(sources), "--json"])
    status = json.loads(capsys.readouterr().out)
    assert code == 0
    assert status["sources"][0]["health"] == "silent"
    assert status["sources"][0]["last_new_at"] == long_ago

    site.add_upload("新着")
    run_fetcher()

    assert silent_metrics(capsys.readouterr().out) == {"uploader": 0.0}
    states, _ = store.sources.run_state(["uploader"], budget_month(datetime.now(UTC)))
    assert states["uploader"].last_new_at != long_ago
