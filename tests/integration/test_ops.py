"""`bmsuploader status`, `explain` and `redrive` against a stack on the moto server.

The world they look at is made by the real handlers, as in production: a first
fetcher run posts the sample uploader's newest four entries (the rest is the
baseline) while a second source's feed answers 404; the poster, with a spend
limit of one post, gets a 400 from X for the first (dead-lettered, with its
reason), posts the second and sets the last two aside in the backlog; a new
upload then waits on the queue after a second fetcher run. The commands find
the stack through its CloudFormation outputs, as they find a deployed one.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from bmsuploader.aws.queue import EntryQueue, QueueControl
from bmsuploader.cli import main
from bmsuploader.contract.message import EntryMessage, deduplication_id
from bmsuploader.ops.explain import HOLD_SECONDS
from bmsuploader_local.aws import StackResources, register_stack
from bmsuploader_local.fake_x import FakeX
from bmsuploader_local.lambda_runtime import (
    FakeContext,
    delete_succeeded,
    invoke,
    load_handler,
    receive_as_event,
)
from bmsuploader_local.uploader_site import UploaderSite

from .conftest import drain, scheduled_event

pytestmark = pytest.mark.integration

X_REJECTS = "The Tweet text contains something X does not accept."


def sources_toml(site: UploaderSite, template: str = "【新着差分】{title} / {url}") -> str:
    return f"""
[[source]]
name = "uploader"
kind = "html"
preset = "classic-cgi"
url = "{site.listing_url}"
first_run = {{ policy = "post_newest", count = 4 }}
template = "{template}"

[[source]]
name = "broken"
kind = "rss"
url = "{site.feed_url}"
"""


@dataclass
class World:
    stack: StackResources
    site: UploaderSite
    fake_x: FakeX
    sources: Path
    tmp: Path
    capsys: pytest.CaptureFixture[str]

    def run_fetcher(self) -> dict[str, Any]:
        context = FakeContext(function_name=self.stack.fetcher_function_name, timeout_seconds=120)
        result: dict[str, Any] = invoke(load_handler("fetcher"), scheduled_event(), context)
        return result

    def run_poster(self) -> None:
        event = receive_as_event(self.stack.queue_url)
        context = FakeContext(function_name=self.stack.poster_function_name, timeout_seconds=30)
        response = invoke(load_handler("poster"), event, context)
        delete_succeeded(self.stack.queue_url, event, response)

    def cli(self, *args: str) -> tuple[int, str, str]:
        """``bmsuploader COMMAND ARGS --stack <this stack>``, with no samconfig.toml around."""
        self.capsys.readouterr()  # the handlers' log lines
        command = [*args, "--stack", self.stack.stack_name, "--config-file", str(self.tmp / "absent.toml")]
        code = main([*command, "--sources", str(self.sources)])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def json(self, *args: str) -> Any:
        code, out, err = self.cli(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def world(
    stack: StackResources,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[World]:
    with UploaderSite.with_sample_uploads(30, rows_per_page=20) as site, FakeX() as fake_x:
        site.failing_paths["/feed/rss.xml"] = 404
        sources = tmp_path / "sources.toml"
        sources.write_text(sources_toml(site), encoding="utf-8")
        for name, value in {
            "SOURCES_FILE": str(sources),
            "X_API_BASE_URL": fake_x.base_url,
            "DRY_RUN": "false",
            "MONTHLY_SPEND_LIMIT_USD": "0.2",  # one post with a link
        }.items():
            monkeypatch.setenv(name, value)
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
        # As deployed with that limit: status reads it from the stack's parameters.
        register_stack(replace(stack, parameters={**stack.parameters, "MonthlySpendLimitUSD": "0.2"}))
        w = World(stack, site, fake_x, sources, tmp_path, capsys)

        w.run_fetcher()  # uploader: 00027..00030 enqueued, 00011..00026 baseline; broken: 404
        fake_x.script(FakeX.bad_request(X_REJECTS), FakeX.normal())
        w.run_poster()  # 00027 dead-lettered, 00028 posted, 00029 and 00030 set aside
        site.add_upload("新しい差分")  # 00031
        w.run_fetcher()  # 00031 enqueued: it waits behind the backlog; broken: 404 again

        assert len(fake_x.posts) == 1
        yield w


def test_status_shows_sources_queues_backlog_spend_and_lease(world: World) -> None:
    status = world.json("status")

    sources = {s["name"]: s for s in status["sources"]}
    uploader, broken = sources["uploader"], sources["broken"]
    assert uploader["health"] == "ok"
    assert uploader["entries_seen"] == 21  # page 1 (20) and the new upload
    assert uploader["backlog"] == 2
    assert uploader["consecutive_failures"] == 0
    assert uploader["last_success_at"] and uploader["last_new_at"]
    assert broken["health"] == "failing"
    assert broken["consecutive_failures"] == 2
    assert "404" in broken["last_error"]
    assert broken["entries_seen"] == 0
    assert status["queue"]["waiting"] == 1  # 00031
    assert status["dead_letter_queue"] == {"messages": 1}  # 00027
    assert status["schedule_dead_letter_queue"] == {"messages": 0}
    assert status["backlog"] == {"entries": 2, "pending": True}
    spend = status["spend"]
    assert (spend["posts"], spend["spend_usd"], spend["limit_usd"]) == (1, "0.2", "0.2")
    assert spend["posts_left"] == 0
    assert status["lease"] is None  # each run gave it back

    code, table, err = world.cli("status")
    assert code == 0 and not err
    lines = table.splitlines()
    assert any(line.split()[:2] == ["uploader", "ok"] for line in lines)
    assert any(line.split()[:2] == ["broken", "failing"] for line in lines)
    assert any(line.startswith("  broken: ") and "404" in line for line in lines)
    assert "dead letters  1" in table and "backlog       2 entries" in table
    assert "1 post(s), USD 0.200 of USD 0.200 (100 %)" in table
    assert "lease         free" in table


def test_explain_says_where_each_entry_is(world: World) -> None:
    def explained(entry_id: str, source: str = "uploader") -> dict[str, Any]:
        return world.json("explain", source, entry_id)  # type: ignore[no-any-return]

    posted = explained("00028")
    assert posted["verdict"] == "posted"
    tweet = world.fake_x.posts[0]["id"]
    assert posted["post"]["tweet_id"] == tweet
    assert posted["tweet_url"] == f"https://x.com/i/web/status/{tweet}"
    assert posted["post"]["text"] == world.fake_x.posts[0]["text"]

    dead = explained("00027")
    assert dead["verdict"] == "dead_letter"
    assert X_REJECTS in dead["summary"] and X_REJECTS in dead["dead_letters"][0]["reason"]

    parked = explained("00030")
    assert parked["verdict"] == "backlog"
    assert parked["backlog"]["place"] == 2 and parked["backlog"]["of"] == 2

    assert explained("00031")["verdict"] == "queued"
    baseline = explained("00015")
    assert baseline["verdict"] == "baseline" and baseline["baseline"]
    assert explained("00099")["verdict"] == "not_seen"
    failing = explained("00001", source="broken")
    assert failing["verdict"] == "not_seen" and "404" in failing["summary"]

    # Every explain above looked at the dead-letter queue, which holds what it read for
    # HOLD_SECONDS (explain has no write permission to give it back): let that pass.
    time.sleep(HOLD_SECONDS + 0.5)
    code, text, _ = world.cli("explain", "uploader", "00027")
    assert code == 0
    assert text.startswith("uploader / 00027 on x: dead letter")
    assert 'filter source = "uploader" and entry_id = "00027"' in text  # the query to paste
    assert world.stack.outputs["PosterLogGroupName"] in text


def test_redrive_previews_then_moves_back_with_a_fresh_dedup_id_and_drops_what_was_posted(
    world: World,
) -> None:
    # A copy of the posted 00028 reached the dead-letter queue too (e.g. after 200 receives).
    posted_body = EntryMessage(
        source="uploader", entry_id="00028", title="t", url="http://x.test/u", fetched_at=datetime.now(UTC)
    ).to_json()
    QueueControl(world.stack.queue_url, world.stack.dlq_url).dead_letter(
        body=posted_body, group_id="uploader", deduplication_id="copy-00028", reason="test copy"
    )
    # Fixed meanwhile: the template changed.
    world.sources.write_text(sources_toml(world.site, "【新作】{title} / {url}"), encoding="utf-8")

    dry = world.json("redrive", "--preview")

    assert not dry["acted"]
    actions = {m["entry_id"]: m for m in dry["messages"]}
    assert actions["00027"]["action"] == "redrive" and X_REJECTS in actions["00027"]["reason"]
    assert actions["00027"]["text"].startswith("【新作】")  # rendered with the current sources file
    assert actions["00027"]["limit"] == 280  # measured by X's rule: it is X's message
    assert actions["00028"]["action"] == "drop"
    assert dlq_count(world.stack) == 2  # a dry run changes nothing, and leaves them visible

    done = world.json("redrive", "--yes")

    by_entry = {m["entry_id"]: m["message_id"] for m in done["messages"]}
    assert done["redriven"] == [by_entry["00027"]]
    assert done["dropped"] == [by_entry["00028"]]
    assert dlq_count(world.stack) == 0
    queued = [(attrs, message.entry_id) for attrs, message in drain(world.stack.queue_url)]
    assert [entry for _, entry in queued] == ["00031", "00027"]
    assert queued[1][0]["MessageDeduplicationId"] != deduplication_id("uploader", "00027")

    assert world.json("redrive")["messages"] == []


def dlq_count(stack: StackResources) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=stack.dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_make_run_then_make_status_and_explain_read_what_the_run_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bmsuploader_local.run import run_local

    monkeypatch.delenv("SOURCES_FILE", raising=False)
    assert run_local(state_dir=tmp_path) == 0
    posted = re.findall(r"\[posted\] x\s+length\s+\d+\s+id (\d+)", capsys.readouterr().out)

    assert main(["status", "--local", "--state-dir", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["stack"] == "bmsuploader-local"
    assert {s["name"]: s["entries_seen"] for s in status["sources"]} == {
        "sample-uploader": 20,
        "sample-feed": 20,
        "sample-table": 30,
    }
    # the newest of each sample source; the spend counts X's posts (the other networks are free)
    assert status["spend"]["posts"] == len(posted) == 3
    assert (status["queue"]["waiting"], status["dead_letter_queue"]["messages"]) == (0, 0)

    # The run's newest upload was posted: explain finds its record under the key Lambda would use.
    assert (
        main(["explain", "sample-uploader", "00030", "--local", "--state-dir", str(tmp_path), "--json"]) == 0
    )
    explained = json.loads(capsys.readouterr().out)
    assert explained["verdict"] == "posted" and explained["post"]["tweet_id"] in posted

    # Messages left on the queues, even ones in flight, are kept between local runs.
    from bmsuploader_local.saved_stack import local_stack

    with local_stack(tmp_path, save=True) as resources:
        QueueControl(resources.queue_url, resources.dlq_url).dead_letter(
            body="{}", group_id="sample-uploader", deduplication_id="x", reason="why"
        )
        EntryQueue(resources.queue_url).send_batch([message_for("sample-uploader", "00031")])
        boto3.client("sqs").receive_message(QueueUrl=resources.queue_url, VisibilityTimeout=600)
    assert main(["status", "--local", "--state-dir", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["queue"]["waiting"], status["dead_letter_queue"]["messages"]) == (1, 1)


def message_for(source: str, entry_id: str) -> EntryMessage:
    return EntryMessage(
        source=source, entry_id=entry_id, title="t", url="http://x.test/u", fetched_at=datetime.now(UTC)
    )
