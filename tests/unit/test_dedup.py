"""Dedup decisions: pure rules, plain data."""

from __future__ import annotations

from bmsuploader.config.sources import FirstRun
from bmsuploader.fetch.dedup import plan_first_run, plan_new
from bmsuploader.fetch.parsing import Entry


def listing(*ids: int) -> list[Entry]:
    """Entries newest first, as an uploader lists them."""
    return [Entry(entry_id=f"{i:05d}", title=f"chart {i}", url=f"http://x/{i}") for i in ids]


def ids(entries: object) -> list[str]:
    return [e.entry_id for e in entries]  # type: ignore[attr-defined]


def test_first_run_baseline_records_everything_and_sends_nothing() -> None:
    plan = plan_first_run(listing(5, 4, 3), FirstRun(), cap=20)
    assert plan.send == ()
    assert ids(plan.record) == ["00005", "00004", "00003"]
    assert plan.complete


def test_first_run_post_newest_sends_newest_n_oldest_first_and_records_the_rest() -> None:
    plan = plan_first_run(listing(5, 4, 3, 2), FirstRun(policy="post_newest", count=2), cap=20)
    assert ids(plan.send) == ["00004", "00005"]
    assert ids(plan.record) == ["00003", "00002"]


def test_first_run_post_newest_over_cap_defers_the_newest_instead_of_baselining_them() -> None:
    plan = plan_first_run(listing(5, 4, 3, 2), FirstRun(policy="post_newest", count=3), cap=1)
    assert ids(plan.send) == ["00003"]
    assert ids(plan.deferred) == ["00004", "00005"]
    assert ids(plan.record) == ["00002"]
    assert not plan.complete


def test_new_entries_go_oldest_first() -> None:
    plan = plan_new(listing(9, 8, 7), cap=20)
    assert ids(plan.send) == ["00007", "00008", "00009"]
    assert plan.complete


def test_cap_defers_the_newest_and_drops_nothing() -> None:
    plan = plan_new(listing(9, 8, 7, 6, 5), cap=2)
    assert ids(plan.send) == ["00005", "00006"]
    assert ids(plan.deferred) == ["00007", "00008", "00009"]
    assert len(plan.send) + len(plan.deferred) == 5


def test_zero_cap_sends_nothing_and_defers_all() -> None:
    plan = plan_new(listing(2, 1), cap=0)
    assert plan.send == ()
    assert ids(plan.deferred) == ["00001", "00002"]
