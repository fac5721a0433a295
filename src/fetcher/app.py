"""Fetcher Lambda: schedule -> listings -> new entries -> SQS FIFO queue.

Thin on purpose: read the environment, build the collaborators once per
container, run one :class:`bmsuploader.fetch.cycle.FetchCycle`, shape the
result. The logic lives in ``bmsuploader.fetch.cycle`` and ``bmsuploader.fetch.dedup``.

Environment (the contract; tools outside the code drive the handler with it):
``TABLE_NAME``, ``QUEUE_URL``, ``SOURCES_FILE`` (optional),
``MAX_ENQUEUE_PER_RUN`` (optional, default 20), ``MONTHLY_POST_BUDGET``
(optional; the backlog is re-queued only within it). AWS endpoints come only from
boto3's standard ``AWS_ENDPOINT_URL*`` variables.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bmsuploader.aws.observability import EmfSourceMetrics, make_logger, make_metrics
from bmsuploader.aws.queue import EntryQueue
from bmsuploader.aws.state import StateStore
from bmsuploader.config.sources import load_sources
from bmsuploader.contract import clock
from bmsuploader.contract.errors import ConfigError
from bmsuploader.fetch.cycle import FetchCycle
from bmsuploader.fetch.fetching import PageFetcher

logger = make_logger()
metrics = make_metrics()

#: seconds the lease outlives the invocation's deadline, for clock skew
LEASE_MARGIN_SECONDS = 30


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set")
    return value


@cache
def _cycle() -> FetchCycle:
    """Collaborators, built once per container (clients are reused warm)."""
    try:
        max_enqueue = int(os.environ.get("MAX_ENQUEUE_PER_RUN") or "20")
        monthly_budget = int(os.environ.get("MONTHLY_POST_BUDGET") or "0")
    except ValueError as exc:
        raise ConfigError(f"MAX_ENQUEUE_PER_RUN and MONTHLY_POST_BUDGET must be integers: {exc}") from exc
    return FetchCycle(
        sources=load_sources().sources,
        store=StateStore(_require("TABLE_NAME")),
        queue=EntryQueue(_require("QUEUE_URL")),
        pages=PageFetcher(),
        logger=logger,
        metrics=EmfSourceMetrics(metrics),
        clock=clock.now,
        max_enqueue=max_enqueue,
        monthly_budget=monthly_budget,
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(component="fetcher")
    try:
        cycle = _cycle()
    except ConfigError as exc:
        logger.error(f"configuration error, nothing was fetched: {exc}", extra={"outcome": "config_error"})
        raise
    lease_seconds = context.get_remaining_time_in_millis() // 1000 + LEASE_MARGIN_SECONDS
    logger.info(
        "fetcher run starting",
        extra={"schedule": event.get("schedule"), "sources": [s.name for s in cycle.sources if s.enabled]},
    )
    report = cycle.run(owner=context.aws_request_id, lease_seconds=lease_seconds)
    summary = report.as_dict()
    logger.info("fetcher run finished", extra={"outcome": report.outcome, "enqueued": summary["enqueued"]})
    failed = [s.source for s in report.sources if s.outcome == "error"]
    if failed:
        # Expected failures (fetch/format errors) are metrics and alarms; an
        # unexpected one fails the invocation so Lambda's Errors alarm sees it.
        raise RuntimeError(f"unexpected error in source(s) {failed}; see the log lines above")
    return summary
