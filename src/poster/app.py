"""Poster Lambda: SQS FIFO batch -> one post on X per entry, in order, once.

Thin on purpose. Per record: validate against the shared schema, then run
:meth:`bmsuploader.post.cycle.Announcer.announce` inside Powertools'
``idempotent_function`` keyed on (source, entry id). Failures become a
decision in one place (:func:`bmsuploader.post.cycle.decide`): dead-letter the
message ourselves, or set its visibility timeout and report it failed.

``SqsFifoPartialProcessor`` stops at the first failure and reports the rest
of the batch as failed, which keeps order. The records it skipped get the same
delay as the one that failed, so a systemic problem (rate limit, expired
credentials, budget) does not make other groups' messages cycle every few
minutes towards the DLQ.

Environment (the contract): ``QUEUE_URL``, ``DLQ_URL``, ``TABLE_NAME``,
``IDEMPOTENCY_TABLE``, ``X_PARAMETER_PATH``, ``X_API_BASE_URL``, ``DRY_RUN``,
plus ``MONTHLY_POST_BUDGET``, ``COST_PER_POST``, ``COST_PER_POST_WITH_URL``
and optional ``SOURCES_FILE``.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from bmsuploader.aws.observability import make_logger, make_metrics
from bmsuploader.aws.queue import BACKLOG_ORDER_ATTRIBUTE, Delay, QueueControl
from bmsuploader.aws.state import StateStore
from bmsuploader.config.sources import load_sources
from bmsuploader.contract import clock
from bmsuploader.contract.errors import BmsUploaderError, ConfigError, Disposition
from bmsuploader.contract.message import EntryMessage, parse_message
from bmsuploader.post.cycle import Announcer, Decision, Pricing, decide
from bmsuploader.post.publishing import DryRunPublisher, Publisher, XPublisher, load_credentials

logger = make_logger()
metrics = make_metrics()

#: Posts must never repeat, so the idempotency record outlives any redelivery.
IDEMPOTENCY_EXPIRY_SECONDS = 35 * 24 * 60 * 60

OUTCOME_METRICS = {
    "posted": "Posted",
    "duplicate": "Duplicate",
    "rate_limited": "RateLimited",
    "auth_failed": "AuthFailed",
    "poisoned": "Poisoned",
    "budget_blocked": "BudgetBlocked",
    "retry": "Retried",
    "in_progress": "Retried",
}


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set")
    return value


def _number(name: str, default: str) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number: {exc}") from exc


processor = SqsFifoPartialProcessor()
# We park failed records ourselves and report them as batch item failures;
# a batch where every record is parked is not an invocation error.
processor.raise_on_entire_batch_failure = False

idempotency_config = IdempotencyConfig(
    event_key_jmespath="[source, entry_id]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=IDEMPOTENCY_EXPIRY_SECONDS,
)
persistence = DynamoDBPersistenceLayer(table_name=_require("IDEMPOTENCY_TABLE"))


@cache
def _queue() -> QueueControl:
    return QueueControl(_require("QUEUE_URL"), _require("DLQ_URL"))


def _publisher() -> Publisher:
    if os.environ.get("DRY_RUN", "false").lower() == "true":
        return DryRunPublisher()
    credentials = load_credentials(_require("X_PARAMETER_PATH"))  # cached by Powertools (300 s)
    return _x_publisher(credentials, os.environ.get("X_API_BASE_URL") or None)


@cache
def _x_publisher(credentials: Any, base_url: str | None) -> XPublisher:
    # Cached per credentials: a rotated token builds a new client.
    return XPublisher(credentials, base_url=base_url)


@cache
def _announcer() -> Announcer:
    return Announcer(
        sources=load_sources(),
        publisher=_publisher,
        store=StateStore(_require("TABLE_NAME")),
        monthly_budget=int(_number("MONTHLY_POST_BUDGET", "0")),
        pricing=Pricing(_number("COST_PER_POST", "0.015"), _number("COST_PER_POST_WITH_URL", "0.200")),
        clock=clock.now,
    )


# Powertools' decorator is untyped; the wrapped function keeps this signature.
@idempotent_function(  # type: ignore[untyped-decorator]
    data_keyword_argument="message", persistence_store=persistence, config=idempotency_config
)
def announce_once(*, message: dict[str, Any], invocation_id: str, from_backlog: bool) -> dict[str, Any]:
    return _announcer().announce(
        EntryMessage.model_validate(message), invocation_id=invocation_id, from_backlog=from_backlog
    )


class _Batch:
    """Per-invocation memory: the delay to give records skipped after a failure."""

    def __init__(self, invocation_id: str) -> None:
        self.invocation_id = invocation_id
        self.decision: Decision | None = None
        self.delayed: set[str] = set()


_batch = _Batch("")


def record_handler(record: SQSRecord) -> dict[str, Any] | None:
    receive_count = int(record.attributes.approximate_receive_count or 1)
    logger.append_keys(message_id=record.message_id)
    message: EntryMessage | None = None
    try:
        message = parse_message(record.body)
        logger.append_keys(source=message.source, entry_id=message.entry_id)
        result: dict[str, Any] = announce_once(
            message=message.model_dump(mode="json"),
            invocation_id=_batch.invocation_id,
            from_backlog=_backlog_order(record) is not None,
        )
    except Exception as exc:  # noqa: BLE001 - every failure goes through decide()
        _handle_failure(record, message, decide(exc, receive_count), exc)
        return None
    finally:
        logger.remove_keys(["message_id"])
    # Completed in an earlier invocation: the idempotency record answered, X was not called.
    replayed = result.get("invocation_id") != _batch.invocation_id
    outcome = "duplicate" if replayed else result["outcome"]
    logger.info(
        f"{outcome}: {result['text']}",
        extra={
            "outcome": outcome,
            "tweet_id": result.get("tweet_id"),
            "weighted_length": result.get("weighted_length"),
            "receive_count": receive_count,
        },
    )
    metrics.add_metric(name=OUTCOME_METRICS[outcome], unit=MetricUnit.Count, value=1)
    if not replayed:
        metrics.add_metric(name="EstimatedSpendUSD", unit=MetricUnit.NoUnit, value=result["cost_usd"])
    logger.remove_keys(["source", "entry_id"])
    return result


def _backlog_order(record: SQSRecord) -> str | None:
    # Powertools' SQSMessageAttributes: [] wraps the value (and gives None), .get() does not.
    attribute = record.message_attributes[BACKLOG_ORDER_ATTRIBUTE]
    return attribute.string_value if attribute is not None else None


def _handle_failure(
    record: SQSRecord, message: EntryMessage | None, decision: Decision, exc: Exception
) -> None:
    """Act on a decision. Raises unless the message was dead-lettered or set aside."""
    metrics.add_metric(name=OUTCOME_METRICS.get(decision.outcome, "Retried"), unit=MetricUnit.Count, value=1)
    if decision.disposition is Disposition.SET_ASIDE:
        assert message is not None  # set aside only after the body parsed
        order = _backlog_order(record) or record.attributes.sequence_number or record.message_id
        _announcer().store.park(
            message.source, order=order, entry_id=message.entry_id, body=record.body, now=clock.now()
        )
        logger.warning(
            f"budget_blocked: {decision.reason}",
            extra={"outcome": "budget_blocked", "backlog_order": order},
        )
        logger.remove_keys(["source", "entry_id"])
        return  # success for the batch: the original is deleted, the backlog holds it
    if decision.disposition is Disposition.DEAD_LETTER:
        attrs = record.attributes
        dlq_id = _queue().dead_letter(
            body=record.body,
            group_id=attrs.message_group_id or "unknown",
            deduplication_id=attrs.message_deduplication_id or record.message_id,
            reason=decision.reason,
        )
        logger.error(
            f"poisoned: moved to the dead-letter queue; its group continues. Reason: {decision.reason}",
            extra={"outcome": "poisoned", "dlq_message_id": dlq_id},
        )
        logger.remove_keys(["source", "entry_id"])
        return  # success for the batch: the original is deleted
    if decision.outcome == "auth_failed":
        # Re-read the credentials on the next attempt: the operator may be rotating them now.
        parameters.clear_caches()  # type: ignore[no-untyped-call]
    _batch.decision = _batch.decision or decision
    _queue().delay([Delay(record.receipt_handle, record.message_id, decision.delay_seconds)])
    _batch.delayed.add(record.message_id)
    log = logger.error if decision.outcome in {"auth_failed", "retry"} else logger.warning
    log(
        f"{decision.outcome}: {decision.reason} -- the message stays queued and comes back in "
        f"{decision.delay_seconds} s",
        extra={"outcome": decision.outcome, "delay_seconds": decision.delay_seconds},
        # A failure we did not classify is a bug or an AWS error: keep its traceback.
        exc_info=not isinstance(exc, BmsUploaderError),
    )
    logger.remove_keys(["source", "entry_id"])
    raise RuntimeError(decision.reason)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _batch  # noqa: PLW0603 - one batch per invocation, reset here
    logger.append_keys(component="poster")
    idempotency_config.register_lambda_context(context)
    _batch = _Batch(context.aws_request_id)
    response: dict[str, Any] = dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )
    _park_skipped(event, response)
    return response


def _park_skipped(event: dict[str, Any], response: dict[str, Any]) -> None:
    """Give the records the processor skipped after a failure the same delay."""
    decision = _batch.decision
    failed_ids = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
    skipped = [
        Delay(r["receiptHandle"], r["messageId"], decision.delay_seconds)
        for r in event.get("Records", [])
        if decision and r["messageId"] in failed_ids and r["messageId"] not in _batch.delayed
    ]
    if skipped and decision:
        not_delayed = _queue().delay(skipped)
        logger.info(
            f"{len(skipped)} later record(s) in this batch wait behind the failure ({decision.outcome})",
            extra={"outcome": "waiting", "delay_seconds": decision.delay_seconds, "not_delayed": not_delayed},
        )
