"""The source state's silence clock: when a source counts as silent (SilentSourceHours)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bmsuploader.aws.state import SourceState, Validators

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
