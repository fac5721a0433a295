"""The fetcher's run lease: one item that expires by itself.

pk = "LEASE"   sk = "fetcher"   owner, expires_at, acquired_at
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from bmsuploader.aws.state.table import StateTable, n, s


@dataclass(frozen=True)
class Lease:
    owner: str
    expires_at: int


@dataclass(frozen=True)
class LeaseHeld:
    """Returned instead of a lease when another run holds it."""

    owner: str | None
    expires_at: int | None


@dataclass(frozen=True)
class LeaseRecord:
    """The lease item as an operator reads it (epoch seconds)."""

    owner: str
    acquired_at: int
    expires_at: int


class Leases(StateTable):
    def acquire(self, owner: str, *, now: int, ttl_seconds: int) -> Lease | LeaseHeld:
        """Take the run lease unless another live run holds it.

        The lease carries its own expiry, so a run that crashed or timed out
        can never block later runs: the next run after ``expires_at`` takes it
        over. (A lock without expiry was the old bot's flaw.)
        """
        expires_at = now + ttl_seconds
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    "pk": s("LEASE"),
                    "sk": s("fetcher"),
                    "owner": s(owner),
                    "expires_at": n(expires_at),
                    "acquired_at": n(now),
                },
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": n(now)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item: dict[str, Any] = exc.response.get("Item", {})  # type: ignore[assignment]
            holder = item.get("owner", {}).get("S")
            held_until = item.get("expires_at", {}).get("N")
            return LeaseHeld(owner=holder, expires_at=int(held_until) if held_until else None)
        return Lease(owner=owner, expires_at=expires_at)

    def release(self, lease: Lease) -> bool:
        """Give the lease back early. False if it had expired and been taken over."""
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={"pk": s("LEASE"), "sk": s("fetcher")},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": s(lease.owner)},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release_request(self) -> dict[str, Any]:
        """The lease's DeleteRequest, to end a run's last BatchWriteItem.

        Unconditional, unlike :meth:`release`: a run cannot outlive its lease
        (the lease lasts the invocation's remaining time plus a margin, and
        Lambda stops the invocation at its timeout), so at the end of a run the
        lease is still its own.
        """
        return {"DeleteRequest": {"Key": {"pk": s("LEASE"), "sk": s("fetcher")}}}

    def current(self) -> LeaseRecord | None:
        """The lease item if one is stored (a run in progress, or one that crashed), else None.

        It may have expired: compare ``expires_at`` with the clock.
        """
        response = self.client.get_item(
            TableName=self.table_name, Key={"pk": s("LEASE"), "sk": s("fetcher")}, ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            return None
        return LeaseRecord(
            owner=item.get("owner", {}).get("S", "?"),
            acquired_at=int(item.get("acquired_at", {}).get("N", "0")),
            expires_at=int(item.get("expires_at", {}).get("N", "0")),
        )
