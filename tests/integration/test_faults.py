"""The project's fault test: the seeded schedule of :mod:`bmsuploader_local.chaos`, over a modest count.

The real handlers run against an in-process moto server, the growing sample sites, the fake X
and a fake of every other network (one destination each) while faults are injected; then the
run settles and is judged, per destination. ``make chaos N=300``
runs the same schedule long (``SEED=...`` picks another one). Each run starts its own moto
server: the virtual clock and the FIFO group semantics are patches of moto's in-process state.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bmsuploader.contract.errors import Disposition, MaybePostedError, PermanentPublishError
from bmsuploader.post.cycle import decide
from bmsuploader.post.networks import discord, misskey
from bmsuploader.post.networks.base import PostRequest
from bmsuploader.post.networks.fediverse import OwnPost, find_own_post
from bmsuploader_local.chaos import (
    ALL_FAULTS,
    DEFAULT_DESTINATIONS,
    ChaosConfig,
    Fault,
    VirtualClock,
    faithful_fifo_groups,
    parse_destinations,
    plan_step,
    posted_entry,
    run_chaos,
    virtual_time,
)
from bmsuploader_local.networks import FAKES

pytestmark = pytest.mark.integration

FETCHED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
#: Schedules per seed here: 35-50 s each with X and the four other networks on a 2-core machine
#: (the file: about 95 s). `make chaos` runs 300.
SCHEDULES = 30


@pytest.mark.parametrize("seed", [1, 2])
def test_every_upload_is_posted_once_in_order_under_a_seeded_fault_schedule(seed: int) -> None:
    verdict = run_chaos(ChaosConfig(schedules=SCHEDULES, seed=seed))

    print(verdict.report())
    stats = verdict.stats
    # The faults really happened (a broken injector must not pass as a clean run).
    assert stats["fetcher crashed"] + stats["poster crashed"] > 0
    assert sum(v for k, v in stats.items() if k.startswith("throttled")) > 0
    assert stats["posts x"] > SCHEDULES
    assert stats["set aside before the month turn"] > 0  # the spend limit was reached
    # Every other network posted and met faults of its own: crashes right after it accepted a
    # post, and outage windows; windows really answered posts (one may fall where none was made).
    assert set(verdict.by_destination) == set(DEFAULT_DESTINATIONS) == {"x", *FAKES}
    for kind in FAKES:
        assert stats[f"posts {kind}"] > SCHEDULES, kind
        assert stats[f"crash after {kind} accepted a post"] > 0, kind
        assert any(k.startswith(f"{kind} window ") for k in stats), kind
    assert sum(v for k, v in stats.items() if " answered net-" in k) > 0
    assert (verdict.unexpected, verdict.masked) == (0, 0), verdict.report()
    assert (verdict.duplicates, verdict.lost, verdict.out_of_order, verdict.stuck) == (0, 0, 0, 0), (
        verdict.report()
    )


def test_the_judge_sees_one_networks_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the test above: Misskey's check after an unknown outcome switched off,
    its crashes and dropped connections post twice there, and only there."""
    monkeypatch.setattr(misskey.MisskeyPublisher, "_find", lambda self, post: None)
    config = ChaosConfig(
        schedules=16,
        seed=3,  # dropped connections after Misskey took a post in four windows
        faults=frozenset({Fault.CRASH_NET, Fault.NET_DROP}),
        destinations=("x", "misskey"),
    )

    verdict = run_chaos(config)

    print(verdict.report())
    assert verdict.by_destination["misskey"]["duplicates"] > 0
    assert verdict.duplicates == verdict.by_destination["misskey"]["duplicates"]
    assert (verdict.lost, verdict.out_of_order, verdict.stuck) == (0, 0, 0)
    assert any("posted twice" in d and d.endswith("on misskey") for d in verdict.details)


def test_a_post_is_read_back_through_each_networks_escapes() -> None:
    assert posted_entry("alpha 00013 ★5 夜桜") == ("alpha", "00013")
    assert posted_entry("<plain>al*pha</plain> <plain>up[6013]</plain> <plain>[EX]</plain>") == (
        "al*pha",
        "up[6013]",
    )
    assert posted_entry(r"be\_ta up\*6013 \*\*bold\*\*") == ("be_ta", "up*6013")
    assert posted_entry("gamma\nup6014 title") == ("gamma", "up6014")


def test_what_a_network_that_cannot_check_raises_is_dead_lettered_marked_check_first() -> None:
    """A dead letter of MaybePostedError waits for the operator: the judge counts it held, not
    lost, and redrive sends it back only by name; both read the mark, never the wording."""
    post = PostRequest(text="alpha 00013 t", link=None, key="k" * 64, created_at=FETCHED, maybe_posted=True)
    webhook = discord.parse_webhook_url(f"https://discord.com/api/webhooks/123456789012345678/{'t' * 68}")
    with pytest.raises(MaybePostedError) as webhook_cannot_list:
        discord.DiscordPublisher(webhook).publish(post)  # no request: a webhook cannot check
    newer = [OwnPost(id="9", created_at=FETCHED + timedelta(minutes=1), text="another post")]
    with pytest.raises(MaybePostedError) as too_many_since:
        find_own_post(lambda until: newer, post, network="Misskey", page_size=1)

    for maybe_posted in (webhook_cannot_list.value, too_many_since.value):
        decision = decide(maybe_posted, receive_count=2)
        assert (decision.disposition, decision.check_first) == (Disposition.DEAD_LETTER, True)
    refused = decide(PermanentPublishError("Misskey refused the note (400 INVALID_PARAM)"), receive_count=1)
    assert (refused.disposition, refused.check_first) == (Disposition.DEAD_LETTER, False)


def test_destinations_are_checked_before_a_run() -> None:
    assert parse_destinations("x, mastodon,misskey,x") == ("x", "mastodon", "misskey")
    with pytest.raises(SystemExit, match="unknown destination"):
        parse_destinations("x,myspace")


def test_a_seed_gives_the_same_schedule_and_a_kind_switched_off_changes_only_its_own_part() -> None:
    def plans(seed: int, kinds: frozenset[Fault] = ALL_FAULTS) -> list[Any]:
        return [plan_step(seed, i, kinds, at=i * 1800.0, interval=1800.0) for i in range(80)]

    first = plans(7)

    assert plans(7) == first
    assert plans(8) != first
    without = plans(7, ALL_FAULTS - {Fault.THROTTLE})
    assert all(p.rates.throttle == 0 for p in without)
    assert any(p.rates.throttle for p in first)
    assert [replace(p.rates, throttle=0.0) for p in first] == [p.rates for p in without]
    assert [p.uploads for p in first] == [p.uploads for p in without]


def test_moto_fifo_receive_follows_sqs_group_semantics() -> None:
    """Strict order in a group, and nothing of a group while one of its messages is in flight.

    Unpatched moto hands out a group's tail first after the batch failed, and may deliver a
    later message of a group while an earlier one is in flight.
    """
    from moto.sqs.models import sqs_backends

    backend = sqs_backends["000000000042"]["ap-northeast-1"]
    name = f"order-{uuid.uuid4().hex[:8]}.fifo"
    backend.create_queue(name=name, FifoQueue="true", VisibilityTimeout="30")
    clock = VirtualClock(datetime(2026, 11, 30, tzinfo=UTC))

    def receive(count: int = 10) -> list[Any]:
        return backend.receive_message(name, count, 0, 30)  # type: ignore[no-any-return]

    with virtual_time(clock), faithful_fifo_groups():
        for i in range(3):
            backend.send_message(name, f"g{i}", deduplication_id=f"g{i}", group_id="g")
        backend.send_message(name, "h0", deduplication_id="h0", group_id="h")

        batch = receive()
        assert [m.body for m in batch] == ["g0", "g1", "g2", "h0"]  # in order, groups together
        for message in reversed(batch[:3]):  # the batch failed: all of g back at once
            backend.change_message_visibility(name, message.receipt_handle, 0)

        assert [m.body for m in receive(1)] == ["g0"]  # the head first, never the tail
        assert receive() == []  # g0 is in flight: nothing of g; h0 is still in flight too
        clock.set(clock.time() + 31)
        assert [m.body for m in receive()] == ["g0", "g1", "g2", "h0"]


def test_the_other_networks_draw_apart_from_the_rest_of_the_schedule() -> None:
    """Their outages come from their own draws: a schedule without them is the X-only one, and a
    network added (Bluesky, Discord...) changes no other network's outages."""

    def plans(networks: tuple[str, ...], kinds: frozenset[Fault] = ALL_FAULTS) -> list[Any]:
        return [plan_step(7, i, kinds, at=i * 1800.0, interval=1800.0, networks=networks) for i in range(80)]

    alone, two, three = plans(()), plans(("mastodon", "misskey")), plans(("bluesky", "mastodon", "misskey"))

    assert [replace(p, network_windows={}) for p in two] == alone
    assert [p.network_windows.get("mastodon") for p in three] == [
        p.network_windows.get("mastodon") for p in two
    ]
    assert any("mastodon" in p.network_windows for p in two) and any(
        "misskey" in p.network_windows for p in two
    )
    assert any(p.rates.crash_network for p in two)
    quiet = plans(
        ("mastodon", "misskey"), ALL_FAULTS - {Fault.NET_401, Fault.NET_429, Fault.NET_5XX, Fault.NET_DROP}
    )
    assert all(not p.network_windows for p in quiet)
    assert [replace(p, network_windows={}) for p in quiet] == alone
