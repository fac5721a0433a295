"""`make run` (bmsuploader run-local): the whole pipeline, twice, as an operator sees it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bmsuploader_local.run import run_local

pytestmark = pytest.mark.integration


def test_first_run_posts_the_newest_second_posts_nothing_new_upload_posts_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SOURCES_FILE", raising=False)

    assert run_local(state_dir=tmp_path) == 0
    first = capsys.readouterr().out
    assert run_local(state_dir=tmp_path) == 0
    second = capsys.readouterr().out
    assert run_local(state_dir=tmp_path, new_upload=True) == 0
    third = capsys.readouterr().out

    # the sample sources' first_run policies: the uploader's newest 2, the table's newest chart,
    # each on all five destinations of the sample sources
    assert "poster: 15 post(s)" in first
    for destination in ("x", "bluesky", "mastodon", "misskey", "discord"):
        assert len(re.findall(rf"\[posted\] {destination}\s", first)) == 3, destination
    assert re.search(r"sample-uploader\s+20\s+2\s+2\s+0\s+baseline", first)
    assert re.search(r"sample-table\s+30\s+1\s+1\s+0\s+baseline", first)
    assert "【サンプル差分表】sl" in first
    assert "poster: 0 post(s)" in second
    assert re.search(r"sample-uploader\s+(-|\d+)\s+0\s+0\s+0", second)
    assert re.search(r"sample-feed\s+\d+\s+0\s+0\s+0", second)
    assert re.search(r"sample-table\s+30\s+0\s+0\s+0", second)
    # the one new upload, exactly once on each network, on the uploader and as a chart of the table
    assert "poster: 10 post(s)" in third
    assert third.count("[posted]") == 10
    assert third.count("【追加1】") == 10
    assert all(int(w) <= 280 for w in re.findall(r"\[posted\] x\s+length\s+(\d+)", first + third))
    assert "queue: 0 waiting, dead-letter queue: 0" in third
    assert (tmp_path / "lambda.log").read_text(encoding="utf-8").startswith("{")


def test_dry_run_posts_to_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SOURCES_FILE", raising=False)

    run_local(state_dir=tmp_path, dry_run=True)

    out = capsys.readouterr().out
    assert "X: DRY_RUN" in out
    assert "id dry-run-" in out
    assert "[dry-run]" in out and "[posted]" not in out


def test_ctrl_c_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bmsuploader.cli", "run-local", "--state-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "lambda.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # interrupt once moto is up and the fetcher runs, not during imports
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=60)

    # 130 from main(); now and then the interpreter's own exit still reports the signal
    # (-SIGINT, which a shell shows as 130 too). Either way: one line, no traceback.
    assert process.returncode in (130, -signal.SIGINT)
    assert err.strip().splitlines()[-1] == "bmsuploader: interrupted"
    assert "Traceback" not in err
