"""The state table's shared edge: one DynamoDB table, batched reads and writes.

Every request here is one real DynamoDB accepts (moto is more lenient): key
conditions name each key once, batch sizes stay within 100 (BatchGetItem)
and 25 (BatchWriteItem), and unprocessed items are retried, never dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import batched
from typing import TYPE_CHECKING, Any

from bmsuploader.aws import clients

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

BATCH_GET_LIMIT = 100
BATCH_WRITE_LIMIT = 25
_UNPROCESSED_ATTEMPTS = 5


class StateStoreError(Exception):
    """DynamoDB kept items unprocessed after retries (throttling)."""


def s(value: str) -> dict[str, Any]:
    return {"S": value}


def n(value: int) -> dict[str, Any]:
    return {"N": str(value)}


def source_pk(source: str) -> str:
    return f"SOURCE#{source}"


class StateTable:
    """One part of the state table; each subclass keeps one kind of item."""

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table_name = table_name
        self.client: DynamoDBClient = client or clients.dynamodb()
        self._sleep = sleep

    def _batch_get(self, keys: list[dict[str, Any]], *, projection: bool = False) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for chunk in batched(keys, BATCH_GET_LIMIT, strict=False):
            request: dict[str, Any] = {"Keys": list(chunk), "ConsistentRead": True}
            if projection:
                request["ProjectionExpression"] = "pk, sk"
            pending: dict[str, Any] = {self.table_name: request}
            for attempt in range(_UNPROCESSED_ATTEMPTS):
                response = self.client.batch_get_item(RequestItems=pending)
                found.extend(response.get("Responses", {}).get(self.table_name, []))
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                self._sleep(0.05 * 2**attempt)
            else:
                raise StateStoreError(f"DynamoDB left {len(pending)} key(s) unprocessed after retries")
        return found

    def _count(self, key_condition: str, values: dict[str, Any]) -> int:
        """Items matching a key condition, counted by DynamoDB (Query with Select=COUNT, every page)."""
        total = 0
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": key_condition,
            "ExpressionAttributeValues": values,
            "Select": "COUNT",
        }
        while True:
            response = self.client.query(**request)
            total += response.get("Count", 0)
            if "LastEvaluatedKey" not in response:
                return total
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def batch_write(self, requests: list[Any]) -> None:
        """One BatchWriteItem (at most 25 requests), retrying unprocessed items."""
        pending: dict[str, Any] = {self.table_name: requests}
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            response = self.client.batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return
            self._sleep(0.05 * 2**attempt)
        raise StateStoreError(
            f"DynamoDB left {len(pending.get(self.table_name, []))} write(s) unprocessed after retries"
        )
