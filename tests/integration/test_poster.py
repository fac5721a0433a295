"""The poster handler, end to end: moto server (SQS FIFO, DynamoDB, SSM) + a fake X over HTTP.

Each test plays the event source mapping's part: receive what is really on
the queue, shape it as Lambda delivers it, invoke the handler, delete what it
did not report as failed. "Time passing" for a parked message is played by
setting its visibility back to 0 -- never by sleeping through real delays,
except in the 429 test, whose reset is 2 seconds away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from bmsuploader.aws import clients
from bmsuploader.aws.queue import EntryQueue
from bmsuploader.aws.state import StateStore
from bmsuploader.contract.message import EntryMessage, deduplication_id
from bmsuploader_local.fake_x import FakeX
from bmsuploader_local.lambda_runtime import FakeContext, delete_succeeded, load_handler, receive_as_event

pytestmark = pytest.mark.integration

SOURCES = """
[[source]]
name = "uploader"
kind = "rss"
url = "http://127.0.0.1:9/feed.xml"
template = "【新着差分】{title} / {comment} / {url}"

[[source]]
name = "other"
kind = "rss"
url = "http://127.0.0.1:9/other.xml"
include_link = false
"""


@pytest.fixture
def fake_x() -> Iterator[FakeX]:
    with FakeX() as fake:
        yield fake


@pytest.fixture
def poster_env(stack: Any, fake_x: FakeX, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    sources = tmp_path / "sources.toml"
    sources.write_text(SOURCES, encoding="utf-8")
    monkeypatch.setenv("SOURCES_FILE", str(sources))
    monkeypatch.setenv("X_API_BASE_URL", fake_x.base_url)
    monkeypatch.setenv("DRY_RUN", "false")
    monkeypatch.setenv("MONTHLY_SPEND_LIMIT_USD", "0")
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    return stack


def message(entry_id: str, source: str = "uploader", **fields: Any) -> EntryMessage:
    values = {
        "source": source,
        "entry_id": entry_id,
        "title": f"★{int(entry_id) % 12} テスト譜面 {entry_id} [ANOTHER]",
        "url": f"http://127.0.0.1:9/up/src/up{entry_id}.zip",
        "comment": "差分です",
        "fetched_at": datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        **fields,
    }
    return EntryMessage(**values)


def enqueue(stack: Any, *messages: EntryMessage) -> None:
    result = EntryQueue(stack.queue_url).send_batch(list(messages))
    assert not result.failed


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    app = load_handler("poster")
    response: dict[str, Any] = app.lambda_handler(
        event, FakeContext(function_name="poster", timeout_seconds=30)
    )
    return response


def poll(stack: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """One event source mapping poll: receive, invoke, delete the successes."""
    event = receive_as_event(stack.queue_url)
    response = invoke(event) if event["Records"] else {"batchItemFailures": []}
    if event["Records"]:
        delete_succeeded(stack.queue_url, event, response)
    return event, response


def time_passes(stack: Any, event: dict[str, Any]) -> None:
    """Make the parked messages of ``event`` visible again (their delay is over)."""
    sqs = boto3.client("sqs")
    for record in event["Records"]:
        with contextlib.suppress(sqs.exceptions.ClientError):  # already deleted
            sqs.change_message_visibility(
                QueueUrl=stack.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )


def queue_counts(url: str) -> tuple[int, int]:
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def log_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"level"')]


def test_posts_each_entry_once_in_order_and_empties_the_queue(
    poster_env: Any, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue(poster_env, *(message(f"{i:05d}") for i in range(1, 6)))

    _event, response = poll(poster_env)

    assert response == {"batchItemFailures": []}
    assert [p["text"].split(" ")[0] for p in fake_x.posts] == [f"【新着差分】★{i}" for i in range(1, 6)]
    assert queue_counts(poster_env.queue_url) == (0, 0)
    posted = [line for line in log_lines(capsys.readouterr().out) if line.get("outcome") == "posted"]
    assert [line["entry_id"] for line in posted] == [f"{i:05d}" for i in range(1, 6)]
    assert all(line["source"] == "uploader" and line["tweet_id"] for line in posted)


def test_order_is_kept_across_a_batch_that_fails_in_the_middle(poster_env: Any, fake_x: FakeX) -> None:
    enqueue(poster_env, *(message(f"{i:05d}") for i in range(1, 6)))
    # Two posts go through, the third gets a 503.
    fake_x.script(FakeX.normal(), FakeX.normal(), FakeX.server_error(503))

    event, response = poll(poster_env)

    failed_ids = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    assert [r["messageId"] in failed_ids for r in event["Records"]] == [False, False, True, True, True]
    assert len(fake_x.posts) == 2
    # The failed one and the ones behind it are parked, not visible, not lost.
    assert queue_counts(poster_env.queue_url) == (0, 3)
    assert queue_counts(poster_env.dlq_url) == (0, 0)

    time_passes(poster_env, event)
    poll(poster_env)

    assert [p["text"].split(" ")[0] for p in fake_x.posts] == [f"【新着差分】★{i}" for i in range(1, 6)]
    assert queue_counts(poster_env.queue_url) == (0, 0)


def test_the_same_message_delivered_twice_gives_one_post(
    poster_env: Any, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue(poster_env, message("00007"))
    event = receive_as_event(poster_env.queue_url)

    invoke(event)
    invoke(event)  # at-least-once delivery: the same record again

    # And again after SQS's 5-minute dedup window: a new message, same entry.
    boto3.client("sqs").send_message(
        QueueUrl=poster_env.queue_url,
        MessageBody=message("00007").to_json(),
        MessageGroupId="uploader",
        MessageDeduplicationId=deduplication_id("uploader", "00007") + "-later",
    )
    delete_succeeded(poster_env.queue_url, event, {"batchItemFailures": []})
    poll(poster_env)

    assert len(fake_x.posts) == 1
    assert len(fake_x.requests) == 1  # the idempotency record answered; X was not even asked
    outcomes = [line.get("outcome") for line in log_lines(capsys.readouterr().out) if line.get("entry_id")]
    assert outcomes == ["posted", "duplicate", "duplicate"]


def test_a_crash_after_x_accepted_the_post_gives_one_post(poster_env: Any, fake_x: FakeX) -> None:
    enqueue(poster_env, message("00008"))
    fake_x.script(FakeX.accept_then_drop())

    event, response = poll(poster_env)
    assert len(response["batchItemFailures"]) == 1  # we never heard back: retry later
    assert len(fake_x.posts) == 1  # ...but X has it

    time_passes(poster_env, event)
    _event, response = poll(poster_env)

    assert response == {"batchItemFailures": []}
    assert len(fake_x.posts) == 1  # X's duplicate-content 403 counted as already posted
    assert [r.status for r in fake_x.requests] == [None, 403]
    assert queue_counts(poster_env.queue_url) == (0, 0)


def test_after_a_429_the_message_comes_back_after_the_reset_and_is_not_dead_lettered(
    poster_env: Any, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    # One message: moto (unlike SQS) will not hand back the head of a FIFO
    # group while a later message of that group still counts as in flight.
    enqueue(poster_env, message("00009"))
    fake_x.script(FakeX.rate_limited(int(time.time()) + 2))

    _event, response = poll(poster_env)

    assert len(response["batchItemFailures"]) == 1
    assert receive_as_event(poster_env.queue_url)["Records"] == []  # waiting for the reset
    limited = [line for line in log_lines(capsys.readouterr().out) if line.get("outcome") == "rate_limited"]
    assert limited and 1 <= limited[0]["delay_seconds"] <= 2
    assert "x-rate-limit-reset" in limited[0]["message"]

    time.sleep(limited[0]["delay_seconds"] + 1)  # the reset has passed (the one real wait in the suite)
    event, response = poll(poster_env)

    assert [json.loads(r["body"])["entry_id"] for r in event["Records"]] == ["00009"]
    assert response == {"batchItemFailures": []}
    assert len(fake_x.posts) == 1
    assert queue_counts(poster_env.queue_url) == (0, 0)
    assert queue_counts(poster_env.dlq_url) == (0, 0)


def test_a_poison_message_goes_to_the_dlq_and_the_rest_of_its_group_is_posted(
    poster_env: Any, fake_x: FakeX
) -> None:
    sqs = boto3.client("sqs")
    enqueue(poster_env, message("00011"))
    sqs.send_message(
        QueueUrl=poster_env.queue_url,
        MessageBody=json.dumps({"schema_version": 99, "source": "uploader", "entry_id": "00012"}),
        MessageGroupId="uploader",
        MessageDeduplicationId="poison-1",
    )
    enqueue(poster_env, message("00013"), message("00014"))
    fake_x.script(FakeX.normal(), FakeX.normal(), FakeX.bad_request("Your Tweet text is too long."))

    _event, response = poll(poster_env)

    assert response == {"batchItemFailures": []}
    assert [p["text"].split(" ")[2] for p in fake_x.posts] == ["00011", "00013"]
    dead = sqs.receive_message(
        QueueUrl=poster_env.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    reasons = {
        json.loads(m["Body"])["entry_id"]: m["MessageAttributes"]["reason"]["StringValue"] for m in dead
    }
    assert set(reasons) == {"00012", "00014"}
    assert "schema" in reasons["00012"] and "schema_version" in reasons["00012"]
    assert "400" in reasons["00014"] or "too long" in reasons["00014"]
    assert queue_counts(poster_env.queue_url) == (0, 0)


def test_once_the_budget_is_reached_messages_wait_in_order_and_are_never_dropped(
    poster_env: Any, fake_x: FakeX, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MONTHLY_SPEND_LIMIT_USD", "0.4")  # two posts with a link
    enqueue(poster_env, *(message(f"{i:05d}") for i in range(21, 25)))

    _event, response = poll(poster_env)

    assert len(fake_x.posts) == 2
    # The other two are set aside in the backlog -- not left on SQS, which would
    # delete them after 14 days while a budget can hold them for a month.
    assert response == {"batchItemFailures": []}
    assert queue_counts(poster_env.queue_url) == (0, 0)
    assert queue_counts(poster_env.dlq_url) == (0, 0)
    store = StateStore.on(poster_env.table_name)
    assert [i.entry_id for i in store.backlog.oldest("uploader", limit=10)] == ["00023", "00024"]
    out = capsys.readouterr().out
    blocked = [line for line in log_lines(out) if line.get("outcome") == "budget_blocked"]
    assert [line["entry_id"] for line in blocked] == ["00023", "00024"]
    assert "monthly spend limit of USD 0.4 reached" in blocked[0]["message"]
    assert '"BudgetBlocked":[1.0,1.0]' in out or '"BudgetBlocked":[2.0]' in out

    # A newer entry arriving meanwhile waits behind them, even for a fresh budget.
    enqueue(poster_env, message("00025"))
    poll(poster_env)
    assert [i.entry_id for i in store.backlog.oldest("uploader", limit=10)] == ["00023", "00024", "00025"]

    # Still the same month: the fetcher leaves the backlog alone. (Its sources
    # are switched off here: a disabled source's backlog is still drained.)
    sources = Path(os.environ["SOURCES_FILE"])
    sources.write_text(SOURCES.replace('kind = "rss"', 'kind = "rss"\nenabled = false'), encoding="utf-8")
    result = run_fetcher_once()
    assert result["requeued_from_backlog"] == 0 and result["backlog_pending"]

    # Next month (here: the operator raises the budget), the fetcher re-queues them in order.
    monkeypatch.setenv("MONTHLY_SPEND_LIMIT_USD", "2")  # ten posts with a link
    result = run_fetcher_once()
    assert result["requeued_from_backlog"] == 3 and not result["backlog_pending"]
    poll(poster_env)

    assert [p["text"].split(" ")[2] for p in fake_x.posts] == [f"000{i}" for i in range(21, 26)]
    assert store.backlog.oldest("uploader", limit=10) == []
    assert queue_counts(poster_env.queue_url) == (0, 0)


def run_fetcher_once() -> dict[str, Any]:
    app = load_handler("fetcher")
    result: dict[str, Any] = app.lambda_handler({"schedule": "night"}, FakeContext(timeout_seconds=120))
    return result


def test_expired_credentials_park_the_queue_and_say_how_to_fix_it(
    poster_env: Any, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue(poster_env, message("00031"), message("00032", source="other"))
    fake_x.script(FakeX.unauthorized())

    _event, response = poll(poster_env)

    assert len(response["batchItemFailures"]) == 2  # both groups wait: the problem is systemic
    assert queue_counts(poster_env.queue_url) == (0, 2)
    assert queue_counts(poster_env.dlq_url) == (0, 0)
    out = capsys.readouterr().out
    errors = [line for line in log_lines(out) if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["outcome"] == "auth_failed"
    assert "regenerate" in errors[0]["message"].lower()
    for secret in ("local-consumer_secret", "local-access_token_secret", "local-access_token"):
        assert secret not in out


def test_the_link_policy_and_the_spend_metric(
    poster_env: Any, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue(poster_env, message("00041"), message("00042", source="other"))

    poll(poster_env)

    with_link, without_link = (p["text"] for p in fake_x.posts)
    assert "http://127.0.0.1:9/up/src/up00041.zip" in with_link
    assert "http" not in without_link
    out = capsys.readouterr().out
    spend = [json.loads(line) for line in out.splitlines() if '"EstimatedSpendUSD"' in line]
    assert spend and sorted(spend[0]["EstimatedSpendUSD"]) == [0.015, 0.2]


def test_dry_run_posts_to_the_log_only(
    poster_env: Any, fake_x: FakeX, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    enqueue(poster_env, message("00051"))

    _event, response = poll(poster_env)

    assert response == {"batchItemFailures": []}
    assert fake_x.requests == []
    posted = [line for line in log_lines(capsys.readouterr().out) if line.get("outcome") == "dry_run"]
    assert posted and posted[0]["tweet_id"].startswith("dry-run-")
    assert posted[0]["message"].startswith("dry_run: 【新着差分】")


def test_the_sample_event_file_is_accepted(poster_env: Any, fake_x: FakeX) -> None:
    """events/poster-sqs-fifo.json must stay valid for `sam local invoke`."""
    event = json.loads((Path(__file__).resolve().parents[2] / "events" / "poster-sqs-fifo.json").read_text())

    response = invoke(event)

    assert response == {"batchItemFailures": []}
    assert len(fake_x.posts) == len(event["Records"])


@contextlib.contextmanager
def aws_refuses(operation: str) -> Iterator[list[str]]:
    """Clients created inside the block get ``ThrottlingException`` for ``operation``.

    A corner case no emulator plays on demand, so it is injected in process
    through botocore's event system; everything else still goes over HTTP.
    """
    refused: list[str] = []

    def throttle(**_: Any) -> None:
        refused.append(operation)
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation)

    session = clients.session()  # the handlers' clients come from this botocore session
    session.register(f"before-call.*.{operation}", throttle, unique_id="aws_refuses")
    try:
        yield refused
    finally:
        session.unregister(f"before-call.*.{operation}", unique_id="aws_refuses")


def test_a_throttled_delay_of_skipped_records_never_fails_what_was_handled(
    poster_env: Any, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue(poster_env, message("00061"), message("00062"), message("00063"))
    fake_x.script(FakeX.normal(), FakeX.server_error())

    with aws_refuses("ChangeMessageVisibilityBatch") as refused:
        event, response = poll(poster_env)

    assert refused  # the delays really were refused
    # 00061 was posted: it must not come back. 00062 failed, 00063 waits behind it.
    assert [item["itemIdentifier"] for item in response["batchItemFailures"]] == [
        r["messageId"] for r in event["Records"][1:]
    ]
    assert len(fake_x.posts) == 1
    lines = log_lines(capsys.readouterr().out)
    assert any("could not delay" in line["message"] for line in lines)
    assert {line.get("outcome") for line in lines} >= {"posted", "retry", "waiting"}


def test_a_dead_letter_copy_that_aws_refuses_keeps_the_message_and_says_so(
    poster_env: Any, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue(poster_env, message("00071"))
    fake_x.script(FakeX.bad_request("text too long"))

    with aws_refuses("SendMessage"):
        _event, response = poll(poster_env)

    assert len(response["batchItemFailures"]) == 1  # still queued: nothing lost
    assert queue_counts(poster_env.dlq_url) == (0, 0)
    lines = log_lines(capsys.readouterr().out)
    refused = [
        line for line in lines if "could not copy the message to the dead-letter queue" in line["message"]
    ]
    assert refused and refused[0]["level"] == "ERROR"
    assert lines[-1]["outcome"] == "retry"


def test_debug_logging_never_prints_the_x_secrets(
    poster_env: Any, fake_x: FakeX, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # LogLevel=DEBUG: Lambda sets the root logger to DEBUG, where botocore would log the
    # decrypted GetParameters response.
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("AWS_LAMBDA_LOG_LEVEL", "DEBUG")
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root.addHandler(handler)
    try:
        enqueue(poster_env, message("00081"))
        poll(poster_env)
        logging.getLogger("probe").debug("debug reaches the root logger")
    finally:
        root.removeHandler(handler)

    out, err = capfd.readouterr()
    assert len(fake_x.posts) == 1
    assert "probe debug reaches the root logger" in err
    for secret in ("local-consumer_secret", "local-access_token_secret", "local-access_token"):
        assert secret not in out + err
