"""State storage (DynamoDB): the fetcher's lease, each source's state, the
seen entries, and the poster's monthly post counter.

One table, keyed ``pk``/``sk``::

    pk = "LEASE"            sk = "fetcher"        owner, expires_at        the run lease
    pk = "SOURCE#<name>"    sk = "STATE"          validators, counters     per-source state
    pk = "SOURCE#<name>"    sk = "ENTRY#<id>"     seen_at                  one seen entry
    pk = "POSTER"           sk = "CONTROL"        posts_<YYYY_MM>,         posts and estimated spend
                                                  spend_<YYYY_MM>,         (micro-USD) per month (JST),
                                                  backlog_parked/_drained  and the backlog's counters
    pk = "BACKLOG#<name>"   sk = "<order>"        body, entry_id           an entry set aside while
                                                                           the monthly budget is spent

Why a backlog: SQS keeps a message at most 14 days, but a spent monthly
budget can hold posts back for up to a month. So the poster does not leave
budget-blocked messages on the queue to expire; it sets them aside here, in
order, and the fetcher puts them back on the queue when the budget allows.

Every request here is one real DynamoDB accepts (moto is more lenient): key
conditions name each key once, batch sizes stay within 100 (BatchGetItem)
and 25 (BatchWriteItem), and unprocessed items are retried, never dropped.
Seen entries never expire: an entry still listed on a page must stay seen,
or it would be announced again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import batched
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import boto3
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

BATCH_GET_LIMIT = 100
BATCH_WRITE_LIMIT = 25
_UNPROCESSED_ATTEMPTS = 5


class StateStoreError(Exception):
    """DynamoDB kept items unprocessed after retries (throttling)."""


@dataclass(frozen=True)
class Validators:
    """HTTP cache validators of a page, stored with the source's state."""

    etag: str | None = None
    last_modified: str | None = None


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
class SourceState:
    """What the fetcher remembers about one source between runs."""

    validators: Validators = field(default_factory=Validators)
    #: the page fingerprint (URL + parsing config) the validators belong to
    validators_for: str | None = None
    baseline_done: bool = False
    last_success_at: str | None = None
    last_attempt_at: str | None = None
    consecutive_failures: int = 0
    last_error: str | None = None

    def succeeded(self, now: datetime, validators: Validators, validators_for: str) -> SourceState:
        return replace(
            self,
            validators=validators,
            validators_for=validators_for if validators.etag or validators.last_modified else None,
            baseline_done=True,
            last_success_at=now.isoformat(),
            last_attempt_at=now.isoformat(),
            consecutive_failures=0,
            last_error=None,
        )

    def failed(self, now: datetime, error: str) -> SourceState:
        return replace(
            self,
            last_attempt_at=now.isoformat(),
            consecutive_failures=self.consecutive_failures + 1,
            last_error=error[:1000],
        )


@dataclass(frozen=True)
class PosterControl:
    """The poster's control item as the fetcher reads it."""

    month: str
    posts: int = 0
    spend_micro: int = 0
    backlog_parked: int = 0
    backlog_drained: int = 0

    @property
    def backlog_pending(self) -> bool:
        return self.backlog_parked > self.backlog_drained

    def posts_left(self, limit_micro: int | None, max_cost_micro: int) -> int | None:
        """Posts the spend limit still certainly allows this month (each at the dearest
        price); ``None`` = no limit."""
        if limit_micro is None:
            return None
        return max(0, (limit_micro - self.spend_micro) // max(max_cost_micro, 1))


@dataclass(frozen=True)
class Reservation:
    granted: bool
    posts: int
    spend_micro: int
    reason: str | None = None  # "budget" | "backlog" when refused


@dataclass(frozen=True)
class BacklogItem:
    source: str
    order: str
    entry_id: str
    body: str
    parked_at: str


JST = ZoneInfo("Asia/Tokyo")


def budget_month(now: datetime) -> str:
    """The budget counts posts per calendar month in Japan time."""
    return now.astimezone(JST).strftime("%Y-%m")


#: SQS sequence numbers are up to 128 bits (39 decimal digits): pad to sort as numbers.
ORDER_WIDTH = 40
_CONTROL_KEY: dict[str, Any] = {"pk": {"S": "POSTER"}, "sk": {"S": "CONTROL"}}


def _posts_attribute(month: str) -> str:
    return "posts_" + month.replace("-", "_")


def _spend_attribute(month: str) -> str:
    return "spend_" + month.replace("-", "_")


def _s(value: str) -> dict[str, Any]:
    return {"S": value}


def _n(value: int) -> dict[str, Any]:
    return {"N": str(value)}


def _source_pk(source: str) -> str:
    return f"SOURCE#{source}"


def _entry_sk(entry_id: str) -> str:
    return f"ENTRY#{entry_id}"


class StateStore:
    """The fetcher's and poster's view of the state table."""

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table_name = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self._sleep = sleep

    # --- the run lease ------------------------------------------------------

    def acquire_lease(self, owner: str, *, now: int, ttl_seconds: int) -> Lease | LeaseHeld:
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
                    "pk": _s("LEASE"),
                    "sk": _s("fetcher"),
                    "owner": _s(owner),
                    "expires_at": _n(expires_at),
                    "acquired_at": _n(now),
                },
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": _n(now)},
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

    def release_lease(self, lease: Lease) -> bool:
        """Give the lease back early. False if it had expired and been taken over."""
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={"pk": _s("LEASE"), "sk": _s("fetcher")},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": _s(lease.owner)},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # --- per-source state -----------------------------------------------------

    def put_source_state(self, source: str, state: SourceState) -> None:
        """Write the fetcher's fields of the state item (UpdateItem, so nothing
        else stored on the item is overwritten)."""
        values: dict[str, Any] = {
            "baseline_done": {"BOOL": state.baseline_done},
            "consecutive_failures": _n(state.consecutive_failures),
        }
        optional = {
            "etag": state.validators.etag,
            "last_modified": state.validators.last_modified,
            "validators_for": state.validators_for,
            "last_success_at": state.last_success_at,
            "last_attempt_at": state.last_attempt_at,
            "last_error": state.last_error,
        }
        values.update({key: _s(value) for key, value in optional.items() if value})
        removed = [key for key, value in optional.items() if not value]
        names = {f"#{key}": key for key in [*values, *removed]}
        expression = "SET " + ", ".join(f"#{key} = :{key}" for key in values)
        if removed:
            expression += " REMOVE " + ", ".join(f"#{key}" for key in removed)
        self.client.update_item(
            TableName=self.table_name,
            Key={"pk": _s(_source_pk(source)), "sk": _s("STATE")},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":{key}": value for key, value in values.items()},
        )

    # --- seen entries -------------------------------------------------------------

    def unseen(self, source: str, entry_ids: Sequence[str]) -> set[str]:
        """The ids among ``entry_ids`` not yet recorded as seen (batched reads)."""
        unique = list(dict.fromkeys(entry_ids))
        keys = [{"pk": _s(_source_pk(source)), "sk": _s(_entry_sk(eid))} for eid in unique]
        seen = {item["sk"]["S"].removeprefix("ENTRY#") for item in self._batch_get(keys, projection=True)}
        return set(unique) - seen

    def mark_seen(self, source: str, entry_ids: Sequence[str], *, now: datetime) -> None:
        """Record entries as seen. Raises :class:`StateStoreError` if DynamoDB
        keeps refusing some; the caller then leaves them unseen (sent again
        next run, absorbed by the poster's idempotency)."""
        stamp = now.astimezone(UTC).isoformat()
        for chunk in batched(dict.fromkeys(entry_ids), BATCH_WRITE_LIMIT, strict=False):
            requests: list[Any] = [
                {
                    "PutRequest": {
                        "Item": {
                            "pk": _s(_source_pk(source)),
                            "sk": _s(_entry_sk(eid)),
                            "seen_at": _s(stamp),
                        }
                    }
                }
                for eid in chunk
            ]
            self._batch_write(requests)

    # --- the poster's control item: monthly budget and backlog ----------------------

    def get_run_state(self, names: Sequence[str], month: str) -> tuple[dict[str, SourceState], PosterControl]:
        """Every source's state and the poster's control item, in one BatchGetItem."""
        keys = [{"pk": _s(_source_pk(name)), "sk": _s("STATE")} for name in names]
        keys.append(_CONTROL_KEY)
        states: dict[str, SourceState] = {}
        control = PosterControl(month=month)
        for item in self._batch_get(keys):
            if item["pk"]["S"] == "POSTER":
                control = _control_from_item(item, month)
            else:
                states[item["pk"]["S"].removeprefix("SOURCE#")] = _state_from_item(item)
        return states, control

    def reserve_post(
        self, month: str, *, cost_micro: int, limit_micro: int | None, from_backlog: bool
    ) -> Reservation:
        """Atomically count one post and its estimated cost against ``month``, if it may go out now.

        It may not when the spend would pass ``limit_micro`` (``None`` = no
        limit), or when entries are set aside in the backlog and this message
        is not one of them coming back (it must not overtake them). One
        UpdateItem does both checks: DynamoDB conditions cannot add, so the
        limit is checked as ``spend <= limit - cost``.
        """
        if limit_micro is not None and cost_micro > limit_micro:
            return Reservation(granted=False, posts=0, spend_micro=0, reason="budget")
        conditions = []
        values: dict[str, Any] = {":one": _n(1), ":cost": _n(cost_micro)}
        if limit_micro is not None:
            conditions.append("(attribute_not_exists(#spend) OR #spend <= :room)")
            values[":room"] = _n(limit_micro - cost_micro)
        if not from_backlog:
            conditions.append(
                "(attribute_not_exists(backlog_parked) OR attribute_not_exists(backlog_drained) "
                "AND backlog_parked = :zero OR backlog_parked <= backlog_drained)"
            )
            values[":zero"] = _n(0)
        kwargs: dict[str, Any] = {}
        if conditions:
            kwargs = {
                "ConditionExpression": " AND ".join(conditions),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_CONTROL_KEY,
                UpdateExpression="ADD #posts :one, #spend :cost",
                ExpressionAttributeNames={
                    "#posts": _posts_attribute(month),
                    "#spend": _spend_attribute(month),
                },
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
                **kwargs,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item: dict[str, Any] = exc.response.get("Item", {})  # type: ignore[assignment]
            control = _control_from_item(item, month) if item else PosterControl(month=month)
            over = limit_micro is not None and control.spend_micro > limit_micro - cost_micro
            return Reservation(
                granted=False,
                posts=control.posts,
                spend_micro=control.spend_micro,
                reason="budget" if over else "backlog",
            )
        attributes = response["Attributes"]
        return Reservation(
            granted=True,
            posts=int(attributes[_posts_attribute(month)]["N"]),
            spend_micro=int(attributes[_spend_attribute(month)]["N"]),
        )

    def release_post(self, month: str, *, cost_micro: int) -> None:
        """Give back a reservation whose post did not happen."""
        self.client.update_item(
            TableName=self.table_name,
            Key=_CONTROL_KEY,
            UpdateExpression="ADD #posts :minus_one, #spend :minus_cost",
            ExpressionAttributeNames={"#posts": _posts_attribute(month), "#spend": _spend_attribute(month)},
            ExpressionAttributeValues={":minus_one": _n(-1), ":minus_cost": _n(-cost_micro)},
        )

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
                            "pk": _s(f"BACKLOG#{source}"),
                            "sk": _s(order.zfill(ORDER_WIDTH)),
                            "entry_id": _s(entry_id),
                            "body": _s(body),
                            "parked_at": _s(now.astimezone(UTC).isoformat()),
                        },
                    }
                },
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": _CONTROL_KEY,
                        "UpdateExpression": "ADD backlog_parked :one",
                        "ExpressionAttributeValues": {":one": _n(1)},
                    }
                },
            ]
        )

    def backlog(self, source: str, *, limit: int) -> list[BacklogItem]:
        """The oldest ``limit`` parked entries of a source, in order (one Query)."""
        response = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"BACKLOG#{source}")},
            ConsistentRead=True,
            Limit=max(limit, 1),
        )
        return [
            BacklogItem(
                source=source,
                order=item["sk"]["S"],
                entry_id=item["entry_id"]["S"],
                body=item["body"]["S"],
                parked_at=item["parked_at"]["S"],
            )
            for item in response.get("Items", [])
        ]

    def unpark(self, items: Sequence[BacklogItem]) -> None:
        """Delete backlog items once they are back on the queue."""
        for chunk in batched(items, BATCH_WRITE_LIMIT, strict=False):
            self._batch_write(
                [
                    {"DeleteRequest": {"Key": {"pk": _s(f"BACKLOG#{i.source}"), "sk": _s(i.order)}}}
                    for i in chunk
                ]
            )

    def backlog_drained(self, parked: int) -> None:
        """Record that everything parked up to counter value ``parked`` is back on the queue.

        If the poster parked more in the meantime, ``backlog_parked`` is
        already higher and the backlog still reads as pending: nothing is
        stranded.
        """
        self.client.update_item(
            TableName=self.table_name,
            Key=_CONTROL_KEY,
            UpdateExpression="SET backlog_drained = :parked",
            ExpressionAttributeValues={":parked": _n(parked)},
        )

    # --- batching with retries of unprocessed items ------------------------------

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

    def _batch_write(self, requests: list[Any]) -> None:
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


def _control_from_item(item: dict[str, Any], month: str) -> PosterControl:
    def number(key: str) -> int:
        return int(item.get(key, {}).get("N", "0"))

    return PosterControl(
        month=month,
        posts=number(_posts_attribute(month)),
        spend_micro=number(_spend_attribute(month)),
        backlog_parked=number("backlog_parked"),
        backlog_drained=number("backlog_drained"),
    )


def _state_from_item(item: dict[str, Any]) -> SourceState:
    def text(key: str) -> str | None:
        value = item.get(key, {}).get("S")
        return str(value) if value is not None else None

    return SourceState(
        validators=Validators(etag=text("etag"), last_modified=text("last_modified")),
        validators_for=text("validators_for"),
        baseline_done=bool(item.get("baseline_done", {}).get("BOOL", False)),
        last_success_at=text("last_success_at"),
        last_attempt_at=text("last_attempt_at"),
        consecutive_failures=int(item.get("consecutive_failures", {}).get("N", "0")),
        last_error=text("last_error"),
    )
