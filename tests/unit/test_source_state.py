"""The source state: its silence clock (SilentSourceHours) and what it keeps of page 1."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bmsuploader.aws.state import SourceState, SourceStates, Validators
from bmsuploader.aws.state.sources import LISTED_IDS_MAX_BYTES, _state_from_item

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_silence_clock_starts_when_first_watched_and_restarts_on_new_entries() -> None:
    fresh = SourceState().succeeded(NOW, Validators(), "fp", None)
    assert fresh.last_new_at == NOW.isoformat()  # a source is never silent right after upgrade

    later = NOW + timedelta(hours=10)
    quiet = fresh.succeeded(later, Validators(), "fp", None)
    assert quiet.last_new_at == NOW.isoformat()
    assert quiet.silent(later, after_hours=10) and not quiet.silent(later, after_hours=11)
    assert not quiet.silent(later, after_hours=0)  # 0 = off

    found = quiet.succeeded(later, Validators(), "fp", None, found_new=True)
    assert found.last_new_at == later.isoformat() and not found.silent(later, after_hours=1)
    assert replace(found, last_new_at=None).silent(later, after_hours=1) is False


def test_page_one_ids_are_kept_only_while_small_and_survive_the_item() -> None:
    ids = [f"{i:05d}" for i in range(50)]  # a classic listing: 250 bytes
    state = SourceState().succeeded(NOW, Validators(etag='"e"'), "fp", "key", listed_ids=iter(ids))
    assert state.listed_ids == frozenset(ids)

    table = SourceStates("t", client=object())  # type: ignore[arg-type]  # item() makes no call
    item = table.item("s", state)
    assert item["listed_ids"] == {"SS": sorted(ids)}
    assert _state_from_item(item) == state
    assert "listed_ids" not in table.item("s", SourceState())  # a string set cannot be empty

    # A difficulty table's thousands of md5 ids keep only the digest (listing_key).
    md5s = [f"{i:032x}" for i in range(LISTED_IDS_MAX_BYTES // 32 + 1)]
    assert SourceState().succeeded(NOW, Validators(), "fp", "key", listed_ids=md5s).listed_ids == frozenset()
    # Something left waiting: no ids vouched for.
    assert state.succeeded(NOW, Validators(), "fp", None).listed_ids == frozenset()
