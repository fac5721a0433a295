"""Dedup decisions: which listed entries to announce, record, or leave for later.

Pure functions over plain data, so every rule is a unit test. The fetcher
feeds them the parsed listing (newest first, as uploaders show it) and the
set of ids DynamoDB has not seen; they answer what to send, in what order.

Rules:

* **First run** of a source (no baseline yet): record everything listed as
  seen and announce nothing -- unless the source's ``first_run`` policy says
  to post the newest N. This is what keeps a new source from flooding.
* **Later runs**: announce every unseen entry, **oldest first**.
* **The per-run cap**: at most ``cap`` entries are sent per run. The rest are
  neither sent nor marked seen, so the next run finds them again. Because
  the oldest go first, what waits is always the newest part of the listing,
  and the catch-up walk below still reaches it.
* **Catch-up** (which older pages to read after a burst) has its own
  module and rules: :mod:`bmsuploader.fetch.catchup`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bmsuploader.config.sources import FirstRun
from bmsuploader.fetch.parsing import Entry


@dataclass(frozen=True)
class Plan:
    """What one source's run should do."""

    #: send these, in this order (oldest first), then mark each seen
    send: tuple[Entry, ...] = ()
    #: record these as seen without sending (the first-run baseline)
    record: tuple[Entry, ...] = ()
    #: unseen entries over the cap (oldest first): untouched, found again next run
    deferred: tuple[Entry, ...] = field(default=())

    @property
    def complete(self) -> bool:
        """True when nothing is left for a later run."""
        return not self.deferred


def plan_first_run(listed: Sequence[Entry], policy: FirstRun, cap: int) -> Plan:
    """Baseline a new source. ``listed`` is newest first."""
    if policy.policy == "baseline" or policy.count == 0:
        return Plan(record=tuple(listed))
    newest_oldest_first = list(reversed(listed[: policy.count]))
    rest = tuple(listed[policy.count :])
    cap = max(cap, 0)
    # The newest entries over the cap are deferred, not baselined: they are
    # still unseen next run and get announced then.
    return Plan(
        send=tuple(newest_oldest_first[:cap]),
        record=rest,
        deferred=tuple(newest_oldest_first[cap:]),
    )


def plan_new(unseen_newest_first: Sequence[Entry], cap: int) -> Plan:
    """Announce unseen entries oldest first, at most ``cap`` of them."""
    oldest_first = list(reversed(unseen_newest_first))
    cap = max(cap, 0)
    return Plan(send=tuple(oldest_first[:cap]), deferred=tuple(oldest_first[cap:]))
