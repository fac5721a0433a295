"""The poster's idempotency records: one per (entry, destination), kept by Powertools, read by the
operator commands; and the poster's own "this may have been posted" marks beside them.

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


#: Suffix of the key of an "outcome unknown" mark, beside the record it belongs to.
UNKNOWN_SUFFIX = "#unknown"


class Attempts:
    """Whether an earlier attempt at (entry, destination) may have been accepted by the network.

    Two ways an attempt can end without us knowing: the invocation died while the
    request was out (Powertools' record stays INPROGRESS, and its in-progress expiry
    passes), or the network did not answer after we sent (the publisher raises
    :class:`~bmsuploader.contract.errors.UnknownOutcomeError`; Powertools deletes its
    record on any exception, so :meth:`remember_unknown` writes a mark of our own, in
    the same table, under the record's key + ``#unknown``, expiring with the records).

    One BatchGetItem. The poster asks it for every message of a network other than X (a
    first receive may be a repeat the fetcher sent after SQS's 5-minute deduplication window,
    following an attempt of an earlier message), and for X only on a redelivery.
    """

    def __init__(self, table_name: str, poster_function_name: str, client: DynamoDBClient | None = None):
        self.table_name = table_name
        self.poster_function_name = poster_function_name
        self.client: DynamoDBClient = client or clients.dynamodb()

    def _key(self, source: str, entry_id: str, destination: str | None) -> str:
        return record_key(self.poster_function_name, source, entry_id, destination)

    def maybe_posted(self, source: str, entry_id: str, destination: str | None, *, now_ms: int) -> bool:
        key = self._key(source, entry_id, destination)
        response = self.client.batch_get_item(
            RequestItems={
                self.table_name: {
                    "Keys": [{"id": {"S": key}}, {"id": {"S": key + UNKNOWN_SUFFIX}}],
                    "ConsistentRead": True,
                }
            }
        )
        if response.get("UnprocessedKeys"):
            # Cannot tell (throttled): the attempt fails and is retried, rather than guess.
            raise RuntimeError("DynamoDB left the attempt marks unread (throttled); retried later")
        for item in response.get("Responses", {}).get(self.table_name, []):
            if item["id"]["S"].endswith(UNKNOWN_SUFFIX):
                return True
            in_progress = item.get("in_progress_expiration", {}).get("N")
            status = item.get("status", {}).get("S")
            if status == "INPROGRESS" and in_progress is not None and int(in_progress) < now_ms:
                return True  # an attempt died with the request out
        return False

    def remember_unknown(self, source: str, entry_id: str, destination: str | None, *, now: int) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item={
                "id": {"S": self._key(source, entry_id, destination) + UNKNOWN_SUFFIX},
                "expiration": {"N": str(now + KEEP_SECONDS)},
                "status": {"S": "UNKNOWN_OUTCOME"},
            },
        )

    def forget_unknown(self, source: str, entry_id: str, destination: str | None) -> None:
        """Clear the mark (``bmsuploader redrive``: the operator has looked)."""
        self.client.delete_item(
            TableName=self.table_name,
            Key={"id": {"S": self._key(source, entry_id, destination) + UNKNOWN_SUFFIX}},
        )
