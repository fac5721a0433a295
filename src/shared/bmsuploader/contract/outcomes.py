"""Outcomes: the one word every log line about an entry ends with, and its metric.

The poster logs ``outcome`` on every line that ends an attempt; the saved
Logs Insights queries and the alarms key on these words and metric names, so
they are defined once here.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    POSTED = "posted"
    DRY_RUN = "dry_run"  # rendered and logged; DRY_RUN is on, nothing went to X
    DUPLICATE = "duplicate"  # X already had it, or an earlier invocation completed it
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"
    POISONED = "poisoned"  # moved to the dead-letter queue
    BUDGET_BLOCKED = "budget_blocked"  # set aside in the backlog
    RETRY = "retry"
    IN_PROGRESS = "in_progress"  # another invocation is posting this entry right now
    WAITING = "waiting"  # skipped behind a failure in the same batch

    @property
    def metric(self) -> str:
        return _METRICS[self]


_METRICS = {
    Outcome.POSTED: "Posted",
    Outcome.DRY_RUN: "DryRun",
    Outcome.DUPLICATE: "Duplicate",
    Outcome.RATE_LIMITED: "RateLimited",
    Outcome.AUTH_FAILED: "AuthFailed",
    Outcome.POISONED: "Poisoned",
    Outcome.BUDGET_BLOCKED: "BudgetBlocked",
    Outcome.RETRY: "Retried",
    Outcome.IN_PROGRESS: "Retried",
    Outcome.WAITING: "Waiting",
}
