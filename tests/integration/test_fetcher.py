"""The fetcher handler, end to end: moto server over HTTP + the fake uploader site."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bmsuploader.aws.state import SeenEntries, StateStore
from bmsuploader.contract.errors import ConfigError
from bmsuploader.contract.message import deduplication_id
from bmsuploader.fetch.cycle import CONCURRENCY, PER_HOST
from bmsuploader_local.lambda_runtime import FakeContext, load_handler
from bmsuploader_local.uploader_site import UploaderSite
from tests.integration.conftest import by_source, drain, scheduled_event, write_sources

pytestmark = pytest.mark.integration

Run = Callable[..., dict[str, Any]]


@contextlib.contextmanager
def serving(body: bytes, content_type: str) -> Iterator[str]:
    """A loopback server answering every GET with ``body``; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_boards_listed_host_by_host_are_read_with_every_host_busy(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_fetcher: Run
) -> None:
    """A read worker waiting at a busy host's gate reads nothing. Sources are usually listed
    host by host (a site's boards together), so the hosts take turns: all of them are read at
    once, PER_HOST requests each, not PER_HOST or two hosts' worth at a time."""
    hosts, boards = CONCURRENCY // PER_HOST, 4
    lock = threading.Lock()
    in_flight: Counter[object] = Counter()
    most: Counter[object] = Counter()

    def counted(host: int, respond: Callable[[Any], None]) -> Callable[[Any], None]:
        def run(handler: Any) -> None:
            with lock:
                for key in (host, "all"):
                    in_flight[key] += 1
                    most[key] = max(most[key], in_flight[key])
            try:
                respond(handler)
            finally:
                with lock:
                    in_flight[host] -= 1
                    in_flight["all"] -= 1

        return run

    with contextlib.ExitStack() as running:
        sites = [running.enter_context(UploaderSite.with_sample_uploads(3)) for _ in range(hosts)]
        for host, site in enumerate(sites):
            site.latency = 0.3
            site._respond = counted(host, site._respond)  # type: ignore[method-assign]
        path = tmp_path / "sources.toml"
        path.write_text(
            "".join(
                f'[[source]]\nname = "h{host}-b{board}"\npreset = "classic-cgi"\n'
                f'url = "{site.listing_url}?board={board}"\n\n'
                for host, site in enumerate(sites)
                for board in range(boards)
            ),
            encoding="utf-8",
        )
        monkeypatch.setenv("SOURCES_FILE", str(path))
        result = run_fetcher()

    assert [s["outcome"] for s in result["sources"]] == ["baseline"] * hosts * boards
    assert max(most[host] for host in range(hosts)) == PER_HOST  # old CGI sites are not hammered
    assert most["all"] == CONCURRENCY  # and every host is read at once


def test_first_run_records_a_baseline_and_posts_nothing(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run
) -> None:
    result = run_fetcher()

    report = by_source(result)
    assert report["uploader"]["outcome"] == "baseline"
    assert report["uploader"]["found"] == 20
    assert report["feed"]["found"] == 20
    assert result["enqueued"] == 0
    assert drain(stack.queue_url) == []
    store = StateStore.on(stack.table_name)
    assert store.seen.unseen("uploader", [f"{i:05d}" for i in range(11, 31)]) == set()


def test_new_uploads_are_enqueued_oldest_first_with_group_and_dedup_ids(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run
) -> None:
    run_fetcher()
    first = site.add_upload("★5 新しい差分 [ANOTHER]")
    second = site.add_upload("★6 もう一つ [INSANE]")

    result = run_fetcher()

    assert by_source(result)["uploader"]["enqueued"] == 2
    assert by_source(result)["feed"]["enqueued"] == 2
    messages = drain(stack.queue_url)
    uploader = [(a, m) for a, m in messages if m.source == "uploader"]
    assert [m.entry_id for _, m in uploader] == [first, second]
    attributes, message = uploader[0]
    assert attributes["MessageGroupId"] == "uploader"
    assert attributes["MessageDeduplicationId"] == deduplication_id("uploader", first)
    assert message.title == "★5 新しい差分 [ANOTHER]"
    assert message.url == f"{site.base_url}/up/src/up{first}.zip"
    assert message.filename == f"up{first}.zip"
    assert message.schema_version == 1


def test_a_second_run_with_nothing_new_sends_nothing_and_uses_conditional_get(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run
) -> None:
    run_fetcher()
    site.add_upload("★1 new")
    run_fetcher()
    drain(stack.queue_url)
    site.requests.clear()

    with warnings.catch_warnings():
        # Every line a run prints must be JSON: no "No application metrics to publish".
        warnings.simplefilter("error")
        result = run_fetcher()

    assert result["enqueued"] == 0
    assert by_source(result)["uploader"]["outcome"] == "not_modified"
    assert by_source(result)["feed"]["outcome"] == "not_modified"
    assert drain(stack.queue_url) == []


def test_post_newest_first_run_policy(
    stack: Any, site: UploaderSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_fetcher: Run
) -> None:
    path = write_sources(
        tmp_path / "s.toml", site, feed=False, first_run='{ policy = "post_newest", count = 3 }'
    )
    monkeypatch.setenv("SOURCES_FILE", str(path))

    result = run_fetcher()

    assert result["enqueued"] == 3
    assert [m.entry_id for _, m in drain(stack.queue_url)] == ["00028", "00029", "00030"]


def test_catch_up_walks_older_pages_until_a_seen_entry(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.rows_per_page = 5
    run_fetcher()
    added = [site.add_upload(f"★{i} burst") for i in range(12)]
    site.requests.clear()

    result = run_fetcher()

    uploader = by_source(result)["uploader"]
    assert uploader["pages"] == 3
    assert uploader["enqueued"] == 12
    assert [m.entry_id for _, m in drain(stack.queue_url) if m.source == "uploader"] == added
    assert "/up/upload.cgi?page=3" in site.requests


def test_catch_up_stops_at_the_end_of_the_listing(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run
) -> None:
    site.rows_per_page = 5
    run_fetcher()
    site.uploads.clear()  # the uploader deleted every old file: nothing seen is listed any more
    added = [site.add_upload(f"★{i} fresh start") for i in range(7)]

    result = run_fetcher()

    uploader = by_source(result)["uploader"]
    assert uploader["outcome"] == "ok"
    assert uploader["pages"] == 2  # page 2 is short: the end; page 3 is never asked for
    assert [m.entry_id for _, m in drain(stack.queue_url) if m.source == "uploader"] == added
    assert "/up/upload.cgi?page=3" not in site.requests


def test_a_maintenance_page_on_page_two_loses_nothing_and_keeps_order(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run
) -> None:
    site.rows_per_page = 5
    run_fetcher()
    added = [site.add_upload(f"★{i} burst") for i in range(7)]  # page 1: 5 new, page 2: 2 new + seen
    site.broken_pages = {2}

    broken = run_fetcher()

    uploader = by_source(broken)["uploader"]
    assert uploader["outcome"] == "format_error"
    assert "older page 2" in uploader["error"]
    assert uploader["enqueued"] == 0  # nothing of the burst is sent or marked seen
    assert [m for _, m in drain(stack.queue_url) if m.source == "uploader"] == []

    site.broken_pages = set()
    healed = run_fetcher()

    assert by_source(healed)["uploader"]["enqueued"] == 7
    assert [m.entry_id for _, m in drain(stack.queue_url) if m.source == "uploader"] == added


def test_a_row_less_older_page_with_the_end_of_listing_text_is_the_end(
    stack: Any, site: UploaderSite, tmp_path: Path, run_fetcher: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sources(tmp_path / "s.toml", site, feed=False, end_of_listing='"メンテナンス中"')
    monkeypatch.setenv("SOURCES_FILE", str(path))
    site.rows_per_page = 5
    run_fetcher()
    site.uploads.clear()
    added = [site.add_upload(f"★{i} exactly one page") for i in range(5)]
    site.broken_pages = {2}  # here the row-less page carries the configured end-of-listing text

    result = run_fetcher()

    assert by_source(result)["uploader"]["outcome"] == "ok"
    assert [m.entry_id for _, m in drain(stack.queue_url)] == added


def test_cap_defers_the_rest_to_the_next_run_in_order_and_drops_nothing(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_fetcher()
    added = [site.add_upload(f"★{i} capped") for i in range(5)]
    monkeypatch.setenv("MAX_ENQUEUE_PER_RUN", "3")

    first = run_fetcher()
    second = run_fetcher()

    assert by_source(first)["uploader"]["enqueued"] == 3
    assert by_source(first)["uploader"]["deferred"] == 2
    # The cap is per run, across sources: the feed waited entirely.
    assert by_source(first)["feed"]["enqueued"] == 0
    assert by_source(second)["uploader"]["enqueued"] == 2
    # The listing did not change, yet the second run must not get a 304:
    # validators are only kept once nothing is left waiting.
    assert by_source(second)["uploader"]["outcome"] == "ok"
    assert [m.entry_id for _, m in drain(stack.queue_url) if m.source == "uploader"] == added


def test_a_broken_page_is_a_format_error_not_nothing_new_and_other_sources_go_ahead(
    stack: Any,
    site: UploaderSite,
    sources_file: Path,
    run_fetcher: Run,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_fetcher()
    new = site.add_upload("★3 after maintenance")
    capsys.readouterr()
    site.broken_pages = {1}  # the uploader listing shows a maintenance page; the feed is fine

    result = run_fetcher()
    site.broken_pages = set()

    report = by_source(result)
    assert report["uploader"]["outcome"] == "format_error"
    assert "uploader" in report["uploader"]["error"]
    assert report["feed"]["enqueued"] == 1
    out = capsys.readouterr().out
    error_lines = [
        json.loads(line) for line in out.splitlines() if '"format_error"' in line and '"level"' in line
    ]
    assert error_lines and error_lines[0]["source"] == "uploader"
    assert error_lines[0]["level"] == "ERROR"
    emf = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    per_source = [m for m in emf if m.get("source") == "uploader"]
    assert per_source and per_source[0]["FormatErrors"] == [1.0]
    state = StateStore.on(stack.table_name).sources.run_state(["uploader"], "2026-11")[0]["uploader"]
    assert state.consecutive_failures == 1
    # Nothing was lost: the next run picks the entry up.
    result = run_fetcher()
    assert by_source(result)["uploader"]["enqueued"] == 1
    assert new in [m.entry_id for _, m in drain(stack.queue_url) if m.source == "uploader"]
    state = StateStore.on(stack.table_name).sources.run_state(["uploader"], "2026-11")[0]["uploader"]
    assert state.consecutive_failures == 0


def test_a_site_down_is_a_fetch_error_for_that_source_only(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "sleep", lambda _s: None)  # the fetcher's retry backoff
    run_fetcher()
    site.add_upload("★4 while down")
    site.failing_paths = {"/up/upload.cgi": 503}  # the listing is down, the feed is not

    result = run_fetcher()

    assert by_source(result)["uploader"]["outcome"] == "fetch_error"
    assert "503" in by_source(result)["uploader"]["error"]
    assert by_source(result)["feed"]["enqueued"] == 1


def test_an_empty_feed_is_a_quiet_source_until_its_first_upload(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_fetcher: Run
) -> None:
    # A new uploader's feed lists nothing yet: normal, not a format error every run.
    with UploaderSite() as new_site:
        path = tmp_path / "s.toml"
        path.write_text(f'[[source]]\nname = "feed"\nkind = "rss"\nurl = "{new_site.feed_url}"\n')
        monkeypatch.setenv("SOURCES_FILE", str(path))

        first = by_source(run_fetcher())["feed"]
        upload = new_site.add_upload("★1 はじめての差分")
        second = by_source(run_fetcher())["feed"]

    assert (first["outcome"], first["found"], first["error"]) == ("baseline", 0, None)
    assert (second["outcome"], second["enqueued"]) == ("ok", 1)
    assert [m.entry_id for _, m in drain(stack.queue_url)] == [f"up{upload}"]


def test_a_second_concurrent_run_exits_cleanly_and_an_expired_lease_is_taken_over(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run
) -> None:
    store = StateStore.on(stack.table_name)
    now = int(time.time())
    store.lease.acquire("other-run", now=now, ttl_seconds=300)

    skipped = run_fetcher()

    assert skipped["outcome"] == "skipped_lease_held"
    assert skipped["lease_holder"] == "other-run"
    assert site.requests == []

    # The other run crashed: its lease expires on its own and never blocks later runs.
    boto3.client("dynamodb").put_item(
        TableName=stack.table_name,
        Item={
            "pk": {"S": "LEASE"},
            "sk": {"S": "fetcher"},
            "owner": {"S": "crashed-run"},
            "expires_at": {"N": str(now - 1)},
        },
    )
    assert run_fetcher()["outcome"] == "completed"
    # And the lease was released at the end of the run.
    assert "Item" not in boto3.client("dynamodb").get_item(
        TableName=stack.table_name, Key={"pk": {"S": "LEASE"}, "sk": {"S": "fetcher"}}
    )


def test_a_crash_between_send_and_mark_resends_and_loses_nothing(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_fetcher()
    new = site.add_upload("★9 crash test")
    original = SeenEntries.mark_many

    def crash(self: SeenEntries, entries: Any, *, now: Any) -> None:
        raise SystemExit("simulated crash after SendMessageBatch")

    monkeypatch.setattr(SeenEntries, "mark_many", crash)
    with pytest.raises(SystemExit):
        run_fetcher()
    monkeypatch.setattr(SeenEntries, "mark_many", original)
    # The crashed run's lease is still there; let it expire.
    boto3.client("dynamodb").delete_item(
        TableName=stack.table_name, Key={"pk": {"S": "LEASE"}, "sk": {"S": "fetcher"}}
    )

    result = run_fetcher()

    assert by_source(result)["uploader"]["enqueued"] == 1  # sent again...
    delivered = [m.entry_id for _, m in drain(stack.queue_url) if m.source == "uploader"]
    assert delivered == [new]  # ...and SQS FIFO deduplicated it within 5 minutes
    assert StateStore.on(stack.table_name).seen.unseen("uploader", [new]) == set()


def test_a_bad_sources_file_fails_with_a_message_naming_the_source_and_field(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_fetcher: Run
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[source]]\nname = "up"\nkind = "html"\nurl = "http://x/"\npreset = "nope"\n')
    monkeypatch.setenv("SOURCES_FILE", str(bad))

    with pytest.raises(ConfigError, match=r"source 'up'.*preset.*'nope'"):
        run_fetcher()


def test_page_validators_do_not_outlive_a_config_change(
    stack: Any, site: UploaderSite, tmp_path: Path, run_fetcher: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_fetcher()
    path = tmp_path / "s.toml"
    write_sources(path, site, feed=False, selectors='{ row = "//tr[td[9]]" }')
    monkeypatch.setenv("SOURCES_FILE", str(path))

    result = run_fetcher()

    # The page did not change, but the config that reads it did: a 304 would hide the broken selector.
    assert by_source(result)["uploader"]["outcome"] == "format_error"


def test_a_page_that_loses_characters_in_decoding_says_so(
    stack: Any,
    tmp_path: Path,
    run_fetcher: Run,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = "<table><tr><td><a href='up001.zip'>up001.zip</a></td><td>曲名</td></tr></table>".encode("cp932")
    broken = page.replace("曲名".encode("cp932"), b"\x82\xff\x82\xff")  # not cp932

    with serving(broken, "text/html; charset=Shift_JIS") as base:
        url = f"{base}/upload.cgi"
        path = tmp_path / "s.toml"
        path.write_text(f'[[source]]\nname = "lossy"\nkind = "html"\npreset = "classic-cgi"\nurl = "{url}"\n')
        monkeypatch.setenv("SOURCES_FILE", str(path))
        result = run_fetcher()

    assert by_source(result)["lossy"]["lossy_decodes"] == 1
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    warned = [line for line in lines if line.get("outcome") == "lossy_decode"]
    assert warned and warned[0]["source"] == "lossy" and "U+FFFD" in warned[0]["message"]
    assert '"LossyDecodes"' in out


def test_a_run_out_of_time_leaves_the_remaining_sources_for_the_next_run(
    stack: Any, site: UploaderSite, sources_file: Path, run_fetcher: Run
) -> None:
    run_fetcher()
    added = site.add_upload("★1 late")
    app = load_handler("fetcher")

    # 12 s left: the run keeps 10 for its last writes, so no source may start.
    starved = app.lambda_handler(scheduled_event(), FakeContext(timeout_seconds=12))

    assert {s["outcome"] for s in starved["sources"]} == {"out_of_time"}
    assert drain(stack.queue_url) == []
    healthy = run_fetcher()  # the lease was released, and nothing was marked seen
    assert by_source(healthy)["uploader"]["enqueued"] == 1
    assert [m.entry_id for _, m in drain(stack.queue_url) if m.source == "uploader"] == [added]


def test_feed_items_sharing_a_guid_are_logged_and_counted(
    stack: Any,
    tmp_path: Path,
    run_fetcher: Run,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed = (
        Path(__file__).resolve().parents[1] / "fixtures" / "pages" / "feed_rss_duplicate_guid.xml"
    ).read_bytes()

    with serving(feed, "application/rss+xml") as base:
        path = tmp_path / "s.toml"
        path.write_text(f'[[source]]\nname = "dup"\nkind = "rss"\nurl = "{base}/"\n')
        monkeypatch.setenv("SOURCES_FILE", str(path))
        result = run_fetcher()

    assert by_source(result)["dup"]["repeated_ids"] >= 1
    out = capsys.readouterr().out
    warned = [json.loads(line) for line in out.splitlines() if '"repeated_ids"' in line and '"level"' in line]
    assert warned and warned[0]["source"] == "dup" and "twice" in warned[0]["message"]
    assert '"RepeatedIds"' in out
