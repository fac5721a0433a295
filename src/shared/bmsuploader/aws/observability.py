"""Logging and metrics shared by both functions (Powertools, EMF).

Every log line that concerns an entry carries ``source``, ``entry_id`` and
``outcome``; the poster adds ``tweet_id``. Metrics go out as EMF twice: once
with the ``source`` dimension (to see which uploader is unhappy) and once
with only ``service`` (what the alarms in template.yaml watch, so an alarm
does not need to know source names).
"""

from __future__ import annotations

import logging
import sys
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from bmsuploader.contract.settings import Telemetry

_TELEMETRY = Telemetry.from_env()
SERVICE = _TELEMETRY.powertools_service_name
NAMESPACE = _TELEMETRY.powertools_metrics_namespace


class _CurrentStdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is *now*.

    Powertools configures the ``bmsuploader`` logger once per process and
    reuses it; a plain StreamHandler would keep the stream of that moment. In
    Lambda that is the same thing, but the tests and ``run-local`` swap
    ``sys.stdout`` between invocations.
    """

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


#: Libraries that log request and response bodies at DEBUG: botocore prints the
#: decrypted SSM GetParameters answer (the X secrets), oauthlib the signing inputs.
#: With LogLevel=DEBUG Lambda sets the root logger to DEBUG, so they are held at
#: INFO whatever the level.
CHATTY_LIBRARIES = (
    "botocore",
    "boto3",
    "urllib3",
    "s3transfer",
    "oauthlib",
    "requests_oauthlib",
    "tweepy",
    "httpx",
    "httpcore",
)


@cache
def make_logger() -> Logger:
    """The service logger, one per process. Both functions use it; each
    handler appends its own ``component`` key per invocation."""
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.INFO))
    return Logger(service=SERVICE, logger_handler=_CurrentStdoutHandler())


def make_metrics() -> Metrics:
    return Metrics(namespace=NAMESPACE, service=SERVICE)


ALWAYS_EMITTED = "EntriesFound"


class EmfSourceMetrics:
    """Counts per source (dimension ``source``) plus the service-wide totals."""

    def __init__(self, aggregate: Metrics) -> None:
        self.aggregate = aggregate

    def record(self, source: str, counts: dict[str, int]) -> None:
        per_source = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        per_source.add_dimension(name="source", value=source)
        for name, value in counts.items():
            # CloudWatch bills a custom metric for each hour it receives data, so
            # zeros are not sent: EntriesFound (the "source is alive" signal) is
            # the only metric every run emits. Alarms treat missing data as OK.
            if value or name == ALWAYS_EMITTED:
                per_source.add_metric(name=name, unit=MetricUnit.Count, value=value)
            if value:
                self.aggregate.add_metric(name=name, unit=MetricUnit.Count, value=value)
        per_source.flush_metrics()
