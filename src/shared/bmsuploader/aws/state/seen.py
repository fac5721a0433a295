"""Seen entries: one item per announced (or baselined) entry of a source.

    pk = "SOURCE#<name>"   sk = "ENTRY#<id>"   seen_at

Seen entries never expire: an entry still listed on a page must stay seen,
or it would be announced again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import batched
from typing import Any

from bmsuploader.aws.state.table import BATCH_WRITE_LIMIT, StateTable, s, source_pk


def entry_sk(entry_id: str) -> str:
    return f"ENTRY#{entry_id}"


class SeenEntries(StateTable):
    def unseen(self, source: str, entry_ids: Sequence[str]) -> set[str]:
        """The ids among ``entry_ids`` not yet recorded as seen (batched reads)."""
        unique = list(dict.fromkeys(entry_ids))
        keys = [{"pk": s(source_pk(source)), "sk": s(entry_sk(eid))} for eid in unique]
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
                            "pk": s(source_pk(source)),
                            "sk": s(entry_sk(eid)),
                            "seen_at": s(stamp),
                        }
                    }
                }
                for eid in chunk
            ]
            self._batch_write(requests)
