"""The poster's idempotency records: one per entry, kept by Powertools, read by the operator commands.

The poster wraps each announcement in Powertools' ``idempotent_function`` with
:func:`announce_config`. Powertools stores the record of an entry under a key
it derives (``BasePersistenceLayer.configure`` and ``_get_hashed_idempotency_key``
in ``aws_lambda_powertools/utilities/idempotency/persistence/base.py``)::

    id = "<AWS_LAMBDA_FUNCTION_NAME>.<module>.<function>#<md5 of json.dumps([source, entry_id])>"

In Lambda the module is ``app`` (``Handler: app.lambda_handler``) and the
function is ``announce_once`` (``src/poster/app.py``); the function name is
the deployed poster's (stack output ``PosterFunctionName``). :func:`record_key`
rebuilds that key, so ``bmsuploader explain`` and ``redrive`` can ask "was this
entry posted?" with one GetItem. Renaming ``announce_once`` or its module
changes every key, which would let a redelivered entry post again: don't.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

from bmsuploader.aws import clients

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

#: The identity of (destination, entry) inside the message: the record key hashes
#: [source, entry_id], plus the destination when the message names one (a message
#: for the destination ``x`` does not, so its key is the single-X version's).
ANNOUNCE_KEY = "destination && [source, entry_id, destination] || [source, entry_id]"
#: Longer than SQS keeps any message (14 days), so a redelivery always finds the record.
KEEP_SECONDS = 35 * 86400
#: Lambda imports the handler file as module ``app``; the idempotent function's name.
HANDLER_MODULE = "app"
ANNOUNCE_FUNCTION = "announce_once"


def announce_config() -> IdempotencyConfig:
    """The poster's idempotency settings (one place: the poster and the operator commands)."""
    return IdempotencyConfig(event_key_jmespath=ANNOUNCE_KEY, expires_after_seconds=KEEP_SECONDS)


def record_key(poster_function_name: str, source: str, entry_id: str, destination: str | None = None) -> str:
    """The ``id`` under which Powertools keeps the record of (source, entry id[, destination])."""
    # what ANNOUNCE_KEY selects from the message
    selected = [source, entry_id] if destination is None else [source, entry_id, destination]
    algorithm = announce_config().hash_function
    digest = hashlib.new(algorithm, json.dumps(selected, sort_keys=True).encode()).hexdigest()
    return f"{poster_function_name}.{HANDLER_MODULE}.{ANNOUNCE_FUNCTION}#{digest}"


@dataclass(frozen=True)
class PostRecord:
    """One idempotency record, as stored."""

    #: COMPLETED (posted, or found already posted), INPROGRESS (an attempt running or interrupted)
    status: str
    #: epoch seconds; after it Powertools no longer honours the record
    expires_at: int
    #: an INPROGRESS record's own expiry (epoch ms): after it, a retry may take over
    in_progress_until_ms: int | None
    #: the stored result of a COMPLETED record (``AnnounceResult`` as JSON)
    data: dict[str, Any] | None


class PostRecords:
    """Read-only access to the idempotency table (Powertools' default attribute names)."""

    def __init__(self, table_name: str, poster_function_name: str, client: DynamoDBClient | None = None):
        self.table_name = table_name
        self.poster_function_name = poster_function_name
        self.client: DynamoDBClient = client or clients.dynamodb()

    def get(self, source: str, entry_id: str, destination: str | None = None) -> PostRecord | None:
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"id": {"S": record_key(self.poster_function_name, source, entry_id, destination)}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return None
        raw = item.get("data", {}).get("S")
        data = json.loads(raw) if raw else None
        in_progress = item.get("in_progress_expiration", {}).get("N")
        return PostRecord(
            status=str(item.get("status", {}).get("S", "")),
            expires_at=int(item.get("expiration", {}).get("N", "0")),
            in_progress_until_ms=int(in_progress) if in_progress else None,
            data=data if isinstance(data, dict) else None,
        )
