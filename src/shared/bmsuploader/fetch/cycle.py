"""One fetcher run: lease -> for each source: listing -> new entries -> queue.

The handler (``src/fetcher/app.py``) builds a :class:`FetchCycle` and calls
:meth:`FetchCycle.run`. The order of operations *is* the design:

1. Take the run lease (it expires on its own). A second concurrent run --
   EventBridge Scheduler delivers at least once -- exits cleanly.
2. Read every source's state and the poster's control item in one BatchGetItem.
3. If the poster set entries aside in the backlog because the monthly budget
   was spent, and the budget allows again, put them back on the queue first,
   in order. While some remain, new entries wait unseen, so nothing
   overtakes them.
4. **Read** every source, concurrently (at most :data:`CONCURRENCY` at once and
   :data:`PER_HOST` per host, so old CGI sites are not hammered; hosts take
   turns): conditional GET of page 1 (304 = nothing to do), parse, find the
   unseen ids with reads batched across sources -- asking only about ids that
   were not on page 1 at the last complete run, so nothing when it lists
   exactly those -- and walk older pages after a burst
   (:mod:`bmsuploader.fetch.catchup`). Reading sends and writes nothing.
5. **Announce**, one source after another in configuration order (the run's
   cap is shared in that order): plan (:mod:`bmsuploader.fetch.dedup`), send
   oldest first with SendMessageBatch, one message per destination that carries
   the source (its own FIFO group), and mark entries seen **only after** every
   one of their sends succeeded. A crash between the two re-sends (deduplicated by SQS
   for 5 minutes, then by the poster's idempotency); it never loses an entry.
6. **Save** every source's state and give the lease back in one
   BatchWriteItem (25 items each). The page's validators and listing key are kept only
   when nothing is left waiting: otherwise the next run's conditional GET would
   answer 304 and strand the deferred entries until the page changes. (A
   first-run baseline is saved at once: a crash must not baseline it twice.)

A source that fails (fetch error, format error) is logged, counted and
recorded in its state; the other sources still run. An idle run (every page
304 or unchanged ids) costs three AWS calls: lease, one read, one write.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from bmsuploader.aws.queue import EntryQueue, Outgoing
from bmsuploader.aws.state import (
    Lease,
    LeaseHeld,
    PosterControl,
    SourceState,
    StateStore,
    StateStoreError,
    Validators,
    budget_month,
)
from bmsuploader.config.destinations import DEFAULT_DESTINATIONS, Destination, announcing
from bmsuploader.config.sources import Source
from bmsuploader.contract.errors import SourceError, SourceFormatError
from bmsuploader.contract.settings import Spending
from bmsuploader.fetch.backlog import BacklogDrain
from bmsuploader.fetch.catchup import Stop, walk
from bmsuploader.fetch.dedup import Plan, plan_first_run, plan_new
from bmsuploader.fetch.fetching import Page, PageFetcher
from bmsuploader.fetch.parsing import Entry, ParsedPage, parse_page
from bmsuploader.fetch.tables import read_table

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger


class MetricsSink(Protocol):
    """Per-source counters (EMF in Lambda)."""

    def record(self, source: str, counts: dict[str, int]) -> None: ...


#: Seconds a run keeps for itself after the last fetch: sending, marking seen, saving
#: state and releasing the lease.
RUN_RESERVE_SECONDS = 10.0
#: A source is not started with less time than this left; it waits for the next run.
MIN_SOURCE_SECONDS = 3.0
#: Sources read at once, and at once from one host (old CGI sites must not be hammered).
CONCURRENCY = 16
PER_HOST = 2


@dataclass
class SourceReport:
    source: str
    outcome: str = "ok"  # ok | not_modified | baseline | fetch_error | format_error | error | out_of_time
    found: int = 0
    new: int = 0
    enqueued: int = 0
    deferred: int = 0
    pages: int = 0
    catch_up_limit: int = 0
    lossy_decodes: int = 0
    repeated_ids: int = 0
    #: 1 when the source found no unseen entry for the silence threshold (SilentSourceHours)
    silent: int = 0
    error: str | None = None

    def counts(self) -> dict[str, int]:
        return {
            "EntriesFound": self.found,
            "EntriesNew": self.new,
            "EntriesEnqueued": self.enqueued,
            "EntriesDeferred": self.deferred,
            "FormatErrors": int(self.outcome == "format_error"),
            "FetchErrors": int(self.outcome == "fetch_error"),
            "CatchUpLimit": self.catch_up_limit,
            "LossyDecodes": self.lossy_decodes,
            "RepeatedIds": self.repeated_ids,
            "SourcesOutOfTime": int(self.outcome == "out_of_time"),
            "SilentSource": self.silent,
        }


@dataclass
class SourceRead:
    """What reading one source found; nothing was sent or written yet."""

    source: Source
    state: SourceState
    first_run: bool
    report: SourceReport = field(init=False)
    page: Page | None = None
    parsed: ParsedPage | None = None
    #: page 1's entries, newest first
    listed: list[Entry] = field(default_factory=list)
    #: the unseen entries, newest first, after the catch-up walk
    unseen: list[Entry] = field(default_factory=list)
    listing_key: str | None = None
    #: validators of the URLs page 1 leads to (a table's header and data)
    linked: tuple[tuple[str, Validators], ...] = ()
    #: the ids of page 1 DynamoDB is asked about: none when page 1 lists exactly the ids of
    #: the last complete run, else those not among them (every one of those is seen)
    unknown_ids: list[str] = field(default_factory=list)
    unseen_ids: set[str] | None = None
    error: SourceError | None = None
    unexpected: Exception | None = None

    def __post_init__(self) -> None:
        self.report = SourceReport(source=self.source.name)

    @property
    def ready(self) -> bool:
        """Read without error, and there is a listing to plan from."""
        return (
            self.error is None
            and self.unexpected is None
            and self.page is not None
            and not self.page.not_modified
        )


@dataclass
class CycleReport:
    outcome: str  # completed | skipped_lease_held
    sources: list[SourceReport] = field(default_factory=list)
    lease_holder: str | None = None
    requeued_from_backlog: int = 0
    backlog_pending: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "lease_holder": self.lease_holder,
            "sources": [vars(s) for s in self.sources],
            "enqueued": sum(s.enqueued for s in self.sources),
            "requeued_from_backlog": self.requeued_from_backlog,
            "backlog_pending": self.backlog_pending,
        }


@dataclass
class FetchCycle:
    """Everything one run needs; built by the handler, injected in tests."""

    #: every configured source: enabled ones are fetched; any may have a backlog to drain
    sources: tuple[Source, ...]
    store: StateStore
    queue: EntryQueue
    pages: PageFetcher
    logger: Logger
    metrics: MetricsSink
    clock: Callable[[], datetime]
    max_enqueue: int = 20
    #: the monthly spend limit and prices: the backlog drains only within the limit
    spending: Spending = field(default_factory=Spending)
    #: hours without an unseen entry after which a source is reported silent (0 = never)
    silent_after_hours: float = 0
    #: where entries are announced: one message per (entry, destination that carries its source)
    destinations: tuple[Destination, ...] = DEFAULT_DESTINATIONS
    _time_left: Callable[[], float] = field(default=lambda: math.inf, init=False, repr=False)
    _fingerprints: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def run(
        self, *, owner: str, lease_seconds: int, time_left: Callable[[], float] = lambda: math.inf
    ) -> CycleReport:
        """One run. ``time_left()`` is the invocation's remaining seconds: the run keeps
        :data:`RUN_RESERVE_SECONDS` of it for the last writes and the lease."""
        self._time_left = time_left
        now = self.clock()
        lease = self.store.lease.acquire(owner, now=int(now.timestamp()), ttl_seconds=lease_seconds)
        if isinstance(lease, LeaseHeld):
            self.logger.info(
                "another fetcher run holds the lease; this run exits without doing anything",
                extra={
                    "outcome": "skipped_lease_held",
                    "lease_owner": lease.owner,
                    "lease_expires_at": lease.expires_at,
                },
            )
            return CycleReport(outcome="skipped_lease_held", lease_holder=lease.owner)
        to_save: dict[str, SourceState] = {}
        try:
            report, to_save = self._run_sources(lease)
        finally:
            self.store.finish_run(to_save)
        return report

    def _run_sources(self, lease: Lease) -> tuple[CycleReport, dict[str, SourceState]]:
        report = CycleReport(outcome="completed")
        enabled = [s for s in self.sources if s.enabled]
        if not enabled:
            self.logger.warning(
                "no source is enabled in the sources file: nothing to fetch (set enabled = true)",
                extra={"outcome": "no_sources"},
            )
        states, control = self.store.sources.run_state([s.name for s in enabled], budget_month(self.clock()))
        budget = self.max_enqueue
        hold_new = False
        if control.backlog_pending:
            drain = BacklogDrain(self.store.backlog, self.queue, self.logger)
            requeued, still_pending = drain.run(
                control, self.sources, cap=budget, posts_left=self._posts_left(control)
            )
            report.requeued_from_backlog = requeued
            report.backlog_pending = still_pending
            budget -= requeued
            # Budget left but the run cap was reached: new entries wait (unseen)
            # so they cannot overtake the rest of the backlog. With the budget
            # spent, they go to the queue and the poster parks them behind it.
            hold_new = still_pending and self._posts_left(control) != 0
        reads = self._read_all(enabled, states)
        to_save = self._announce_all(reads, 0 if hold_new else budget)
        for read in reads:
            report.sources.append(read.report)
            self.metrics.record(read.source.name, read.report.counts())
        return report, to_save

    def _posts_left(self, control: PosterControl) -> int | None:
        return control.posts_left(self.spending.limit_micro, self.spending.max_cost_micro)

    # --- reading (concurrent; no sends, no writes) ----------------------------------

    def _read_all(self, sources: list[Source], states: dict[str, SourceState]) -> list[SourceRead]:
        """Read every source, in source order: page 1 concurrently (at most CONCURRENCY at once
        and PER_HOST per host), the unseen ids of all changed pages in shared batched reads,
        then the catch-up walks of the sources whose page 1 is all new."""
        if not sources:
            return []
        gates = {host: threading.BoundedSemaphore(PER_HOST) for host in {_host(s) for s in sources}}

        def gated(work: Callable[[SourceRead], None]) -> Callable[[SourceRead], SourceRead]:
            def run(read: SourceRead) -> SourceRead:
                with gates[_host(read.source)]:
                    try:
                        work(read)
                    except SourceError as exc:
                        read.error = exc
                    except Exception as exc:  # noqa: BLE001 - re-raised when announcing, where it is logged
                        read.unexpected = exc
                return read

            return run

        reads = []
        for source in sources:
            state = states.get(source.name)
            first_run = state is None or not state.baseline_done
            reads.append(SourceRead(source, state or SourceState(), first_run=first_run))
        with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(reads)), thread_name_prefix="read") as pool:
            list(pool.map(gated(self._read_first_page), _hosts_in_turn(reads)))
            asking = [r for r in reads if r.unknown_ids]
            if asking:
                unseen = self.store.seen.unseen_by_source({r.source.name: r.unknown_ids for r in asking})
                for read in asking:
                    read.unseen_ids = unseen[read.source.name]
            walking = [r for r in reads if r.unseen_ids is not None]
            list(pool.map(gated(self._walk), _hosts_in_turn(walking)))
        return reads

    def _read_first_page(self, read: SourceRead) -> None:
        source, state = read.source, read.state
        if self._fetch_budget() < MIN_SOURCE_SECONDS:
            # Untouched, not failed: its entries stay unseen and the next run reads them.
            read.report.outcome = "out_of_time"
            self.logger.warning(
                "not fetched: this run's time is used up (a slow site?); the next run reads it",
                extra={"source": source.name, "outcome": "out_of_time"},
            )
            return
        # Validators are kept for the URL and parsing config they validated: after
        # a config change the old ETag must not turn the new page into a 304.
        known = not read.first_run and state.validators_for == self._fingerprint(source)
        table = None
        if source.kind == "bmstable":  # page, header, data: see bmsuploader.fetch.tables
            table = read_table(
                self.pages,
                source,
                validators=state.validators if known else None,
                linked=state.linked if known else (),
                budget=self._fetch_budget,
            )
            page, read.linked = table.page, table.linked
        else:
            page = self.pages.fetch(
                source.url,
                source=source.name,
                validators=state.validators if known else None,
                encoding=source.page_encoding,
                budget_seconds=self._fetch_budget(),
            )
        read.page = page
        read.report.pages = 1
        self._check_decoding(source, page, 1, read.report)
        if page.not_modified:
            read.report.outcome = "not_modified"
            return
        if table is not None and table.parsed is not None:
            read.parsed = table.parsed
        else:
            read.parsed = parse_page(source, page.text, page_url=page.url)
        self._check_repeats(source, read.parsed, 1, read.report)
        read.listed = list(read.parsed.entries)
        read.report.found = len(read.listed)
        read.listing_key = listing_key(read.listed)
        if read.first_run:
            read.report.outcome = "baseline"
        elif not (known and read.listing_key == state.listing_key):
            # The ids of the last complete run's page 1 are all seen: ask only about the others
            # (none at all when page 1 lists exactly those ids).
            read.unknown_ids = [e.entry_id for e in read.listed if e.entry_id not in state.listed_ids]

    def _walk(self, read: SourceRead) -> None:
        assert read.page is not None and read.unseen_ids is not None
        assert read.parsed is not None
        read.unseen = self._catch_up(read.source, read.parsed, read.unseen_ids, read.report)

    def _fingerprint(self, source: Source) -> str:
        """:func:`page_fingerprint`, once per source for the container's life (sources never change)."""
        fingerprint = self._fingerprints.get(source.name)
        if fingerprint is None:
            fingerprint = self._fingerprints[source.name] = page_fingerprint(source)
        return fingerprint

    def _fetch_budget(self) -> float:
        """Seconds a fetch may take now without starving the run's last writes."""
        return self._time_left() - RUN_RESERVE_SECONDS

    def _check_repeats(self, source: Source, parsed: ParsedPage, number: int, report: SourceReport) -> None:
        if not parsed.duplicates:
            return
        report.repeated_ids += parsed.duplicates
        self.logger.warning(
            f"page {number} lists {parsed.duplicates} entr{'y' if parsed.duplicates == 1 else 'ies'} twice "
            f"under one id (e.g. RSS items sharing a guid); the first is kept: "
            f"{', '.join(parsed.duplicate_ids[:5])}",
            extra={"source": source.name, "outcome": "repeated_ids", "pages": number},
        )

    def _check_decoding(self, source: Source, page: Page, number: int, report: SourceReport) -> None:
        if not page.lossy:
            return
        report.lossy_decodes += 1
        self.logger.warning(
            f"page {number} did not decode cleanly as {page.encoding} ({page.decoded_by}): "
            f"{page.text.count(chr(0xFFFD))} character(s) became U+FFFD; set `encoding` for this source "
            "if the page declares the wrong charset",
            extra={
                "source": source.name,
                "outcome": "lossy_decode",
                "encoding": page.encoding,
                "pages": number,
            },
        )

    def _catch_up(
        self, source: Source, first: ParsedPage, unseen_ids: set[str], report: SourceReport
    ) -> list[Entry]:
        """Unseen entries, newest first, by the rules of :mod:`bmsuploader.fetch.catchup`."""

        def read_older(number: int) -> ParsedPage | None:
            report.pages = number
            older = self.pages.fetch(
                source.page_url(number),
                source=source.name,
                encoding=source.page_encoding,
                budget_seconds=self._fetch_budget(),
            )
            self._check_decoding(source, older, number, report)
            try:
                parsed = parse_page(source, older.text, page_url=older.url)
            except SourceFormatError as exc:
                if source.end_of_listing and re.search(source.end_of_listing, older.text):
                    return None
                raise SourceFormatError(
                    source.name,
                    f"older page {number} ({source.page_url(number)}) has no readable entries while "
                    f"every entry on page {number - 1} is new: a maintenance or error page may hide "
                    "uploads, so nothing of this run is sent or marked seen. If the listing really ends "
                    "there, set end_of_listing (text on that page) or selectors.next_page for this "
                    f"source. ({exc})",
                ) from exc
            self._check_repeats(source, parsed, number, report)
            return None if parsed.empty else parsed  # empty and allowed: its end_of_listing text

        result = walk(
            first,
            unseen_ids,
            max_pages=source.max_pages,
            read_older=read_older,
            unseen=lambda ids: self.store.seen.unseen(source.name, ids),
        )
        report.pages = result.pages
        if result.stop is Stop.MAX_PAGES and (source.max_pages > 1 or source.page_url_template):
            report.catch_up_limit = 1
            self.logger.error(
                f"every entry up to max_pages ({source.max_pages}) is new; older uploads beyond it are "
                "not known and will not be announced (raise max_pages if the uploader had a burst)",
                extra={"source": source.name, "outcome": "catch_up_limit", "pages": result.pages},
            )
        return result.unseen

    # --- announcing (in source order; sends and marks batched across sources) ----------

    def _announce_all(self, reads: list[SourceRead], budget: int) -> dict[str, SourceState]:
        """Plan in source order (the run's cap is shared in that order), record baselines,
        send oldest first, mark seen after each send. Returns the states to save."""
        now = self.clock()
        plans: dict[str, Plan] = {}
        for read in reads:
            if read.ready:
                if read.first_run:
                    plan = plan_first_run(read.listed, read.source.first_run, budget)
                else:
                    plan = plan_new(read.unseen, budget)
                budget -= len(plan.send)
                plans[read.source.name] = plan
                read.report.new = len(plan.send) + len(plan.deferred)
        for read in reads:
            recorded = plans.get(read.source.name)
            if recorded is not None and recorded.record:
                self._record_baseline(read, recorded, now)
        incomplete = self._send_all(reads, plans, now)
        to_save: dict[str, SourceState] = {}
        for read in reads:
            self.logger.append_keys(source=read.source.name)
            try:
                saved = self._conclude(read, plans.get(read.source.name), incomplete, now)
            except Exception as exc:
                self.logger.exception(
                    f"source {read.source.name!r}: unexpected error; its entries stay unseen and are "
                    "retried next run",
                    extra={"outcome": "error"},
                )
                read.report.outcome, read.report.error, saved = "error", repr(exc), None
            finally:
                self.logger.remove_keys(["source"])
            if saved is not None:
                to_save[read.source.name] = saved
                self._check_silence(read.report, saved)
        return to_save

    def _check_silence(self, report: SourceReport, saved: SourceState) -> None:
        if saved.consecutive_failures or not saved.silent(self.clock(), self.silent_after_hours):
            return  # a failing source has its own alarm
        report.silent = 1
        self.logger.warning(
            f"no new entry since {saved.last_new_at} ({self.silent_after_hours:g} h or more): check that "
            "the page still lists new uploads (`bmsuploader parse --source ... --url ...`)",
            extra={"source": report.source, "outcome": "silent"},
        )

    def _record_baseline(self, read: SourceRead, plan: Plan, now: datetime) -> None:
        name = read.source.name
        try:
            self.store.seen.mark_seen(name, [e.entry_id for e in plan.record], now=now, baseline=True)
        except StateStoreError as exc:
            read.unexpected = exc  # nothing sent for it; the first run is simply tried again
            return
        self.logger.info(
            "first run: recorded the listing as the baseline",
            extra={
                "source": name,
                "outcome": "baseline",
                "recorded": len(plan.record),
                "to_send": len(plan.send),
            },
        )

    def _send_all(self, reads: list[SourceRead], plans: dict[str, Plan], now: datetime) -> set[str]:
        """Send every planned entry (source order, oldest first) to each of its destinations,
        then mark seen the entries SQS took all messages of. A batch holds at most one
        message per group (:meth:`EntryQueue.send_in_order`), so ten new entries of one
        source cost ten SendMessageBatch calls: the price of an order that holds whatever
        SendMessageBatch reports (it reports each entry on its own). Stops at the first refused send:
        what is left stays unseen, in order, for the next run; the messages of a half-sent
        entry go again and are absorbed (SQS dedup within 5 minutes, then the poster's
        idempotency record per destination). Returns the sources left incomplete."""
        entries = [
            (read, entry)
            for read in reads
            if read.unexpected is None and (plan := plans.get(read.source.name)) is not None
            for entry in plan.send
        ]
        outgoing: list[Outgoing] = []
        waiting: dict[int, int] = {}  # entry index -> its messages not yet sent
        owner: dict[int, int] = {}  # id(outgoing) -> entry index
        for index, (read, entry) in enumerate(entries):
            message = entry.to_message(read.source.name, now)
            destinations = announcing(self.destinations, read.source.name)
            waiting[index] = len(destinations)
            for destination in destinations:
                out = Outgoing.of(message.for_destination(destination.message_name))
                owner[id(out)] = index
                outgoing.append(out)
        incomplete: set[str] = set()
        for result in self.queue.send_in_order(outgoing):
            for out in result.sent:
                waiting[owner[id(out)]] -= 1
            for out, reason in result.failed:
                read, entry = entries[owner[id(out)]]
                self.logger.error(
                    "could not enqueue; the entry stays unseen and is sent next run",
                    extra={
                        "source": read.source.name,
                        "entry_id": entry.entry_id,
                        "group": out.group_id,
                        "outcome": "enqueue_failed",
                        "reason": reason,
                    },
                )
        # Marked once, after the sends (25 marks per BatchWriteItem): a crash before the
        # marks sends them again next run, which SQS's dedup id or the poster's record absorbs.
        self._mark_sent([entries[i] for i, left in waiting.items() if left == 0], now, incomplete)
        incomplete.update(entries[i][0].source.name for i, left in waiting.items() if left)
        return incomplete

    def _mark_sent(self, sent: list[tuple[SourceRead, Entry]], now: datetime, incomplete: set[str]) -> None:
        if not sent:
            return
        try:
            self.store.seen.mark_many([(r.source.name, e.entry_id) for r, e in sent], now=now)
        except StateStoreError as exc:
            # Sent but not marked: next run sends them again and the
            # poster's idempotency absorbs the repeat. Nothing is lost.
            incomplete.update(r.source.name for r, _ in sent)
            self.logger.error(
                "entries were enqueued but could not be marked seen; they will be re-sent",
                extra={"outcome": "mark_seen_failed", "error": str(exc)},
            )
        for read, entry in sent:
            read.report.enqueued += 1
            self.logger.info(
                "enqueued",
                extra={"source": read.source.name, "entry_id": entry.entry_id, "outcome": "enqueued"},
            )

    def _conclude(
        self, read: SourceRead, plan: Plan | None, incomplete: set[str], now: datetime
    ) -> SourceState | None:
        """One source's report and the state to save (None: leave it untouched)."""
        report, state = read.report, read.state
        if read.unexpected is not None:
            raise read.unexpected
        if read.error is not None:
            return self._source_failed(state, report, read.error, now)
        if read.page is None:  # out of time
            return None
        fingerprint = self._fingerprint(read.source)
        if read.page.not_modified:
            self.logger.info(
                "listing not modified since last run (HTTP 304)", extra={"outcome": "not_modified"}
            )
            return state.succeeded(
                now,
                read.page.validators,
                fingerprint,
                state.listing_key,
                read.linked,
                listed_ids=state.listed_ids,
            )
        assert plan is not None
        report.deferred = len(plan.send) - report.enqueued + len(plan.deferred)
        for entry in plan.deferred:
            self.logger.info(
                "over this run's enqueue cap; waits for the next run",
                extra={"entry_id": entry.entry_id, "outcome": "deferred"},
            )
        complete = plan.complete and report.deferred == 0 and read.source.name not in incomplete
        saved = state.succeeded(
            now,
            read.page.validators if complete else Validators(),
            fingerprint,
            read.listing_key if complete else None,
            read.linked if complete else (),
            listed_ids=(e.entry_id for e in read.listed) if complete else (),
            found_new=report.new > 0,
        )
        self.logger.info(
            "source done",
            extra={
                "outcome": report.outcome,
                "found": report.found,
                "new": report.new,
                "enqueued": report.enqueued,
                "deferred": report.deferred,
                "pages": report.pages,
            },
        )
        if read.first_run:
            self.store.sources.put(read.source.name, saved)  # at once: never baseline twice
            return None
        return saved

    def _source_failed(
        self, state: SourceState, report: SourceReport, exc: SourceError, now: datetime
    ) -> SourceState:
        report.outcome = "format_error" if isinstance(exc, SourceFormatError) else "fetch_error"
        report.error = str(exc)
        failed = state.failed(now, str(exc))
        hint = (
            "the page no longer matches the configured selectors: check the site and sources.toml "
            "(`bmsuploader parse --source ... --url ...`)"
            if isinstance(exc, SourceFormatError)
            else "the site could not be fetched; it is retried on the next schedule"
        )
        self.logger.error(
            f"{exc} -- {hint}",
            extra={
                "outcome": report.outcome,
                "consecutive_failures": failed.consecutive_failures,
            },
        )
        return failed


def page_fingerprint(source: Source) -> str:
    """What a page's validators validate: its URL and the config that parses it."""
    parsing = source.model_dump(mode="json", include={"url", "kind", "encoding", "selectors", "id_regex"})
    if source.json_selectors is not None:  # only when set: other sources keep their fingerprint
        parsing["json_selectors"] = source.json_selectors.model_dump(mode="json")
    return hashlib.sha256(json.dumps(parsing, sort_keys=True).encode()).hexdigest()[:32]


def listing_key(entries: list[Entry]) -> str:
    """Digest of a page's entry ids, in order."""
    return hashlib.sha256("\x00".join(e.entry_id for e in entries).encode()).hexdigest()[:32]


def _host(source: Source) -> str:
    """The per-host gate's key: host and port of the listing."""
    return urlsplit(source.url).netloc


def _hosts_in_turn(reads: list[SourceRead]) -> list[SourceRead]:
    """``reads`` with their hosts taking turns (each host's in source order): the pool's workers
    take work in this order, and a worker waiting at a busy host's gate reads nothing, so sources
    listed host by host would otherwise be read a host or two at a time."""
    by_host: dict[str, list[SourceRead]] = {}
    for read in reads:
        by_host.setdefault(_host(read.source), []).append(read)
    turns = itertools.zip_longest(*by_host.values())
    return [read for turn in turns for read in turn if read is not None]
