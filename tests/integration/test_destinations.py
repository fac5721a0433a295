"""Several destinations, end to end: the fetcher fans each new entry out to every network, and
the poster posts it once on each, in order, each network failing alone.

Real handlers, moto server (SQS FIFO, DynamoDB, SSM), the sample uploader, the fake X and
the other networks' fake servers, all over loopback HTTP.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bmsuploader.config.sources import load_sources
from bmsuploader_local.fake_misskey import FakeMisskey
from bmsuploader_local.fake_x import FakeX
from bmsuploader_local.networks import LocalNetwork, base_urls, start_networks
from bmsuploader_local.uploader_site import UploaderSite
from tests.integration.conftest import write_sources
from tests.integration.test_poster import poll, queue_counts, time_passes

pytestmark = pytest.mark.integration

DESTINATIONS = """
[[destination]]
name = "x"
kind = "x"

[[destination]]
name = "bsky"
kind = "bluesky"
secret = "/bmsuploader/destinations/bsky"

[[destination]]
name = "mstdn"
kind = "mastodon"
instance = "https://mastodon.example"
secret = "/bmsuploader/destinations/mstdn"

[[destination]]
name = "io"
kind = "misskey"
instance = "https://misskey.example"
secret = "/bmsuploader/destinations/io"

[[destination]]
name = "hook"
kind = "discord"
secret = "/bmsuploader/destinations/hook"
"""


@pytest.fixture
def world(
    stack: Any, site: UploaderSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    path = write_sources(
        tmp_path / "sources.toml", site, feed=False, first_run='{ policy = "post_newest", count = 3 }'
    )
    path.write_text(path.read_text(encoding="utf-8") + DESTINATIONS, encoding="utf-8")
    monkeypatch.setenv("SOURCES_FILE", str(path))
    monkeypatch.setenv("DRY_RUN", "false")
    monkeypatch.setenv("MONTHLY_SPEND_LIMIT_USD", "0")
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    with contextlib.ExitStack() as running:
        fake_x = running.enter_context(FakeX())
        networks = running.enter_context(start_networks(load_sources(path).destinations))
        monkeypatch.setenv("X_API_BASE_URL", fake_x.base_url)
        monkeypatch.setenv("NETWORK_BASE_URLS", base_urls(networks))
        yield {"stack": stack, "x": fake_x, "sources_file": path, **networks}


def texts_of(world: dict[str, Any]) -> dict[str, list[str]]:
    x: FakeX = world["x"]
    networks: dict[str, LocalNetwork] = {k: v for k, v in world.items() if isinstance(v, LocalNetwork)}
    return {"x": [p["text"] for p in x.posts], **{kind: n.texts() for kind, n in networks.items()}}


def titles(texts: list[str]) -> list[str]:
    """The upload each post announces: its URL's file name (the same on every network)."""
    return [text.rsplit("/", 1)[-1] for text in texts]


def run_until_quiet(world: dict[str, Any], *, polls: int = 12) -> None:
    """Poll like the event source mapping; parked messages come back at once (time passes)."""
    for _ in range(polls):
        event, _response = poll(world["stack"])
        if not event["Records"]:
            return
        time_passes(world["stack"], event)


NEWEST_THREE = ["up00028.zip", "up00029.zip", "up00030.zip"]


def test_each_entry_is_posted_once_on_every_network_in_order(
    world: dict[str, Any], run_fetcher: Callable[..., dict[str, Any]]
) -> None:
    report = run_fetcher()
    assert report["sources"][0]["enqueued"] == 3  # entries, each sent to three destinations

    run_until_quiet(world)

    posted = texts_of(world)
    assert {network: titles(texts) for network, texts in posted.items()} == {
        "x": NEWEST_THREE,
        "bluesky": NEWEST_THREE,
        "mastodon": NEWEST_THREE,
        "misskey": NEWEST_THREE,
        "discord": NEWEST_THREE,
    }
    # A second run finds nothing new and posts nothing anywhere.
    assert run_fetcher()["sources"][0]["enqueued"] == 0
    run_until_quiet(world)
    assert texts_of(world) == posted


def test_an_outage_of_one_network_holds_back_only_that_network(
    world: dict[str, Any], run_fetcher: Callable[..., dict[str, Any]]
) -> None:
    misskey: FakeMisskey = world["misskey"].fake
    misskey.script(*[FakeMisskey.server_error(503)] * 2)  # down for its first two attempts
    run_fetcher()

    events = []
    while (polled := poll(world["stack"]))[0]["Records"]:  # until only parked messages remain
        events.append(polled[0])

    # X, Bluesky and Mastodon posted everything; Misskey's group failed at its first entry,
    # and its later entries wait behind it without a call to Misskey.
    assert titles(texts_of(world)["x"]) == NEWEST_THREE
    assert titles(texts_of(world)["bluesky"]) == NEWEST_THREE
    assert titles(texts_of(world)["mastodon"]) == NEWEST_THREE
    assert texts_of(world)["misskey"] == []
    assert sum(1 for r in misskey.requests if r.endpoint.endswith("notes/create")) == 1
    assert sum(queue_counts(world["stack"].queue_url)) == 3  # parked or held behind them: not lost

    for event in events:
        time_passes(world["stack"], event)
    run_until_quiet(world)  # one more 503, then the outage is over

    assert titles(texts_of(world)["misskey"]) == NEWEST_THREE  # all of them, in order, once
    assert titles(texts_of(world)["x"]) == NEWEST_THREE
    assert queue_counts(world["stack"].queue_url) == (0, 0)
    assert queue_counts(world["stack"].dlq_url) == (0, 0)


@pytest.mark.parametrize("kind", ["bluesky", "mastodon", "misskey"])
def test_a_post_the_network_took_before_the_connection_dropped_is_never_posted_again(
    world: dict[str, Any], run_fetcher: Callable[..., dict[str, Any]], kind: str
) -> None:
    network: LocalNetwork = world[kind]
    network.fake.script(type(network.fake).accept_then_drop())
    run_fetcher()

    run_until_quiet(world)

    # The first attempt's outcome was unknown; the retry asked the network (Bluesky: getRecord
    # of the entry's record key; Mastodon: the same Idempotency-Key; Misskey: the account's
    # latest notes) and posted nothing more.
    assert titles(network.texts()) == NEWEST_THREE
    assert titles(texts_of(world)["x"]) == NEWEST_THREE
    assert queue_counts(world["stack"].dlq_url) == (0, 0)


def test_a_discord_post_that_may_exist_waits_for_the_operator_and_redrive_asks_nothing_twice(
    world: dict[str, Any], run_fetcher: Callable[..., dict[str, Any]]
) -> None:
    from bmsuploader.aws.idempotency import Attempts, PostRecords
    from bmsuploader.aws.queue import DeadLetters, EntryQueue
    from bmsuploader.contract.settings import LambdaEnvironment
    from bmsuploader.ops import redrive
    from bmsuploader_local.fake_discord import FakeDiscord

    stack = world["stack"]
    discord: LocalNetwork = world["discord"]
    # The first post is taken, then the connection drops: a webhook cannot be asked whether it
    # exists, so the retry dead-letters it ("may already be posted") rather than post it twice.
    discord.fake.script(FakeDiscord.accept_then_drop())
    run_fetcher()
    run_until_quiet(world)

    assert titles(discord.texts()) == NEWEST_THREE  # the first one was taken, once
    assert titles(texts_of(world)["misskey"]) == NEWEST_THREE  # the others never waited
    dead = DeadLetters(stack.dlq_url).peek(hold_seconds=1, expected=1)
    assert [(d.group_id, d.check_first) for d in dead] == [("uploader~hook", True)]
    assert "may have been accepted (its outcome is unknown)" in (dead[0].reason or "")

    sources = load_sources(world["sources_file"])
    poster = LambdaEnvironment.from_env().aws_lambda_function_name  # as the poster reads it here
    records = PostRecords(stack.idempotency_table, poster)
    attempts = Attempts(stack.idempotency_table, poster)

    def redrive_chosen(chosen: set[str] | None) -> redrive.Outcome:
        time.sleep(1.5)  # the look before holds it for a second
        _candidates, outcome = redrive.redrive(
            DeadLetters(stack.dlq_url),
            lambda letter: redrive.decide(letter, records, sources, chosen),
            EntryQueue(stack.queue_url),
            chosen=chosen,
            forget=lambda m: attempts.forget_unknown(m.source, m.entry_id, m.destination),
        )
        assert outcome is not None and not outcome.failed
        return outcome

    # A plain `redrive --yes` after an outage leaves it: only the operator can tell.
    kept = redrive_chosen(None)
    assert (kept.redriven, [c.letter.message_id for c in kept.kept]) == ([], [dead[0].message_id])
    assert "may already be posted on hook: look there" in kept.kept[0].why

    # The operator looks and redrives it by name (say the channel lost it). Its next attempt
    # fails once (429): without the cleared mark it would go straight back as "may already be posted".
    assert len(redrive_chosen({dead[0].message_id}).redriven) == 1
    discord.fake.script(FakeDiscord.rate_limited(retry_after=1.0))
    run_until_quiet(world)

    assert titles(discord.texts()) == [*NEWEST_THREE, "up00028.zip"]  # what the operator asked
    assert queue_counts(stack.dlq_url) == (0, 0)
    assert queue_counts(stack.queue_url) == (0, 0)


def test_a_rate_limited_network_is_not_called_again_in_the_batch_for_other_sources(
    world: dict[str, Any], site: UploaderSite, run_fetcher: Callable[..., dict[str, Any]]
) -> None:
    # A second board of the same site: its entries are another group on every network.
    path: Path = world["sources_file"]
    board = (
        f'\n[[source]]\nname = "board2"\nkind = "html"\npreset = "classic-cgi"\n'
        f'url = "{site.listing_url}?board=2"\nfirst_run = {{ policy = "post_newest", count = 1 }}\n'
    )
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("[[destination]]", board + "\n[[destination]]", 1), encoding="utf-8")
    misskey: FakeMisskey = world["misskey"].fake
    misskey.script(FakeMisskey.rate_limited(retry_after=30))
    run_fetcher()

    events = []
    while (polled := poll(world["stack"]))[0]["Records"]:
        events.append(polled[0])

    # One call found the limit; the account's other group waited with the same delay, uncalled.
    assert sum(1 for r in misskey.requests if r.endpoint.endswith("notes/create")) == 1
    assert texts_of(world)["misskey"] == []
    assert len(texts_of(world)["mastodon"]) == 4  # the 3 newest of the uploader, 1 of board2

    for event in events:
        time_passes(world["stack"], event)
    run_until_quiet(world)
    assert sorted(titles(texts_of(world)["misskey"])) == sorted(titles(texts_of(world)["mastodon"]))
    assert len(texts_of(world)["misskey"]) == 4


def test_a_post_the_network_may_have_taken_is_remembered_before_its_attempts_record_goes(
    world: dict[str, Any], run_fetcher: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Powertools removes the attempt's record as the error leaves the idempotent function. A
    removal that AWS applied but did not confirm (a timeout; the process dying right there is the
    same for the next attempt) must not take the only trace of the attempt with it: the "outcome
    unknown" mark is written before. (The fault test found it: ``make chaos N=100 SEED=2``.)"""
    from aws_lambda_powertools.utilities.idempotency.persistence.dynamodb import DynamoDBPersistenceLayer
    from botocore.exceptions import ReadTimeoutError

    remove = DynamoDBPersistenceLayer._delete_record

    def removed_then_timed_out(self: DynamoDBPersistenceLayer, data_record: Any) -> None:
        remove(self, data_record)
        raise ReadTimeoutError(endpoint_url="http://dynamodb")

    monkeypatch.setattr(DynamoDBPersistenceLayer, "_delete_record", removed_then_timed_out)
    network: LocalNetwork = world["misskey"]
    network.fake.script(FakeMisskey.accept_then_drop())
    run_fetcher()

    run_until_quiet(world)

    assert titles(network.texts()) == NEWEST_THREE  # the dropped one once: found by the check
    assert queue_counts(world["stack"].queue_url) == (0, 0)
    assert queue_counts(world["stack"].dlq_url) == (0, 0)


def test_a_repeat_of_a_message_held_as_may_be_posted_is_held_too(
    world: dict[str, Any], run_fetcher: Callable[..., dict[str, Any]]
) -> None:
    """The fetcher sends an entry again when a run fails between the send and marking it seen;
    after SQS's 5-minute deduplication window the repeat is a new message, received a first time.
    Discord cannot check: the repeat must meet the same "may already be posted" as the message it
    repeats, not post again. (The fault test found it: ``make chaos N=30 SEED=1``, beta/03038.)"""
    import boto3

    from bmsuploader_local.fake_discord import FakeDiscord

    stack = world["stack"]
    discord: LocalNetwork = world["discord"]
    discord.fake.script(FakeDiscord.accept_then_drop())
    run_fetcher()
    run_until_quiet(world)
    assert titles(discord.texts()) == NEWEST_THREE
    sqs = boto3.client("sqs")
    held = sqs.receive_message(QueueUrl=stack.dlq_url, VisibilityTimeout=0, AttributeNames=["All"])[
        "Messages"
    ]
    assert len(held) == 1

    sqs.send_message(
        QueueUrl=stack.queue_url,
        MessageBody=held[0]["Body"],
        MessageGroupId=held[0]["Attributes"]["MessageGroupId"],
        MessageDeduplicationId="sent-again-after-the-window",
    )
    run_until_quiet(world)

    assert titles(discord.texts()) == NEWEST_THREE  # not a second time
    assert queue_counts(stack.dlq_url)[0] == 2  # held like the first
    assert queue_counts(stack.queue_url) == (0, 0)
