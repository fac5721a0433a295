"""The backlog drain: put entries set aside by the poster back on the queue, in order.

The poster sets entries aside in the backlog (:mod:`bmsuploader.aws.state.backlog`)
when the monthly spend limit is reached. At the start of each fetcher run,
when the limit allows again, this puts them back on the queue, oldest first
per source, with a fresh deduplication id and their original order attached
(so that parking them again keeps upload order). While some remain, the
fetch cycle holds new entries back so nothing overtakes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bmsuploader.aws.queue import EntryQueue, Outgoing
from bmsuploader.aws.state import Backlog, BacklogItem, PosterControl
from bmsuploader.config.sources import Source
from bmsuploader.contract.message import backlog_deduplication_id

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger


@dataclass
class BacklogDrain:
    backlog: Backlog
    queue: EntryQueue
    logger: Logger

    def run(
        self, control: PosterControl, sources: Sequence[Source], *, cap: int, posts_left: int | None
    ) -> tuple[int, bool]:
        """Re-queue parked entries, oldest first per source, at most ``cap`` and what the
        spend limit still allows (``posts_left``, ``None`` = no limit).
        Returns (re-queued, still pending)."""
        left = posts_left
        if left == 0:
            self.logger.info(
                f"the monthly spend limit is reached for {control.month}; entries set aside in "
                "the backlog wait for next month",
                extra={"outcome": "backlog_waiting"},
            )
            return 0, True
        limit = cap if left is None else min(cap, left)
        requeued = 0
        complete = True
        for source in sources:
            items = self.backlog.oldest(source.name, limit=limit - requeued + 1)
            if not items:
                continue
            room = max(limit - requeued, 0)
            if len(items) > room:
                complete = False
            sent = self._requeue(source.name, items[:room])
            requeued += sent
            if sent < min(len(items), room):
                complete = False
                break
        if complete:
            self.backlog.drained(control.backlog_parked)
        return requeued, not complete

    def _requeue(self, source: str, items: list[BacklogItem]) -> int:
        messages = [
            Outgoing(
                entry_id=item.entry_id,
                body=item.body,
                group_id=source,
                deduplication_id=backlog_deduplication_id(source, item.entry_id, item.parked_at),
                backlog_order=item.order,
            )
            for item in items
        ]
        item_of = {id(m): item for m, item in zip(messages, items, strict=True)}
        sent = 0
        # One group: one message per SendMessageBatch (send_in_order), so a refused send
        # can never leave a later entry of the source on the queue ahead of it.
        for result in self.queue.send_in_order(messages):
            done = [item_of[id(m)] for m in result.sent]
            # Deleted only after the send succeeded: a crash in between sends
            # again next run, and the poster's idempotency absorbs it.
            self.backlog.unpark(done)
            for item in done:
                self.logger.info(
                    "re-queued from the backlog",
                    extra={"source": source, "entry_id": item.entry_id, "outcome": "requeued"},
                )
            sent += len(done)
            if result.failed:
                self.logger.error(
                    "could not re-queue from the backlog; retried next run",
                    extra={"source": source, "outcome": "enqueue_failed", "reason": result.failed[0][1]},
                )
        return sent
