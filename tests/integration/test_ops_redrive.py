"""`bmsuploader redrive` at the edges: many messages of one source, a chosen few, poison that stays,
and the one-line errors every operator command gives instead of a traceback."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from bmsuploader.aws.queue import QueueControl
from bmsuploader.cli import main
from bmsuploader.contract.message import EntryMessage
from bmsuploader_local.aws import StackResources, register_stack

from .conftest import drain

pytestmark = pytest.mark.integration

SOURCES = """
[[source]]
name = "uploader"
kind = "rss"
url = "http://127.0.0.1:9/feed.xml"
"""


@pytest.fixture
def registered(stack: StackResources, tmp_path: Path) -> StackResources:
    register_stack(stack)
    (tmp_path / "sources.toml").write_text(SOURCES, encoding="utf-8")
    return stack


def cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str, stack: str | None = None
) -> tuple[int, str, str]:
    target = ["--stack", stack] if stack else []
    capsys.readouterr()
    code = main(
        [
            *args,
            *target,
            "--config-file",
            str(tmp_path / "absent.toml"),
            "--sources",
            str(tmp_path / "sources.toml"),
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def dead_letter(stack: StackResources, *entry_ids: str, source: str = "uploader") -> None:
    control = QueueControl(stack.queue_url, stack.dlq_url)
    for entry_id in entry_ids:
        body = EntryMessage(
            source=source,
            entry_id=entry_id,
            title=f"譜面 {entry_id}",
            url=f"http://x.test/{entry_id}.zip",
            fetched_at=datetime(2026, 11, 28, tzinfo=UTC),
        ).to_json()
        control.dead_letter(body=body, group_id=source, deduplication_id=f"d{entry_id}", reason="HTTP 400")


def dlq_counts(stack: StackResources) -> tuple[int, int]:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=stack.dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_redrive_works_through_more_than_ten_of_one_source_in_order(
    registered: StackResources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"{i:05d}" for i in range(1, 13)]
    dead_letter(registered, *ids)

    code, out, _ = cli(capsys, tmp_path, "redrive", "--json", stack=registered.stack_name)
    dry: dict[str, Any] = json.loads(out)
    # FIFO hands out 10 of a group while they are held; the look says so and shows the oldest.
    assert [m["entry_id"] for m in dry["messages"]] == ids[:10]
    assert dlq_counts(registered) == (12, 0)  # released again after the look

    code, out, _ = cli(capsys, tmp_path, "redrive", "--yes", stack=registered.stack_name)

    assert code == 0
    assert "sent 12 back to the queue, dropped 0 already posted, kept 0" in out
    assert [message.entry_id for _, message in drain(registered.queue_url)] == ids
    assert dlq_counts(registered) == (0, 0)


def test_redrive_moves_only_the_chosen_message_and_keeps_poison(
    registered: StackResources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_letter(registered, "00001", "00002")
    QueueControl(registered.queue_url, registered.dlq_url).dead_letter(
        body="{not json", group_id="other", deduplication_id="poison", reason="schema"
    )
    code, out, _ = cli(capsys, tmp_path, "redrive", "--json", stack=registered.stack_name)
    messages = {m["entry_id"]: m for m in json.loads(out)["messages"]}
    assert messages[None]["action"] == "keep" and "still poison" in messages[None]["why"]
    chosen = messages["00002"]["message_id"]

    code, out, _ = cli(
        capsys, tmp_path, "redrive", "--message-id", chosen, "--yes", "--json", stack=registered.stack_name
    )

    assert code == 0
    assert json.loads(out)["redriven"] == [chosen]
    assert [message.entry_id for _, message in drain(registered.queue_url)] == ["00002"]
    assert dlq_counts(registered) == (2, 0)  # 00001 and the poison, visible again


def test_a_message_that_may_already_be_posted_goes_back_only_by_name(
    registered: StackResources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sources.toml").write_text(
        SOURCES
        + '[[destination]]\nname = "x"\nkind = "x"\n\n'
        + '[[destination]]\nname = "hook"\nkind = "discord"\nsecret = "/bmsuploader/destinations/hook"\n',
        encoding="utf-8",
    )
    dead_letter(registered, "00001")
    body = EntryMessage(
        source="uploader",
        entry_id="00002",
        title="譜面 00002",
        url="http://x.test/00002.zip",
        fetched_at=datetime(2026, 11, 28, tzinfo=UTC),
        destination="hook",
    ).to_json()
    QueueControl(registered.queue_url, registered.dlq_url).dead_letter(
        body=body,
        group_id="uploader~hook",
        deduplication_id="d00002",
        reason="an earlier attempt at this post may have been accepted",
        check_first=True,
    )

    code, out, _ = cli(capsys, tmp_path, "redrive", "--yes", stack=registered.stack_name)

    assert code == 0
    assert "sent 1 back to the queue, dropped 0 already posted, kept 1" in out
    assert "-> keep: may already be posted on hook: look there" in out
    assert [message.entry_id for _, message in drain(registered.queue_url)] == ["00001"]
    code, out, _ = cli(capsys, tmp_path, "redrive", "--json", stack=registered.stack_name)
    (held,) = json.loads(out)["messages"]
    assert (held["entry_id"], held["check_first"], held["action"]) == ("00002", True, "keep")

    chosen = ["--message-id", held["message_id"]]
    code, out, _ = cli(capsys, tmp_path, "redrive", *chosen, "--preview", stack=registered.stack_name)
    assert "-> redrive: the poster will post it" in out  # named: the operator has looked
    assert "/2000 characters): 【新着差分】譜面 00002" in out  # measured by Discord's rule, not X's

    code, out, _ = cli(capsys, tmp_path, "redrive", *chosen, "--yes", stack=registered.stack_name)

    assert code == 0 and "sent 1 back to the queue" in out
    assert [(m.entry_id, m.destination) for _, m in drain(registered.queue_url)] == [("00002", "hook")]
    assert dlq_counts(registered) == (0, 0)


def test_errors_are_one_line_not_a_traceback(
    registered: StackResources,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def error(*args: str, stack: str | None = None) -> str:
        code, out, err = cli(capsys, tmp_path, *args, stack=stack)
        assert (code, out) == (2, "")
        assert err.startswith("bmsuploader: error: ") and err.count("\n") == 1, err
        return err

    assert "stack 'nope' not found in region ap-northeast-1" in error("status", stack="nope")
    assert "not found in region us-west-2" in error(
        "status", "--region", "us-west-2", stack=registered.stack_name
    )
    assert "which stack?" in error("status")
    assert "no local run in" in error("status", "--local", "--state-dir", str(tmp_path / "none"))

    register_stack(replace(registered, stack_name="old", outputs={"QueueUrl": registered.queue_url}))
    missing = error("explain", "a", "1", stack="old")
    assert "stack 'old' has no output" in missing and "DeadLetterQueueUrl" in missing

    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert "no AWS credentials" in error("redrive", stack=registered.stack_name)
