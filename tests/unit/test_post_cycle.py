"""The poster's decision table and its pure helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from bmsuploader.aws.queue import MAX_VISIBILITY_SECONDS
from bmsuploader.aws.state import budget_month
from bmsuploader.contract.errors import (
    AuthError,
    BudgetExceededError,
    Disposition,
    PermanentPublishError,
    PoisonMessageError,
    RateLimitedError,
    TransientPublishError,
)
from bmsuploader.post.cycle import BACKOFF_CAP_SECONDS, decide, retry_delay
from bmsuploader_local.template import load_template


@pytest.mark.parametrize(
    ("error", "disposition", "outcome"),
    [
        (PoisonMessageError("bad schema"), Disposition.DEAD_LETTER, "poisoned"),
        (PermanentPublishError("400 text too long"), Disposition.DEAD_LETTER, "poisoned"),
        (BudgetExceededError("budget"), Disposition.SET_ASIDE, "budget_blocked"),
        (RateLimitedError("429", delay_seconds=120), Disposition.PARK, "rate_limited"),
        (AuthError("401"), Disposition.PARK, "auth_failed"),
        (TransientPublishError("503"), Disposition.RETRY, "retry"),
        (IdempotencyAlreadyInProgressError("in progress"), Disposition.RETRY, "in_progress"),
        (KeyError("a bug"), Disposition.RETRY, "retry"),
    ],
)
def test_every_failure_has_one_disposition(error: Exception, disposition: Disposition, outcome: str) -> None:
    decision = decide(error, receive_count=1)

    assert (decision.disposition, decision.outcome) == (disposition, outcome)


def test_rate_limit_waits_for_the_reset_not_the_backoff() -> None:
    assert decide(RateLimitedError("429", delay_seconds=700), receive_count=9).delay_seconds == 700


def test_delays_never_exceed_what_sqs_accepts() -> None:
    decision = decide(RateLimitedError("usage cap", delay_seconds=86_400), receive_count=1)

    assert decision.delay_seconds == MAX_VISIBILITY_SECONDS < 12 * 3600


def test_backoff_grows_then_caps_at_an_hour() -> None:
    delays = [retry_delay(n) for n in range(1, 10)]

    assert delays[:4] == [60, 120, 240, 480]
    assert delays[-1] == BACKOFF_CAP_SECONDS == 3600
    assert delays == sorted(delays)


def test_a_three_day_outage_does_not_push_messages_to_the_dlq() -> None:
    template = load_template(Path(__file__).resolve().parents[2] / "template.yaml")
    max_receive_count = template["Resources"]["Queue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    receives, waited = 0, 0
    while waited < 72 * 3600:
        receives += 1
        waited += retry_delay(receives)

    assert receives == 77
    assert receives < max_receive_count


def test_the_budget_month_is_japan_time() -> None:
    # 15:00 UTC on the 30th is midnight, December 1st, in Tokyo (UTC+9).
    assert budget_month(datetime(2026, 11, 30, 14, 59, tzinfo=UTC)) == "2026-11"
    assert budget_month(datetime(2026, 11, 30, 15, 0, tzinfo=UTC)) == "2026-12"
