"""The poster's announce step inside the idempotent function: what a failing attempt leaves for the next.

Powertools removes an attempt's record as an error leaves the idempotent function, so whatever
the next attempt must know ("the network may already hold this post") is written before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bmsuploader.contract.errors import AuthError, TransientPublishError, UnknownOutcomeError
from bmsuploader.contract.message import EntryMessage
from bmsuploader.post.batch import KeepRecord, Poster

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MESSAGE = EntryMessage(
    source="stella",
    entry_id="00123",
    title="星の欠片",
    url="https://uploader.example.jp/up/00123.zip",
    fetched_at=NOW,
    destination="io",
)


class Attempts:
    def __init__(self, fails: bool = False) -> None:
        self.marks: list[tuple[str, str, str | None, int]] = []
        self.fails = fails

    def remember_unknown(self, source: str, entry_id: str, destination: str | None, *, now: int) -> None:
        if self.fails:
            raise TimeoutError("DynamoDB did not answer")
        self.marks.append((source, entry_id, destination, now))


class Announcer:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def announce(self, message: EntryMessage, **_: Any) -> Any:
        raise self.error


class Logger:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def exception(self, text: str, **_: Any) -> None:
        self.errors.append(text)


def poster(error: Exception, attempts: Attempts, logger: Logger | None = None) -> Poster:
    return Poster(
        announcer=Announcer(error),  # type: ignore[arg-type]
        queue=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        logger=logger or Logger(),  # type: ignore[arg-type]
        metrics=None,  # type: ignore[arg-type]
        clock=lambda: NOW,
        forget_credentials=lambda: None,
        attempts=attempts,  # type: ignore[arg-type]
    )


def announce(target: Poster, *, maybe_posted: bool) -> None:
    target.announce(MESSAGE, invocation_id="i-1", from_backlog=False, maybe_posted=maybe_posted)


@pytest.mark.parametrize(
    ("error", "maybe_posted", "marked"),
    [
        # the network did not answer after we sent: it may hold the post
        (UnknownOutcomeError("dropped"), False, True),
        # an earlier attempt died with the request out (its expired record told us so), and this
        # one failed before it could check: the record that told us is removed with this error
        (AuthError("401 while reading the account's notes"), True, True),
        (TransientPublishError("could not read the credentials"), True, True),
        # nothing was sent and nothing was suspected: nothing to pass on
        (TransientPublishError("connection refused"), False, False),
    ],
)
def test_a_failing_attempt_passes_on_that_the_network_may_hold_the_post(
    error: Exception, maybe_posted: bool, marked: bool
) -> None:
    attempts = Attempts()

    with pytest.raises(type(error)):
        announce(poster(error, attempts), maybe_posted=maybe_posted)

    assert attempts.marks == ([("stella", "00123", "io", int(NOW.timestamp()))] if marked else [])


def test_a_mark_that_cannot_be_written_keeps_the_attempts_record_instead() -> None:
    # Powertools removes an attempt's record only for an Exception: KeepRecord (a BaseException)
    # leaves it IN_PROGRESS, the trace a crashed attempt leaves, so the next attempt still checks
    # first -- also if this message comes back after being set aside (fault test seed 1/100).
    logger = Logger()

    with pytest.raises(KeepRecord) as caught:
        announce(poster(UnknownOutcomeError("dropped"), Attempts(fails=True), logger), maybe_posted=False)

    assert not isinstance(caught.value, Exception)
    assert isinstance(caught.value.failure, UnknownOutcomeError)
    assert logger.errors and "record is kept in progress" in logger.errors[0]
