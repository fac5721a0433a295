"""One queued entry -> one post on X, and what to do when that fails.

The poster runs :meth:`Announcer.announce` inside Powertools'
``idempotent_function`` keyed on (source, entry id) (see
:mod:`bmsuploader.post.batch`), and turns any exception into a
:class:`Decision` with :func:`decide`. **This is the failure table** -- the
one place where retry, park, set aside and dead-letter are chosen (README
and other docstrings point here):

==========================  ==============  ==========================================
failure                     disposition     what happens to the message
==========================  ==============  ==========================================
bad body / unknown schema   dead-letter     copied to the DLQ with a ``reason``; group continues
400 from X                  dead-letter     same
429 rate limit / usage cap  park            invisible until ``x-rate-limit-reset`` (<= 12 h)
401 / permission 403        park            invisible for a growing delay (<= 1 h); one error
                                            line names the fix
monthly spend limit         set aside       parked in the DynamoDB backlog, in order; the fetcher
                                            re-queues it when the budget allows (SQS would drop a
                                            message after 14 days, a budget can hold it a month)
5xx / timeout / other       retry           invisible for a growing delay (<= 1 h)
another invocation on it    retry           same (Powertools: IdempotencyAlreadyInProgressError)
==========================  ==============  ==========================================

If setting a message aside or dead-lettering it fails (an AWS error), it is
retried instead: it stays on the queue with a growing delay, and the log says
so. Records that the batch processor skips behind a failure get the failed
record's delay.

Parking and retrying never sleep in Lambda: they set the message's
visibility timeout and report it as a batch item failure. The queue's
``maxReceiveCount`` (template.yaml) is sized so that a 3-day outage at the
1-hour cap (~75 receives) does not push healthy messages to the DLQ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from pydantic import BaseModel, ConfigDict

from bmsuploader.aws.queue import clamp_visibility
from bmsuploader.aws.state import StateStore, budget_month
from bmsuploader.config.sources import SourcesConfig
from bmsuploader.config.templates import DEFAULT_TEMPLATE
from bmsuploader.contract.errors import BmsUploaderError, BudgetExceededError, Disposition, PublishError
from bmsuploader.contract.message import EntryMessage
from bmsuploader.contract.outcomes import Outcome
from bmsuploader.contract.settings import MICRO, Spending
from bmsuploader.post.publishing import Publisher
from bmsuploader.post.rendering import RenderedPost, render_post

BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 60 * 60


def retry_delay(receive_count: int) -> int:
    """Growing delay for transient failures: 1, 2, 4, ... minutes, capped at 1 h."""
    exponent = max(0, min(receive_count - 1, 16))
    delay: int = BACKOFF_BASE_SECONDS * 2**exponent
    return min(delay, BACKOFF_CAP_SECONDS)


@dataclass(frozen=True)
class Decision:
    disposition: Disposition
    outcome: Outcome
    delay_seconds: int
    reason: str


def decide(exc: BaseException, receive_count: int) -> Decision:
    """Map any failure of one record to what the poster does with it (the table above)."""
    if isinstance(exc, IdempotencyAlreadyInProgressError):
        return Decision(Disposition.RETRY, Outcome.IN_PROGRESS, retry_delay(receive_count), str(exc))
    if not isinstance(exc, BmsUploaderError):
        reason = f"{type(exc).__name__}: {exc}"
        return Decision(Disposition.RETRY, Outcome.RETRY, retry_delay(receive_count), reason)
    if exc.disposition is Disposition.DEAD_LETTER:
        return Decision(Disposition.DEAD_LETTER, Outcome.POISONED, 0, str(exc))
    outcome = exc.outcome if isinstance(exc, PublishError) else Outcome.RETRY
    if exc.disposition is Disposition.SET_ASIDE:
        return Decision(Disposition.SET_ASIDE, outcome, 0, str(exc))
    asked = exc.delay_seconds if isinstance(exc, PublishError) else None
    return Decision(exc.disposition, outcome, clamp_visibility(asked or retry_delay(receive_count)), str(exc))


class AnnounceResult(BaseModel):
    """What one announcement did. Stored by Powertools idempotency and replayed from it."""

    model_config = ConfigDict(frozen=True)

    outcome: Outcome
    tweet_id: str | None
    text: str
    weighted_length: int
    has_url: bool
    #: estimated cost of this post in micro-USD (a duplicate was charged when X took it)
    cost_micro: int
    month_spend_micro: int
    invocation_id: str
    posted_at: str


def render_for(sources: SourcesConfig | None, message: EntryMessage) -> RenderedPost:
    """The post a message becomes with the current sources file (the poster's rule, also
    ``bmsuploader redrive --preview``)."""
    try:
        source = sources.get(message.source) if sources else None
    except KeyError:
        source = None
    if source is None:
        # Removed from sources.toml while its entries were queued: post
        # them with the default template rather than lose them.
        return render_post(message, template=DEFAULT_TEMPLATE, include_link=True)
    return render_post(message, template=source.template, include_link=source.include_link)


@dataclass
class Announcer:
    """Render, reserve the spend, publish. Runs inside the idempotent function."""

    sources: SourcesConfig | None
    publisher: Callable[[], Publisher]
    store: StateStore
    spending: Spending
    clock: Callable[[], datetime]

    def render(self, message: EntryMessage) -> RenderedPost:
        return render_for(self.sources, message)

    def announce(self, message: EntryMessage, *, invocation_id: str, from_backlog: bool) -> AnnounceResult:
        post = self.render(message)
        now = self.clock()
        month = budget_month(now)
        cost = self.spending.cost_micro(has_url=post.has_url)
        reservation = self.store.budget.reserve(
            month, cost_micro=cost, limit_micro=self.spending.limit_micro, from_backlog=from_backlog
        )
        if not reservation.granted:
            if reservation.reason == "budget":
                raise BudgetExceededError(
                    f"monthly spend limit of USD {self.spending.monthly_spend_limit_usd} reached for "
                    f"{month} (USD {reservation.spend_micro / MICRO:.3f} spent, this post costs "
                    f"USD {cost / MICRO:.3f}); the entry waits in the backlog and the fetcher re-queues "
                    "it when the month turns (raise MonthlySpendLimitUSD to post sooner)"
                )
            raise BudgetExceededError(
                "older entries wait in the backlog; this one waits behind them to keep upload order"
            )
        try:
            result = self.publisher().publish(post.text)
        except BaseException:
            self.store.budget.release(month, cost_micro=cost)
            raise
        if result.dry_run:
            outcome = Outcome.DRY_RUN
        else:
            outcome = Outcome.DUPLICATE if result.duplicate else Outcome.POSTED
        return AnnounceResult(
            outcome=outcome,
            tweet_id=result.tweet_id,
            text=post.text,
            weighted_length=post.weighted_length,
            has_url=post.has_url,
            # A duplicate is almost always our own earlier attempt that X
            # accepted before we heard back: it was charged then.
            cost_micro=cost,
            month_spend_micro=reservation.spend_micro,
            invocation_id=invocation_id,
            posted_at=now.astimezone(UTC).isoformat(),
        )
