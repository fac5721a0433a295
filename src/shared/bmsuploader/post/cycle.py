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
may already be posted,      dead-letter     same, marked ``check_first``: ``bmsuploader redrive``
network cannot be asked                     sends it back only by name, after the operator looked
(``MaybePostedError``)
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
from bmsuploader.config.destinations import DEFAULT_DESTINATIONS, Destination
from bmsuploader.config.sources import SourcesConfig
from bmsuploader.config.templates import DEFAULT_TEMPLATE
from bmsuploader.contract.errors import (
    BmsUploaderError,
    BudgetExceededError,
    Disposition,
    PoisonMessageError,
    PublishError,
)
from bmsuploader.contract.message import EntryMessage
from bmsuploader.contract.outcomes import Outcome
from bmsuploader.contract.settings import MICRO, Spending
from bmsuploader.post.destinations import rules_for
from bmsuploader.post.networks.base import PostRequest, Publisher, PublishResult, post_key
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
    #: dead-lettered as "may already be posted": marked so, redriven only by name
    check_first: bool = False


def decide(exc: BaseException, receive_count: int) -> Decision:
    """Map any failure of one record to what the poster does with it (the table above)."""
    if isinstance(exc, IdempotencyAlreadyInProgressError):
        return Decision(Disposition.RETRY, Outcome.IN_PROGRESS, retry_delay(receive_count), str(exc))
    if not isinstance(exc, BmsUploaderError):
        reason = f"{type(exc).__name__}: {exc}"
        return Decision(Disposition.RETRY, Outcome.RETRY, retry_delay(receive_count), reason)
    if exc.disposition is Disposition.DEAD_LETTER:
        return Decision(Disposition.DEAD_LETTER, Outcome.POISONED, 0, str(exc), exc.check_first)
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
    #: where it was posted (records written before destinations existed were all X's)
    destination: str = "x"


def destination_of(sources: SourcesConfig | None, message: EntryMessage) -> Destination:
    """The configured destination a message is for. A message for a destination that has
    been removed from the sources file is poison: without its secrets it cannot be posted
    (it goes to the dead-letter queue, whence it can be redriven once the destination is back)."""
    destination = sources.destination(message.destination) if sources else None
    if destination is not None:
        return destination
    if message.destination is None:
        return DEFAULT_DESTINATIONS[0]  # X, as before destinations existed
    raise PoisonMessageError(
        f"destination {message.destination!r} is not in the sources file any more; "
        "add it back and redrive the message, or leave it in the dead-letter queue"
    )


def render_for(
    sources: SourcesConfig | None, message: EntryMessage, destination: Destination | None = None
) -> RenderedPost:
    """The post a message becomes with the current sources file, by its destination's rules
    (the poster's rule, also ``bmsuploader redrive --preview``). ``destination``: the message's,
    when the caller has looked it up already (:func:`destination_of`)."""
    destination = destination or destination_of(sources, message)
    try:
        source = sources.get(message.source) if sources else None
    except KeyError:
        source = None
    # A source removed from sources.toml while its entries were queued: post
    # them with the default template rather than lose them.
    template = destination.template or (source.template if source else DEFAULT_TEMPLATE)
    include_link = destination.include_link
    if include_link is None:
        include_link = source.include_link if source else True
    return render_post(
        message, template=template, include_link=include_link, rules=rules_for(destination.kind)
    )


@dataclass
class Announcer:
    """Render, reserve the spend, publish. Runs inside the idempotent function."""

    sources: SourcesConfig | None
    publisher: Callable[[Destination], Publisher]
    store: StateStore
    spending: Spending
    clock: Callable[[], datetime]

    def announce(
        self, message: EntryMessage, *, invocation_id: str, from_backlog: bool, maybe_posted: bool = False
    ) -> AnnounceResult:
        destination = destination_of(self.sources, message)
        post = render_for(self.sources, message, destination)
        now = self.clock()
        request = PostRequest(
            text=post.text,
            link=post.link,
            key=post_key(destination.name, message.source, message.entry_id),
            created_at=message.fetched_at,
            maybe_posted=maybe_posted,
        )
        if destination.kind != "x":
            # Free networks: no spend to reserve, so no budget call (their posts are counted
            # in the metrics by destination).
            return self._result(
                self.publisher(destination).publish(request),
                post,
                cost=0,
                month_spend=0,
                invocation_id=invocation_id,
                now=now,
                destination=destination.name,
            )
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
            result = self.publisher(destination).publish(request)
        except BaseException:
            self.store.budget.release(month, cost_micro=cost)
            raise
        # A duplicate is almost always our own earlier attempt that X accepted
        # before we heard back: it was charged then.
        return self._result(
            result,
            post,
            cost=cost,
            month_spend=reservation.spend_micro,
            invocation_id=invocation_id,
            now=now,
            destination=destination.name,
        )

    @staticmethod
    def _result(
        result: PublishResult,
        post: RenderedPost,
        *,
        cost: int,
        month_spend: int,
        invocation_id: str,
        now: datetime,
        destination: str,
    ) -> AnnounceResult:
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
            cost_micro=cost,
            month_spend_micro=month_spend,
            invocation_id=invocation_id,
            posted_at=now.astimezone(UTC).isoformat(),
            destination=destination,
        )
