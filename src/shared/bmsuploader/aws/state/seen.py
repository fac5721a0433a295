"""Seen entries: one item per announced (or baselined) entry of a source.

    pk = "SOURCE#<name>"   sk = "ENTRY#<id>"   seen_at

Seen entries never expire: an entry still listed on a page must stay seen,
or it would be announced again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import batched
from typing import Any

from bmsuploader.aws.state.table import BATCH_WRITE_LIMIT, StateTable, s, source_pk


def entry_sk(entry_id: str) -> str:
    return f"ENTRY#{entry_id}"


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

    def mark_seen(self, source: str, entry_ids: Sequence[str], *, now: datetime) -> None:
        """Record one source's entries as seen (see :meth:`mark_many`)."""
        self.mark_many([(source, eid) for eid in entry_ids], now=now)

    def mark_many(self, entries: Sequence[tuple[str, str]], *, now: datetime) -> None:
        """Record (source, entry id) pairs as seen, 25 per BatchWriteItem whatever their source.

        Raises :class:`StateStoreError` if DynamoDB keeps refusing some; the caller
        then leaves them unseen (sent again next run, absorbed by the poster's
        idempotency)."""
        stamp = now.astimezone(UTC).isoformat()
        for chunk in batched(dict.fromkeys(entries), BATCH_WRITE_LIMIT, strict=False):
            requests: list[Any] = [
                {
                    "PutRequest": {
                        "Item": {
                            "pk": s(source_pk(source)),
                            "sk": s(entry_sk(eid)),
                            "seen_at": s(stamp),
                        }
                    }
                }
                for source, eid in chunk
            ]
            self.batch_write(requests)
