"""Seen entries: one item per announced (or baselined) entry of a source.

    pk = "SOURCE#<name>"   sk = "ENTRY#<id>"   seen_at, baseline (true when recorded without sending)

Seen entries never expire: an entry still listed on a page must stay seen,
or it would be announced again. ``baseline`` lets ``bmsuploader explain`` tell
an entry a first run recorded on purpose from one that was sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import batched
from typing import Any

from bmsuploader.aws.state.table import BATCH_WRITE_LIMIT, StateTable, s, source_pk


def entry_sk(entry_id: str) -> str:
    return f"ENTRY#{entry_id}"


@dataclass(frozen=True)
class SeenEntry:
    #: when the fetcher recorded it (ISO 8601, UTC): right after SQS accepted it, if it was sent
    seen_at: str
    #: recorded by a first run without being sent (entries baselined before the flag existed: False)
    baseline: bool


class SeenEntries(StateTable):
    def unseen(self, source: str, entry_ids: Sequence[str]) -> set[str]:
        """The ids among ``entry_ids`` not yet recorded as seen (batched reads)."""
        return self.unseen_by_source({source: entry_ids}).get(source, set())

    def unseen_by_source(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
        """The same for many sources at once: 100 keys per BatchGetItem, whatever their source."""
        unique = {source: list(dict.fromkeys(ids)) for source, ids in wanted.items()}
        keys = [
            {"pk": s(source_pk(source)), "sk": s(entry_sk(eid))}
            for source, ids in unique.items()
            for eid in ids
        ]
        seen: dict[str, set[str]] = {source: set() for source in unique}
        for item in self._batch_get(keys, projection=True):
            source = item["pk"]["S"].removeprefix("SOURCE#")
            seen[source].add(item["sk"]["S"].removeprefix("ENTRY#"))
        return {source: set(ids) - seen[source] for source, ids in unique.items()}

    def mark_seen(
        self, source: str, entry_ids: Sequence[str], *, now: datetime, baseline: bool = False
    ) -> None:
        """Record one source's entries as seen (see :meth:`mark_many`)."""
        self.mark_many([(source, eid) for eid in entry_ids], now=now, baseline=baseline)

    def mark_many(self, entries: Sequence[tuple[str, str]], *, now: datetime, baseline: bool = False) -> None:
        """Record (source, entry id) pairs as seen, 25 per BatchWriteItem whatever their source;
        ``baseline``: recorded by a first run without sending.

        Raises :class:`StateStoreError` if DynamoDB keeps refusing some; the caller
        then leaves them unseen (sent again next run, absorbed by the poster's
        idempotency)."""
        stamp = now.astimezone(UTC).isoformat()
        extra: dict[str, Any] = {"baseline": {"BOOL": True}} if baseline else {}
        for chunk in batched(dict.fromkeys(entries), BATCH_WRITE_LIMIT, strict=False):
            requests: list[Any] = [
                {
                    "PutRequest": {
                        "Item": {
                            "pk": s(source_pk(source)),
                            "sk": s(entry_sk(eid)),
                            "seen_at": s(stamp),
                            **extra,
                        }
                    }
                }
                for source, eid in chunk
            ]
            self.batch_write(requests)

    def get(self, source: str, entry_id: str) -> SeenEntry | None:
        """The seen item of one entry, or None if the fetcher never recorded it."""
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"pk": s(source_pk(source)), "sk": s(entry_sk(entry_id))},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return None
        return SeenEntry(
            seen_at=str(item.get("seen_at", {}).get("S", "")),
            baseline=bool(item.get("baseline", {}).get("BOOL", False)),
        )

    def count(self, source: str) -> int:
        """How many entries of a source are recorded as seen."""
        return self._count(
            "pk = :pk AND begins_with(sk, :entry)", {":pk": s(source_pk(source)), ":entry": s("ENTRY#")}
        )
