"""One queued entry -> one post on X, and what to do when that fails.

The poster handler (``src/poster/app.py``) runs :meth:`Announcer.announce`
inside Powertools' ``idempotent_function`` keyed on (source, entry id), and
turns any exception into a :class:`Decision` with :func:`decide` -- the one
place where retry, park and dead-letter are chosen:

==========================  ==============  ==========================================
failure                     disposition     what happens to the message
==========================  ==============  ==========================================
bad body / unknown schema   dead-letter     copied to the DLQ with a ``reason``; group continues
400 from X                  dead-letter     same
429 rate limit / usage cap  park            invisible until ``x-rate-limit-reset`` (bounded)
401 / permission 403        park            invisible for a growing delay (<= 1 h); one error
                                            line names the fix
monthly budget reached      set aside       parked in the DynamoDB backlog, in order; the fetcher
                                            re-queues it when the budget allows (SQS would drop a
                                            message after 14 days, a budget can hold it a month)
5xx / timeout / other       retry           invisible for a growing delay (<= 1 h)
==========================  ==============  ==========================================

Parking and retrying never sleep in Lambda: they set the message's
visibility timeout and report it as a batch item failure. The queue's
``maxReceiveCount`` (template.yaml) is sized so that a 3-day outage at the
1-hour cap (~75 receives) does not push healthy messages to the DLQ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from bmsuploader.aws.queue import MAX_VISIBILITY_SECONDS
from bmsuploader.aws.state import StateStore, budget_month
from bmsuploader.config.sources import DEFAULT_TEMPLATE, SourcesConfig
from bmsuploader.contract.errors import (
    BmsUploaderError,
    BudgetExceededError,
    Disposition,
    PublishError,
)
from bmsuploader.contract.message import EntryMessage
from bmsuploader.post.publishing import Publisher
from bmsuploader.post.rendering import RenderedPost, render_post

BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 60 * 60


@dataclass(frozen=True)
class Pricing:
    """Estimated X cost per post (pay-per-use); parameters, not constants."""

    per_post: float = 0.015
    per_post_with_url: float = 0.200

    def cost(self, post: RenderedPost) -> float:
        return self.per_post_with_url if post.has_url else self.per_post


def retry_delay(receive_count: int) -> int:
    """Growing delay for transient failures: 1, 2, 4, ... minutes, capped at 1 h."""
    exponent = max(0, min(receive_count - 1, 16))
    delay: int = BACKOFF_BASE_SECONDS * 2**exponent
    return min(delay, BACKOFF_CAP_SECONDS)


@dataclass(frozen=True)
class Decision:
    disposition: Disposition
    outcome: str
    delay_seconds: int
    reason: str


def decide(exc: BaseException, receive_count: int) -> Decision:
    """Map any failure of one record to what the poster does with it."""
    if isinstance(exc, IdempotencyAlreadyInProgressError):
        # Another invocation is posting this very entry right now.
        return Decision(Disposition.RETRY, "in_progress", retry_delay(receive_count), str(exc))
    if isinstance(exc, BmsUploaderError):
        delay = exc.delay_seconds if isinstance(exc, PublishError) and exc.delay_seconds else None
        outcome = exc.outcome if isinstance(exc, PublishError) else "poisoned"
        if exc.disposition is Disposition.DEAD_LETTER:
            return Decision(Disposition.DEAD_LETTER, "poisoned", 0, str(exc))
        if exc.disposition is Disposition.SET_ASIDE:
            return Decision(Disposition.SET_ASIDE, outcome, 0, str(exc))
        return Decision(
            exc.disposition,
            outcome,
            min(delay or retry_delay(receive_count), MAX_VISIBILITY_SECONDS),
            str(exc),
        )
    return Decision(Disposition.RETRY, "retry", retry_delay(receive_count), f"{type(exc).__name__}: {exc}")


@dataclass
class Announcer:
    """Render, check the budget, publish. Runs inside the idempotent function."""

    sources: SourcesConfig | None
    publisher: Callable[[], Publisher]
    store: StateStore
    monthly_budget: int
    pricing: Pricing
    clock: Callable[[], datetime]

    def render(self, message: EntryMessage) -> RenderedPost:
        try:
            source = self.sources.get(message.source) if self.sources else None
        except KeyError:
            source = None
        if source is None:
            # Removed from sources.toml while its entries were queued: post
            # them with the default template rather than lose them.
            return render_post(message, template=DEFAULT_TEMPLATE, include_link=True)
        return render_post(message, template=source.template, include_link=source.include_link)

    def announce(self, message: EntryMessage, *, invocation_id: str, from_backlog: bool) -> dict[str, Any]:
        post = self.render(message)
        now = self.clock()
        month = budget_month(now)
        reservation = self.store.reserve_post(month, self.monthly_budget, from_backlog=from_backlog)
        if not reservation.granted:
            if reservation.reason == "budget":
                raise BudgetExceededError(
                    f"monthly post budget of {self.monthly_budget} reached for {month} "
                    f"({reservation.posts} posted); the entry waits in the backlog and the fetcher "
                    "re-queues it when the budget allows (raise MonthlyPostBudget to post sooner)"
                )
            raise BudgetExceededError(
                "older entries wait in the backlog; this one waits behind them to keep upload order"
            )
        try:
            result = self.publisher().publish(post.text)
        except BaseException:
            self.store.release_post(month)
            raise
        return {
            "outcome": "duplicate" if result.duplicate else "posted",
            "tweet_id": result.tweet_id,
            "text": post.text,
            "weighted_length": post.weighted_length,
            "has_url": post.has_url,
            # A duplicate is almost always our own earlier attempt that X
            # accepted before we heard back: it was charged then.
            "cost_usd": self.pricing.cost(post),
            "month_posts": reservation.posts,
            "invocation_id": invocation_id,
            "posted_at": now.astimezone(UTC).isoformat(),
        }
