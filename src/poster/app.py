"""Poster Lambda: SQS FIFO batch -> one post on X per entry, in order, once.

Thin on purpose: the batch logic is :mod:`bmsuploader.post.batch`, the
failure table :mod:`bmsuploader.post.cycle`, the settings
:class:`bmsuploader.contract.settings.PosterSettings`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.idempotency import idempotent_function as idempotent
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from aws_lambda_powertools.utilities.typing import LambdaContext

from bmsuploader.aws import clients
from bmsuploader.aws.idempotency import Attempts, announce_config
from bmsuploader.aws.observability import make_logger, make_metrics
from bmsuploader.aws.queue import QueueControl
from bmsuploader.aws.state import StateStore
from bmsuploader.config.sources import load_sources
from bmsuploader.contract import clock
from bmsuploader.contract.message import EntryMessage
from bmsuploader.contract.settings import LambdaEnvironment, PosterSettings
from bmsuploader.post.batch import Poster
from bmsuploader.post.cycle import Announcer, AnnounceResult
from bmsuploader.post.destinations import publisher_for
from bmsuploader.post.networks.base import NetworkContext

logger, metrics = make_logger(), make_metrics()
settings = PosterSettings.from_env()
# A group is one (destination, source): a failure holds back its own group only (post/batch.py).
# We log every outcome ourselves.
processor = SqsFifoPartialProcessor(skip_group_on_error=True)
# We park failed records ourselves; a batch where every record is parked is no invocation error.
processor.raise_on_entire_batch_failure = False
# Keyed on (source, entry id[, destination]); the record outlives any redelivery (SQS keeps 14 days).
idempotency = announce_config()
# One DynamoDB client for the idempotency records, the state table and the attempt marks: a
# client loads DynamoDB's service model (~100 ms), and Powertools would otherwise build its own.
dynamodb = clients.dynamodb()


@cache
def poster() -> Poster:
    store = StateStore.on(settings.table_name, dynamodb)
    context = NetworkContext(sessions=store.sessions, base_urls=settings.network_base_urls)
    announcer = Announcer(
        load_sources(settings.sources_file),
        lambda destination: publisher_for(settings, destination, context),
        store,
        settings,
        clock.now,
    )
    queue = QueueControl(settings.queue_url, settings.dlq_url)
    attempts = Attempts(
        settings.idempotency_table, LambdaEnvironment.from_env().aws_lambda_function_name, dynamodb
    )
    return Poster(announcer, queue, store, logger, metrics, clock.now, parameters.clear_caches, attempts)


# The module and function names are part of every record's key (bmsuploader.aws.idempotency).
@idempotent(  # type: ignore[untyped-decorator]  # Powertools' decorator is untyped
    data_keyword_argument="message",
    persistence_store=DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=dynamodb),
    config=idempotency,
    output_serializer=PydanticSerializer(AnnounceResult),
)
def announce_once(
    *, message: EntryMessage, invocation_id: str, from_backlog: bool, maybe_posted: bool
) -> AnnounceResult:
    return poster().announce(
        message, invocation_id=invocation_id, from_backlog=from_backlog, maybe_posted=maybe_posted
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(component="poster")
    idempotency.register_lambda_context(context)
    batch = poster().batch(context.aws_request_id, announce_once)
    response = dict(process_partial_response(event, batch.handle, processor, context))
    batch.delay_skipped(event, response)
    return response
