"""Fetcher Lambda: schedule -> listings -> new entries -> SQS FIFO queue.

Thin on purpose: settings (:class:`bmsuploader.contract.settings.FetcherSettings`),
collaborators built once per container, one :class:`bmsuploader.fetch.cycle.FetchCycle`
run, the result shaped for the log. AWS endpoints come only from the standard
``AWS_ENDPOINT_URL*`` variables (see :mod:`bmsuploader.aws.clients`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from bmsuploader.aws.observability import EmfSourceMetrics, make_logger, make_metrics
from bmsuploader.aws.queue import EntryQueue
from bmsuploader.aws.state import StateStore
from bmsuploader.config.sources import load_sources
from bmsuploader.contract import clock
from bmsuploader.contract.errors import ConfigError
from bmsuploader.contract.settings import FetcherSettings
from bmsuploader.fetch.cycle import FetchCycle
from bmsuploader.fetch.fetching import PageFetcher

logger, metrics = make_logger(), make_metrics()

#: seconds the lease outlives the invocation's deadline, for clock skew
LEASE_MARGIN_SECONDS = 30


@cache
def _cycle() -> FetchCycle:
    """Collaborators, built once per container (clients are reused warm)."""
    settings = FetcherSettings.from_env()
    config = load_sources(settings.sources_file)
    return FetchCycle(
        sources=config.sources,
        destinations=config.destinations,
        store=StateStore.on(settings.table_name),
        queue=EntryQueue(settings.queue_url),
        pages=PageFetcher(),
        logger=logger,
        metrics=EmfSourceMetrics(metrics),
        clock=clock.now,
        max_enqueue=settings.max_enqueue_per_run,
        spending=settings,
        silent_after_hours=settings.silent_source_hours,
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(component="fetcher")
    # Always one metric, so every run -- all pages 304, lease held, a crash -- flushes valid
    # EMF (Powertools would print a non-JSON "No application metrics" warning instead).
    metrics.add_metric(name="FetcherRuns", unit=MetricUnit.Count, value=1)
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
    report = cycle.run(
        owner=context.aws_request_id,
        lease_seconds=lease_seconds,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    summary = report.as_dict()
    logger.info("fetcher run finished", extra={"outcome": report.outcome, "enqueued": summary["enqueued"]})
    failed = [s.source for s in report.sources if s.outcome == "error"]
    if failed:
        # Expected failures (fetch/format errors) are metrics and alarms; an
        # unexpected one fails the invocation so Lambda's Errors alarm sees it.
        raise RuntimeError(f"unexpected error in source(s) {failed}; see the log lines above")
    return summary
