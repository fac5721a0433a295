"""The backlog: entries the poster set aside while the monthly spend limit was reached.

    pk = "BACKLOG#<name>"   sk = "<order>"   body, entry_id, parked_at

Why: SQS keeps a message at most 14 days, but a reached monthly limit can
hold posts back for up to a month. So the poster does not leave them on the
queue to expire; it sets them aside here, in order, and the fetcher puts them
back on the queue when the limit allows (:mod:`bmsuploader.fetch.backlog`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import batched
from typing import Any

from bmsuploader.aws.state.budget import CONTROL_KEY
from bmsuploader.aws.state.table import BATCH_WRITE_LIMIT, StateTable, n, s

#: SQS sequence numbers are up to 128 bits (39 decimal digits): pad to sort as numbers.
ORDER_WIDTH = 40


@dataclass(frozen=True)
class BacklogItem:
    source: str
    order: str
    entry_id: str
    body: str
    parked_at: str


class Backlog(StateTable):
    def park(self, source: str, *, order: str, entry_id: str, body: str, now: datetime) -> None:
        """Set a message aside in the backlog (one transaction: the item and the counter).

        ``order`` keeps the source's upload order (the SQS sequence number of
        the message as the fetcher first sent it). Parking the same message
        twice writes the same item; the counter only says "look here".
        """
        self.client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": {
                            "pk": s(f"BACKLOG#{source}"),
                            "sk": s(order.zfill(ORDER_WIDTH)),
                            "entry_id": s(entry_id),
                            "body": s(body),
                            "parked_at": s(now.astimezone(UTC).isoformat()),
                        },
                    }
                },
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": CONTROL_KEY,
                        "UpdateExpression": "ADD backlog_parked :one",
                        "ExpressionAttributeValues": {":one": n(1)},
                    }
                },
            ]
        )

    def oldest(self, source: str, *, limit: int) -> list[BacklogItem]:
        """The oldest ``limit`` parked entries of a source, in order (one Query)."""
        response = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": s(f"BACKLOG#{source}")},
            ConsistentRead=True,
            Limit=max(limit, 1),
        )
        return [_backlog_item(source, item) for item in response.get("Items", [])]

    def unpark(self, items: Sequence[BacklogItem]) -> None:
        """Delete backlog items once they are back on the queue."""
        for chunk in batched(items, BATCH_WRITE_LIMIT, strict=False):
            self.batch_write(
                [
                    {"DeleteRequest": {"Key": {"pk": s(f"BACKLOG#{i.source}"), "sk": s(i.order)}}}
                    for i in chunk
                ]
            )

    def drained(self, parked: int) -> None:
        """Record that everything parked up to counter value ``parked`` is back on the queue.

        If the poster parked more in the meantime, ``backlog_parked`` is
        already higher and the backlog still reads as pending: nothing is
        stranded.
        """
        self.client.update_item(
            TableName=self.table_name,
            Key=CONTROL_KEY,
            UpdateExpression="SET backlog_drained = :parked",
            ExpressionAttributeValues={":parked": n(parked)},
        )

    def count(self, source: str) -> int:
        """How many entries of a source wait in the backlog."""
        return self._count("pk = :pk", {":pk": s(f"BACKLOG#{source}")})

    def find(self, source: str, entry_id: str) -> tuple[BacklogItem, int, int] | None:
        """A parked entry, its 1-based place in its source's backlog and the backlog's length.

        Reads the source's whole backlog (at most a month of posts), oldest first.
        """
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": s(f"BACKLOG#{source}")},
            "ConsistentRead": True,
        }
        while True:
            response = self.client.query(**request)
            items.extend(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        for place, item in enumerate(items, start=1):
            if item["entry_id"]["S"] == entry_id:
                return _backlog_item(source, item), place, len(items)
        return None


def _backlog_item(source: str, item: dict[str, Any]) -> BacklogItem:
    return BacklogItem(
        source=source,
        order=item["sk"]["S"],
        entry_id=item["entry_id"]["S"],
        body=item["body"]["S"],
        parked_at=item["parked_at"]["S"],
    )
