"""State storage (DynamoDB): one table, one module per kind of item it keeps.

=====================  ==================  ===========================================
item                   keys                module
=====================  ==================  ===========================================
the run lease          LEASE / fetcher     :mod:`~bmsuploader.aws.state.lease`
a source's state       SOURCE#<n> / STATE  :mod:`~bmsuploader.aws.state.sources`
a seen entry           SOURCE#<n> / ENTRY  :mod:`~bmsuploader.aws.state.seen`
posts and spend        POSTER / CONTROL    :mod:`~bmsuploader.aws.state.budget`
an entry set aside     BACKLOG#<n> / order :mod:`~bmsuploader.aws.state.backlog`
a network's session    SESSION#<d> / ...   :mod:`~bmsuploader.aws.state.sessions`
=====================  ==================  ===========================================

:class:`StateStore` bundles the parts over one table and one client, built
once per container; each stage uses the parts it needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import batched
from typing import TYPE_CHECKING, Any

from bmsuploader.aws import clients
from bmsuploader.aws.state.backlog import Backlog, BacklogItem
from bmsuploader.aws.state.budget import PostBudget, PosterControl, Reservation, budget_month
from bmsuploader.aws.state.lease import Lease, LeaseHeld, LeaseRecord, Leases
from bmsuploader.aws.state.seen import SeenEntries, SeenEntry
from bmsuploader.aws.state.sessions import Sessions
from bmsuploader.aws.state.sources import SourceState, SourceStates, Validators
from bmsuploader.aws.state.table import BATCH_WRITE_LIMIT, StateStoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

__all__ = [
    "Backlog",
    "BacklogItem",
    "Lease",
    "LeaseHeld",
    "LeaseRecord",
    "Leases",
    "PostBudget",
    "PosterControl",
    "Reservation",
    "SeenEntries",
    "SeenEntry",
    "Sessions",
    "SourceState",
    "SourceStates",
    "StateStore",
    "StateStoreError",
    "Validators",
    "budget_month",
]


@dataclass(frozen=True)
class StateStore:
    lease: Leases
    sources: SourceStates
    seen: SeenEntries
    budget: PostBudget
    backlog: Backlog
    sessions: Sessions

    @classmethod
    def on(
        cls,
        table_name: str,
        client: DynamoDBClient | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> StateStore:
        """All parts over one table and one client."""
        shared = client or clients.dynamodb()
        return cls(
            lease=Leases(table_name, shared, sleep=sleep),
            sources=SourceStates(table_name, shared, sleep=sleep),
            seen=SeenEntries(table_name, shared, sleep=sleep),
            budget=PostBudget(table_name, shared, sleep=sleep),
            backlog=Backlog(table_name, shared, sleep=sleep),
            sessions=Sessions(table_name, shared, sleep=sleep),
        )

    def finish_run(self, states: Mapping[str, SourceState]) -> None:
        """Save every source's state and give the lease back: 25 items per BatchWriteItem,
        the lease's delete in the last one (one call for up to 24 sources)."""
        writes: list[Any] = [{"PutRequest": {"Item": self.sources.item(n, st)}} for n, st in states.items()]
        writes.append(self.lease.release_request())
        for chunk in batched(writes, BATCH_WRITE_LIMIT, strict=False):
            self.sources.batch_write(list(chunk))
