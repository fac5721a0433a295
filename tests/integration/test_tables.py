"""Difficulty tables through the fetcher handler: moto over HTTP, the sample site's table."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient

from bmsuploader.cli import main
from bmsuploader.contract.message import deduplication_id
from bmsuploader_local.uploader_site import UploaderSite
from tests.integration.conftest import by_source, drain

pytestmark = pytest.mark.integration

Run = Callable[..., dict[str, Any]]
TABLE_PATHS = ["/table/", "/table/header.json", "/table/data.json", "/table/data/charts.json"]


@pytest.fixture
def big_site() -> Iterator[UploaderSite]:
    with UploaderSite.with_sample_uploads(5000) as running:
        yield running


@pytest.fixture
def table_sources(tmp_path: Path, big_site: UploaderSite, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(f'[[source]]\nname = "table"\npreset = "bmstable"\nurl = "{big_site.table_url}"\n')
    monkeypatch.setenv("SOURCES_FILE", str(path))
    return path


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    calls: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def counted(self: Any, operation: str, params: Any) -> Any:
        calls[operation] += 1
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counted)
    return calls


def test_a_5000_chart_table_baselines_then_idles_on_three_304s_and_three_aws_calls(
    stack: Any, big_site: UploaderSite, table_sources: Path, run_fetcher: Run, aws_calls: Counter[str]
) -> None:
    first = by_source(run_fetcher())["table"]
    assert (first["outcome"], first["found"], first["enqueued"]) == ("baseline", 5000, 0)
    assert big_site.requests == TABLE_PATHS  # the data_url is relative and redirects
    assert drain(stack.queue_url) == []
    big_site.requests.clear()
    aws_calls.clear()

    started = time.perf_counter()
    idle = by_source(run_fetcher())["table"]
    elapsed = time.perf_counter() - started

    assert idle["outcome"] == "not_modified"
    assert big_site.requests == TABLE_PATHS  # each conditional, each answered 304
    assert sum(aws_calls.values()) == 3, aws_calls  # lease, one read, one write
    print(f"idle run over a 5,000-chart table: {dict(aws_calls)} in {elapsed:.2f} s")


def test_a_new_chart_is_announced_once_with_the_tables_symbol_and_level(
    stack: Any, big_site: UploaderSite, table_sources: Path, run_fetcher: Run
) -> None:
    run_fetcher()
    upload = big_site.add_upload("★12 新しい差分 [INSANE]")

    result = by_source(run_fetcher())["table"]
    again = by_source(run_fetcher())["table"]

    assert (result["new"], result["enqueued"]) == (1, 1)
    ((attributes, message),) = drain(stack.queue_url)
    assert attributes["MessageDeduplicationId"] == deduplication_id("table", message.entry_id)
    assert message.title == "★12 新しい差分 [INSANE]"
    assert message.url == f"{big_site.base_url}/up/src/up{upload}.zip"  # url_diff before url
    assert message.extra is not None
    assert (message.extra["symbol"], message.extra["table"]) == ("sl", "サンプル差分表")
    assert message.extra["level"] == str(5000 % 12 + 1)
    assert again["enqueued"] == 0
    assert again["outcome"] == "not_modified"


def test_preview_follows_a_table_page_to_its_header_and_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with UploaderSite.with_sample_uploads(3) as small:
        sources = tmp_path / "sources.toml"
        sources.write_text(f'[[source]]\nname = "t"\npreset = "bmstable"\nurl = "{small.table_url}"\n')
        code = main(["preview", "--sources", str(sources), "--source", "t", "--url", small.table_url])
        newest = f"{small.base_url}/up/src/up00003.zip"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert code == 0
    assert len(lines) == 3
    assert lines[0]["text"].startswith("【サンプル差分表】sl")
    assert lines[0]["text"].endswith(newest)
