"""One SQS batch of the poster: each record's attempt, and the delay of what waits behind a failure.

The handler (``src/poster/app.py``) builds a :class:`Poster` once per
container and a :class:`PosterBatch` per invocation, and hands
:meth:`PosterBatch.handle` to Powertools' ``SqsFifoPartialProcessor``.

Per record: validate the body against the message schema, announce it once
(the idempotent function), and log one line with the outcome. A failure
becomes a :class:`~bmsuploader.post.cycle.Decision` (the failure table is
:mod:`bmsuploader.post.cycle`) and is acted on here: dead-letter or set
aside (the record then counts as done), or delay and report it failed.

A message group is one (destination, source) pair. The processor runs with
``skip_group_on_error``: a failure fails the later records of its own group
(which keeps that group's order) and no others, so one network's outage never
holds back another. The skipped records get their group's delay
(:meth:`PosterBatch.delay_skipped`), so a systemic problem does not make them
cycle back every few minutes. A failure that parks a *destination* (rate limit,
credentials) is systemic to it: the batch's later records for that destination,
in any group, wait with the same delay without calling the network again.

A record may follow an attempt whose outcome is unknown; the batch asks
:class:`~bmsuploader.aws.idempotency.Attempts` (one read) and tells the publisher,
which checks the network before posting again. For X only a redelivered record
(receive count above 1) is asked about (X's duplicate-content check answers any
attempt); for the other networks every record is, since a message the fetcher sent
again after SQS's 5-minute deduplication window is received a first time although
the entry's earlier message may have been posted (and, on Discord, held for the operator).
:meth:`Poster.announce` writes the "outcome unknown" mark *inside* the idempotent
function, before the error leaves it: Powertools then removes the attempt's record,
and a crash or an unconfirmed removal there must not take the only trace with it. For
the same reason an attempt that was told the post may exist and fails for any reason
writes the mark: the record that told it (an attempt that died) is removed too.

No path here turns a handled record into a failure: a delay or a dead-letter
copy that AWS refuses is logged, and the record is retried, never lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bmsuploader.aws.idempotency import Attempts
from bmsuploader.aws.queue import BACKLOG_ORDER_ATTRIBUTE, Delay, QueueControl
from bmsuploader.aws.state import StateStore
from bmsuploader.contract.errors import BmsUploaderError, Disposition, UnknownOutcomeError
from bmsuploader.contract.message import EntryMessage, parse_message
from bmsuploader.contract.outcomes import Outcome
from bmsuploader.contract.settings import MICRO
from bmsuploader.post.cycle import Announcer, AnnounceResult, Decision, decide, retry_delay

#: The log keys :meth:`PosterBatch.handle` adds for one record's entry, removed when it is done.
_ENTRY_KEYS = ("source", "entry_id", "destination")


class AnnounceOnce(Protocol):
    """:meth:`Announcer.announce` wrapped in Powertools' ``idempotent_function``."""

    def __call__(
        self, *, message: EntryMessage, invocation_id: str, from_backlog: bool, maybe_posted: bool
    ) -> AnnounceResult: ...


@dataclass
class Poster:
    """The collaborators, built once per container."""

    announcer: Announcer
    queue: QueueControl
    store: StateStore
    logger: Logger
    metrics: Metrics
    clock: Callable[[], datetime]
    #: called when a network rejects the credentials: the next attempt re-reads them
    forget_credentials: Callable[[], None]
    attempts: Attempts

    def batch(self, invocation_id: str, announce_once: AnnounceOnce) -> PosterBatch:
        return PosterBatch(self, invocation_id, announce_once)

    def announce(
        self, message: EntryMessage, *, invocation_id: str, from_backlog: bool, maybe_posted: bool
    ) -> AnnounceResult:
        """The body of the idempotent function (``src/poster/app.py``): announce; when it fails
        and the network may hold the post -- this attempt's outcome is unknown, or an earlier
        one's was and this one did not get to check -- mark it before re-raising."""
        try:
            return self.announcer.announce(
                message, invocation_id=invocation_id, from_backlog=from_backlog, maybe_posted=maybe_posted
            )
        except Exception as exc:
            unknown = maybe_posted or isinstance(exc, UnknownOutcomeError)
            if unknown and not self._remember_unknown(message):
                # The mark could not be written. Keep the attempt's own record instead: Powertools
                # removes it only for an Exception, and an IN_PROGRESS record whose time has
                # passed is what a crashed attempt leaves, which the next attempt reads as
                # "check first" (Attempts.maybe_posted) -- on every network, even if this message
                # is delivered again after being set aside.
                raise KeepRecord(exc) from exc
            raise

    def _remember_unknown(self, message: EntryMessage) -> bool:
        """The network may have taken the post: say so for the next attempt (which checks).

        Written while the attempt's record is still there. Powertools removes the record as the
        error leaves the idempotent function, and a crash right then, or a removal AWS applied
        without confirming it (Powertools then raises its own error in place of ours), would
        otherwise leave the next attempt no trace of this one."""
        try:
            self.attempts.remember_unknown(
                message.source,
                message.entry_id,
                message.destination,
                now=int(self.clock().timestamp()),
            )
        except Exception:
            self.logger.exception(
                "could not record that the post's outcome is unknown; the attempt's record is kept "
                "in progress instead, so the next attempt checks before posting again",
                extra={"outcome": "unknown_outcome_unrecorded"},
            )
            return False
        return True


@dataclass
class PosterBatch:
    """One invocation's records."""

    poster: Poster
    invocation_id: str
    announce_once: AnnounceOnce
    #: each failed group's decision: what its skipped records wait for
    decisions: dict[str, Decision] = field(default_factory=dict)
    #: destinations a systemic failure parked in this batch: their later records wait too
    parked: dict[str, Decision] = field(default_factory=dict)
    delayed: set[str] = field(default_factory=set)

    def handle(self, record: SQSRecord) -> AnnounceResult | None:
        """The processor's record handler. Raises when the record is to stay on the queue."""
        log = self.poster.logger
        receive_count = int(record.attributes.approximate_receive_count or 1)
        log.append_keys(message_id=record.message_id, receive_count=receive_count)
        message: EntryMessage | None = None
        try:
            message = parse_message(record.body)
            log.append_keys(
                source=message.source, entry_id=message.entry_id, destination=message.destination_name
            )
            if (parked := self.parked.get(message.destination_name)) is not None:
                self._wait_behind(record, parked)
            # X ignores it (its duplicate-content check answers every attempt). Elsewhere a first
            # receive may follow an earlier attempt too: a message the fetcher sent again (a run
            # failed between the send and marking the entry seen) after SQS's 5-minute window.
            asks = receive_count > 1 or message.destination is not None
            maybe_posted = asks and self.poster.attempts.maybe_posted(
                message.source,
                message.entry_id,
                message.destination,
                now_ms=int(self.poster.clock().timestamp() * 1000),
            )
            result = self.announce_once(
                message=message,
                invocation_id=self.invocation_id,
                from_backlog=_backlog_order(record) is not None,
                maybe_posted=maybe_posted,
            )
        except _Waiting:
            raise RuntimeError("waits behind its destination's failure") from None
        except KeepRecord as kept:
            self._failed(record, message, decide(kept.failure, receive_count), kept.failure)
            return None
        except Exception as exc:  # noqa: BLE001 - every failure goes through decide()
            self._failed(record, message, decide(exc, receive_count), exc)
            return None
        finally:
            log.remove_keys(["message_id", "receive_count"])
        # Completed in an earlier invocation: the idempotency record answered, the network was not called.
        replayed = result.invocation_id != self.invocation_id
        outcome = Outcome.DUPLICATE if replayed else result.outcome
        log.info(
            f"{outcome}: {result.text}",
            extra={
                "outcome": outcome,
                "tweet_id": result.tweet_id,
                "weighted_length": result.weighted_length,
            },
        )
        self._count(outcome)
        if not replayed and outcome is not Outcome.DRY_RUN:
            self.poster.metrics.add_metric(
                name="EstimatedSpendUSD", unit=MetricUnit.NoUnit, value=result.cost_micro / MICRO
            )
        log.remove_keys(_ENTRY_KEYS)
        return result

    def _wait_behind(self, record: SQSRecord, decision: Decision) -> None:
        """This record's destination was parked earlier in the batch: wait as long, untried."""
        self._count(Outcome.WAITING)
        not_delayed = self._delay([Delay(record.receipt_handle, record.message_id, decision.delay_seconds)])
        self.delayed.add(record.message_id)
        self.decisions.setdefault(record.attributes.message_group_id or "", decision)
        self.poster.logger.info(
            f"{Outcome.WAITING}: its destination is parked ({decision.outcome}) by an earlier record "
            f"of this batch; it comes back "
            + ("after the queue's visibility timeout" if not_delayed else f"in {decision.delay_seconds} s"),
            extra={"outcome": Outcome.WAITING, "delay_seconds": decision.delay_seconds},
        )
        self.poster.logger.remove_keys(_ENTRY_KEYS)
        raise _Waiting

    def delay_skipped(self, event: dict[str, Any], response: dict[str, Any]) -> None:
        """Give the records the processor skipped after a failure their group's delay. Never raises."""
        if not self.decisions:
            return
        failed_ids = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        skipped: list[Delay] = []
        for r in event.get("Records", []):
            decision = self.decisions.get(r.get("attributes", {}).get("MessageGroupId", ""))
            if decision is not None and r["messageId"] in failed_ids and r["messageId"] not in self.delayed:
                skipped.append(Delay(r["receiptHandle"], r["messageId"], decision.delay_seconds))
        if not skipped:
            return
        self._count(Outcome.WAITING, len(skipped))
        not_delayed = self._delay(skipped)
        self.poster.logger.info(
            f"{len(skipped)} later record(s) in this batch wait behind their group's failure; "
            f"{len(skipped) - len(not_delayed)} come back with its delay, the others "
            "after the queue's visibility timeout",
            extra={
                "outcome": Outcome.WAITING,
                "delays": sorted({d.seconds for d in skipped}),
                "not_delayed": not_delayed,
            },
        )

    # --- failures -------------------------------------------------------------------

    def _failed(
        self, record: SQSRecord, message: EntryMessage | None, decision: Decision, exc: Exception
    ) -> None:
        """Act on a decision. Returns when the record is done with; raises to keep it queued."""
        log = self.poster.logger
        if decision.disposition is Disposition.SET_ASIDE and message is not None:
            if self._set_aside(record, message, decision):
                return
            decision = self._retry_instead(decision, record)
        elif decision.disposition is Disposition.DEAD_LETTER:
            if self._dead_letter(record, decision):
                return
            decision = self._retry_instead(decision, record)
        if decision.outcome is Outcome.AUTH_FAILED:
            self.poster.forget_credentials()  # the operator may be rotating them right now
        self.decisions.setdefault(record.attributes.message_group_id or "", decision)
        if decision.disposition is Disposition.PARK and message is not None:
            self.parked.setdefault(message.destination_name, decision)
        self._count(decision.outcome)
        not_delayed = self._delay([Delay(record.receipt_handle, record.message_id, decision.delay_seconds)])
        self.delayed.add(record.message_id)
        comes_back = (
            "after the queue's visibility timeout" if not_delayed else f"in {decision.delay_seconds} s"
        )
        level = log.error if decision.outcome in (Outcome.AUTH_FAILED, Outcome.RETRY) else log.warning
        level(
            f"{decision.outcome}: {decision.reason} -- the message stays queued and comes back {comes_back}",
            extra={"outcome": decision.outcome, "delay_seconds": decision.delay_seconds},
            # A failure we did not classify is a bug or an AWS error: keep its traceback.
            exc_info=not isinstance(exc, BmsUploaderError),
        )
        log.remove_keys(_ENTRY_KEYS)
        raise RuntimeError(decision.reason)

    def _set_aside(self, record: SQSRecord, message: EntryMessage, decision: Decision) -> bool:
        order = _backlog_order(record) or record.attributes.sequence_number or record.message_id
        try:
            self.poster.store.backlog.park(
                message.source,
                order=order,
                entry_id=message.entry_id,
                body=record.body,
                now=self.poster.clock(),
            )
        except Exception:
            self.poster.logger.exception(
                "could not set the entry aside in the backlog; it stays on the queue and is retried",
                extra={"outcome": Outcome.RETRY},
            )
            return False
        self._count(Outcome.BUDGET_BLOCKED)
        self.poster.logger.warning(
            f"{Outcome.BUDGET_BLOCKED}: {decision.reason}",
            extra={"outcome": Outcome.BUDGET_BLOCKED, "backlog_order": order},
        )
        self.poster.logger.remove_keys(_ENTRY_KEYS)
        return True  # done for the batch: the original is deleted, the backlog holds it

    def _dead_letter(self, record: SQSRecord, decision: Decision) -> bool:
        attrs = record.attributes
        try:
            dlq_id = self.poster.queue.dead_letter(
                body=record.body,
                group_id=attrs.message_group_id or "unknown",
                deduplication_id=attrs.message_deduplication_id or record.message_id,
                reason=decision.reason,
                check_first=decision.check_first,
            )
        except Exception:
            self.poster.logger.exception(
                f"could not copy the message to the dead-letter queue ({decision.reason}); it stays on "
                "the queue and is retried",
                extra={"outcome": Outcome.RETRY},
            )
            return False
        self._count(Outcome.POISONED)
        self.poster.logger.error(
            f"{Outcome.POISONED}: moved to the dead-letter queue; its group continues. "
            f"Reason: {decision.reason}",
            extra={
                "outcome": Outcome.POISONED,
                "dlq_message_id": dlq_id,
                "check_first": decision.check_first,
            },
        )
        self.poster.logger.remove_keys(_ENTRY_KEYS)
        return True  # done for the batch: the original is deleted

    def _retry_instead(self, decision: Decision, record: SQSRecord) -> Decision:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        return Decision(Disposition.RETRY, Outcome.RETRY, retry_delay(receive_count), decision.reason)

    def _delay(self, delays: list[Delay]) -> list[str]:
        """Set visibility timeouts; returns the ids that could not be delayed. Never raises."""
        try:
            return self.poster.queue.delay(delays)
        except Exception:
            self.poster.logger.exception(
                f"could not delay {len(delays)} message(s); they come back after the queue's "
                "visibility timeout instead",
                extra={"outcome": "delay_failed"},
            )
            return [d.message_id for d in delays]

    def _count(self, outcome: Outcome, value: int = 1) -> None:
        self.poster.metrics.add_metric(name=outcome.metric, unit=MetricUnit.Count, value=value)


class KeepRecord(BaseException):
    """Carries an attempt's failure past Powertools' idempotent function *without* its record
    being removed (Powertools removes it only for an ``Exception``): the record, left
    IN_PROGRESS, tells the next attempt that this one's outcome is unknown. Caught in
    :meth:`PosterBatch.handle`, which decides on the failure it carries."""

    def __init__(self, failure: Exception) -> None:
        super().__init__(str(failure))
        self.failure = failure


class _Waiting(Exception):
    """Internal: the record waits behind its destination's failure (already delayed and logged)."""


def _backlog_order(record: SQSRecord) -> str | None:
    # Powertools' SQSMessageAttributes: [] wraps the value (and gives None), .get() does not.
    attribute = record.message_attributes[BACKLOG_ORDER_ATTRIBUTE]
    return attribute.string_value if attribute is not None else None
