"""Difficulty tables: the time to parse a 5,000-chart table and the AWS calls of its runs.

    .venv/bin/python scripts/bench_tables.py

A baseline run, an idle run (every URL answers 304), and a run after one chart was added,
over the sample site's table (moto server, no network), then the parse time of the data.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bench_env import CALLS, clear_counts, count_every_aws_call, local_stack, quiet, scheduled_event

CHARTS = 5000


def main() -> int:
    import httpx

    from bmsuploader.config.sources import parse_sources
    from bmsuploader.fetch.json_parsing import TableHeader, parse_charts
    from bmsuploader_local.lambda_runtime import FakeContext, load_handler
    from bmsuploader_local.uploader_site import UploaderSite

    event = scheduled_event()
    with (
        local_stack("bench-tables"),
        UploaderSite.with_sample_uploads(CHARTS) as site,
        tempfile.TemporaryDirectory() as tmp,
    ):
        sources = Path(tmp) / "sources.toml"
        sources.write_text(f'[[source]]\nname = "table"\npreset = "bmstable"\nurl = "{site.table_url}"\n')
        os.environ.update(SOURCES_FILE=str(sources), DRY_RUN="true")
        fetcher = load_handler("fetcher")
        count_every_aws_call()

        def run(label: str) -> None:
            clear_counts()
            site.requests.clear()
            started = time.perf_counter()
            with quiet():
                result = fetcher.lambda_handler(event, FakeContext(timeout_seconds=120))
            wall = time.perf_counter() - started
            (report,) = result["sources"]
            print(
                f"  {label:<28} {sum(CALLS.values()):>3} AWS calls {dict(sorted(CALLS.items()))}; "
                f"HTTP {len(site.requests)} requests; outcome {report['outcome']}, "
                f"enqueued {report['enqueued']}; {wall:.2f} s"
            )

        print(f"fetcher runs over a {CHARTS:,}-chart table")
        run("first run (baseline)")
        run("idle (304 x 3)")
        site.add_upload("★12 new chart")
        run("one chart added")
        run("idle again")

        data = httpx.get(f"{site.base_url}/table/data/charts.json").text
        table = parse_sources({"source": [{"name": "t", "preset": "bmstable", "url": "https://t.example/"}]})
        source = table.sources[0]
        header = TableHeader("t", "sl", "https://t.example/data.json")
        rounds = 10
        started = time.perf_counter()
        for _ in range(rounds):
            entries = parse_charts(source, data, header.data_url, header=header)
        per_parse = (time.perf_counter() - started) / rounds
        print(
            f"parse of the data JSON ({len(data.encode()) / 1_048_576:.2f} MiB, {len(entries):,} charts): "
            f"{per_parse * 1000:.0f} ms (mean of {rounds})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
