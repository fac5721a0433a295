"""Destinations as data: the config, the keys each destination's messages carry, and the
order-keeping send (one message per group per SendMessageBatch)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jmespath
import pytest

from bmsuploader.aws.idempotency import announce_config, record_key
from bmsuploader.aws.queue import EntryQueue, Outgoing
from bmsuploader.config.destinations import DEFAULT_DESTINATIONS
from bmsuploader.config.sources import parse_sources
from bmsuploader.contract.errors import ConfigError
from bmsuploader.contract.message import EntryMessage, deduplication_id, parse_message

SOURCES: dict[str, Any] = {
    "source": [
        {"name": "up", "kind": "rss", "url": "https://u.example/rss.xml"},
        {"name": "table", "kind": "rss", "url": "https://t.example/rss.xml"},
    ]
}


def config(*destinations: dict[str, Any]) -> Any:
    return parse_sources({**SOURCES, "destination": list(destinations)}, origin="sources.toml")


def test_without_destinations_x_alone_announces_everything() -> None:
    parsed = parse_sources(SOURCES)
    assert parsed.destinations == DEFAULT_DESTINATIONS
    assert [d.name for d in parsed.destinations_of("up")] == ["x"]


def test_destinations_choose_their_sources() -> None:
    parsed = config(
        {"name": "x", "kind": "x"},
        {
            "name": "io",
            "kind": "misskey",
            "instance": "https://misskey.io",
            "secret": "/b/d/io",
            "sources": ["up"],
        },
        {"name": "hook", "kind": "discord", "secret": "/b/d/hook", "enabled": False},
    )
    assert [d.name for d in parsed.destinations_of("up")] == ["x", "io"]
    assert [d.name for d in parsed.destinations_of("table")] == ["x"]
    assert parsed.destination(None) is parsed.destinations[0]
    assert parsed.destination("gone") is None


@pytest.mark.parametrize(
    ("destination", "complaint"),
    [
        (
            {"name": "io", "kind": "misskey", "secret": "/b/io"},
            "instance: a misskey destination needs its server",
        ),
        (
            {"name": "io", "kind": "misskey", "instance": "https://misskey.io"},
            "secret: a misskey destination needs",
        ),
        ({"name": "main", "kind": "x"}, "the X destination is named 'x'"),
        ({"name": "x", "kind": "discord", "secret": "/b/d"}, "the X destination is named 'x'"),
        ({"name": "Bad Name", "kind": "discord", "secret": "/b/d"}, "name: String should match pattern"),
        (
            {"name": "d", "kind": "discord", "secret": "/b/d", "sources": ["nope"]},
            "no such source(s) ['nope']",
        ),
        ({"name": "d", "kind": "discord", "secret": "/b/d", "template": "{title"}, "template"),
        ({"name": "d", "kind": "discord", "secret": "/b/d", "colour": 1}, "colour: unknown field (typo?)"),
        ({"name": "d", "kind": "telegram", "secret": "/b/d"}, "kind: Input should be"),
    ],
)
def test_a_bad_destination_is_a_clear_error(destination: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config({"name": "x", "kind": "x"}, destination)
    assert str(caught.value).startswith("sources.toml: destination ")
    assert complaint in str(caught.value)


def test_a_source_no_destination_announces_is_refused() -> None:
    # Its entries would be marked seen and announced nowhere: lost to every network.
    with pytest.raises(ConfigError, match=r"no enabled destination announces source\(s\) \['table'\]"):
        config({"name": "d", "kind": "discord", "secret": "/b/d", "sources": ["up"]})


def test_duplicate_destination_names_are_refused() -> None:
    hook = {"name": "d", "kind": "discord", "secret": "/b/d"}
    with pytest.raises(ConfigError, match="duplicate destination name 'd'"):
        config(hook, hook)


# --- keys -------------------------------------------------------------------------


def entry(**fields: Any) -> EntryMessage:
    values: dict[str, Any] = {
        "source": "up",
        "entry_id": "0042",
        "title": "曲",
        "url": "https://u.example/0042.zip",
        "fetched_at": datetime(2026, 11, 29, tzinfo=UTC),
    }
    return EntryMessage(**{**values, **fields})


def test_a_message_for_x_is_the_single_x_message_byte_for_byte() -> None:
    # Messages in flight at the upgrade, and records already written, keep their keys.
    message = entry().for_destination(None)
    assert "destination" not in json.loads(message.to_json())
    assert message.group_id == "up"
    assert message.deduplication_id == deduplication_id("up", "0042")
    selected = jmespath.search(announce_config().event_key_jmespath, message.model_dump())
    assert selected == ["up", "0042"]


def test_each_destination_has_its_own_group_dedup_id_and_record() -> None:
    x, io = entry(), entry().for_destination("io")
    assert io.group_id == "up~io"
    assert io.deduplication_id != x.deduplication_id
    assert parse_message(io.to_json()) == io
    selected = jmespath.search(announce_config().event_key_jmespath, io.model_dump())
    assert selected == ["up", "0042", "io"]
    assert record_key("poster", "up", "0042", "io") != record_key("poster", "up", "0042")


# --- send_in_order: corner cases SQS can produce and moto cannot ----------------------


class RecordingSqs:
    """Answers SendMessageBatch, failing the entries whose body is in ``refuse``."""

    def __init__(self, refuse: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.refuse = refuse
        self.batches: list[list[tuple[str, str]]] = []

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.batches.append([(e["MessageGroupId"], e["MessageBody"]) for e in Entries])
        failed = [
            {"Id": e["Id"], "Code": "InternalError", "Message": "try again", "SenderFault": False}
            for e in Entries
            if e["MessageBody"] in self.refuse
        ]
        return {"Successful": [], "Failed": failed}


def out(group: str, body: str) -> Outgoing:
    return Outgoing(entry_id=body, body=body, group_id=group, deduplication_id=body)


def test_a_batch_holds_one_message_per_group_and_groups_interleave() -> None:
    sqs = RecordingSqs()
    messages = [out("a", "a1"), out("a", "a2"), out("b", "b1"), out("a", "a3"), out("b", "b2")]
    results = list(EntryQueue("q", sqs).send_in_order(messages))  # type: ignore[arg-type]
    assert sqs.batches == [[("a", "a1"), ("b", "b1")], [("a", "a2"), ("b", "b2")], [("a", "a3")]]
    assert [m.body for r in results for m in r.sent] == ["a1", "b1", "a2", "b2", "a3"]


def test_a_refused_middle_entry_never_lets_a_later_one_of_its_group_through() -> None:
    # SendMessageBatch reports each entry on its own: had a2 and a3 shared a batch with the
    # refused a1, a3 could be queued ahead of it. One per group per batch rules that out.
    sqs = RecordingSqs(refuse={"a1"})
    messages = [out("a", "a1"), out("b", "b1"), out("a", "a2"), out("c", "c1")]
    results = list(EntryQueue("q", sqs).send_in_order(messages))  # type: ignore[arg-type]
    assert len(results) == 1  # stops after the batch with the failure
    assert [m.body for m in results[0].sent] == ["b1", "c1"]
    assert [m.body for m, _ in results[0].failed] == ["a1"]
    assert all(body != "a2" for batch in sqs.batches for _, body in batch)


def test_send_refuses_two_messages_of_one_group() -> None:
    with pytest.raises(ValueError, match="one message per group"):
        EntryQueue("q", RecordingSqs()).send([out("a", "1"), out("a", "2")])  # type: ignore[arg-type]


# --- the renderer, by a network's rules ---------------------------------------------------


def test_the_renderer_reports_where_the_entry_url_sits() -> None:
    from bmsuploader.post.rendering import render_post

    post = render_post(
        entry(title="日本語の曲名"), template="【新着】{title} / {url} #BMS", include_link=True
    )
    start, end = post.link or (0, 0)
    assert post.text[start:end] == "https://u.example/0042.zip"
    without = render_post(entry(), template="{title} {url}", include_link=False)
    assert without.link is None


def test_a_network_rule_measures_and_escapes_scraped_text_never_the_url() -> None:
    from bmsuploader.post.rendering import render_post
    from bmsuploader.post.rules import PostRules

    rules = PostRules(
        network="tiny", limit=60, unit="characters", measure=len, escape=lambda t: t.replace("_", r"\_")
    )
    post = render_post(
        entry(title="_" * 40 + "長い曲名" * 20, url="https://u.example/a_b.zip"),
        template="{title} {url}",
        include_link=True,
        rules=rules,
    )
    assert len(post.text) <= 60
    assert post.weighted_length == len(post.text)
    assert post.text.endswith(" https://u.example/a_b.zip")  # the URL whole and unescaped
    assert post.text.startswith(r"\_\_")  # the title escaped, after the cut
    assert "…" in post.text
