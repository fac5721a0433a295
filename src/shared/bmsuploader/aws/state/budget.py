"""The poster's monthly count of posts and estimated spend (micro-USD), per month in Japan time.

    pk = "POSTER"   sk = "CONTROL"   posts_<YYYY_MM>, spend_<YYYY_MM>, backlog_parked, backlog_drained

The backlog's two counters live on the same item, so one conditional
UpdateItem can check "within the spend limit" and "nothing waits in the
backlog" together (see :meth:`PostBudget.reserve`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from botocore.exceptions import ClientError

from bmsuploader.aws.state.table import StateTable, n

CONTROL_KEY: dict[str, Any] = {"pk": {"S": "POSTER"}, "sk": {"S": "CONTROL"}}
JST = ZoneInfo("Asia/Tokyo")


def budget_month(now: datetime) -> str:
    """The budget counts posts per calendar month in Japan time."""
    return now.astimezone(JST).strftime("%Y-%m")


def _posts_attribute(month: str) -> str:
    return "posts_" + month.replace("-", "_")


def _spend_attribute(month: str) -> str:
    return "spend_" + month.replace("-", "_")


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


class PostBudget(StateTable):
    def reserve(
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
        values: dict[str, Any] = {":one": n(1), ":cost": n(cost_micro)}
        if limit_micro is not None:
            conditions.append("(attribute_not_exists(#spend) OR #spend <= :room)")
            values[":room"] = n(limit_micro - cost_micro)
        if not from_backlog:
            conditions.append(
                "(attribute_not_exists(backlog_parked) OR attribute_not_exists(backlog_drained) "
                "AND backlog_parked = :zero OR backlog_parked <= backlog_drained)"
            )
            values[":zero"] = n(0)
        kwargs: dict[str, Any] = {}
        if conditions:
            kwargs = {
                "ConditionExpression": " AND ".join(conditions),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=CONTROL_KEY,
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
            control = control_from_item(item, month) if item else PosterControl(month=month)
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

    def release(self, month: str, *, cost_micro: int) -> None:
        """Give back a reservation whose post did not happen."""
        self.client.update_item(
            TableName=self.table_name,
            Key=CONTROL_KEY,
            UpdateExpression="ADD #posts :minus_one, #spend :minus_cost",
            ExpressionAttributeNames={"#posts": _posts_attribute(month), "#spend": _spend_attribute(month)},
            ExpressionAttributeValues={":minus_one": n(-1), ":minus_cost": n(-cost_micro)},
        )


def control_from_item(item: dict[str, Any], month: str) -> PosterControl:
    def number(key: str) -> int:
        return int(item.get(key, {}).get("N", "0"))

    return PosterControl(
        month=month,
        posts=number(_posts_attribute(month)),
        spend_micro=number(_spend_attribute(month)),
        backlog_parked=number("backlog_parked"),
        backlog_drained=number("backlog_drained"),
    )
