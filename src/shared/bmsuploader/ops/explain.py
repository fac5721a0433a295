"""``bmsuploader explain SOURCE ENTRY_ID [--destination NAME]``: what happened to one upload
on one destination (default ``x``), and where it waits.

Read-only. It asks, in this order, and stops at the first answer:

1. the poster's idempotency record (one GetItem): COMPLETED = posted (tweet id),
   INPROGRESS = being posted, or an attempt that was interrupted;
2. the backlog (one Query): set aside at the spend limit, and its place;
3. the seen item (one GetItem): not seen yet, and why (the source's state);
   recorded by a first run as the baseline: not posted, by design;
4. the dead-letter queue, only when it is still in question and the queue is
   not empty (each message stays hidden from other readers for
   :data:`HOLD_SECONDS`): dead-lettered, with the reason;
5. else it waits on the queue.

The main queue is never received from: receiving from a FIFO queue hides the
message and holds every later message of its source back from the poster. So
"on the queue" is what remains when every other place says no, shown with the
queue's counts; the Logs Insights query printed at the end shows its journey.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3

from bmsuploader.aws.idempotency import KEEP_SECONDS, PostRecord, PostRecords
from bmsuploader.aws.queue import DeadLetter, DeadLetters, QueueDepth, queue_depth
from bmsuploader.aws.state import BacklogItem, SeenEntry, SourceState, StateStore, budget_month
from bmsuploader.config.sources import Source, SourcesConfig
from bmsuploader.contract.message import group_id, message_identity
from bmsuploader.ops import queries
from bmsuploader.ops.display import duration, when
from bmsuploader.ops.stack import Deployment

#: Seconds each looked-at dead-letter message stays hidden from other readers (a read-only
#: look cannot un-hide it, so keep it short; the look itself lasts about a second).
HOLD_SECONDS = 2

POSTED = "posted"
IN_PROGRESS = "in_progress"
DEAD_LETTER = "dead_letter"
BACKLOG = "backlog"
BASELINE = "baseline"
QUEUED = "queued"
NO_TRACE = "no_trace"
NOT_SEEN = "not_seen"


@dataclass
class Explanation:
    source: str
    entry_id: str
    #: the destination asked about (``x`` by default)
    destination: str = "x"
    verdict: str = NOT_SEEN
    #: one or two sentences: where the entry is and why
    summary: str = ""
    seen: SeenEntry | None = None
    record: PostRecord | None = None
    dead_letters: list[DeadLetter] = field(default_factory=list)
    backlog: tuple[BacklogItem, int, int] | None = None
    queue: QueueDepth | None = None
    state: SourceState | None = None
    configured: Source | None = None
    log_groups: tuple[str, ...] = ()

    @property
    def query(self) -> str:
        return queries.journey(self.source, self.entry_id)

    @property
    def tweet_url(self) -> str | None:
        data = self.record.data if self.record else None
        tweet = (data or {}).get("tweet_id")
        if self.verdict == POSTED and isinstance(tweet, str) and tweet.isdigit():
            return f"https://x.com/i/web/status/{tweet}"
        return None


def explain(
    deployment: Deployment,
    sources: SourcesConfig,
    session: boto3.Session,
    *,
    source: str,
    entry_id: str,
    now: datetime,
    destination: str = "x",
) -> Explanation:
    dynamodb, sqs = session.client("dynamodb"), session.client("sqs")
    store = StateStore.on(deployment.fetcher.table_name, dynamodb)
    records = PostRecords(deployment.poster.idempotency_table, deployment.poster_function_name, dynamodb)
    found = Explanation(source, entry_id, destination, log_groups=deployment.log_groups)
    # The destination named x keeps the single-X keys (bmsuploader.config.destinations).
    addressed = None if destination == "x" else destination
    try:
        found.configured = sources.get(source)
    except KeyError:
        found.configured = None
    states, _ = store.sources.run_state([source], budget_month(now))
    found.state = states.get(source)
    found.seen = store.seen.get(source, entry_id)
    found.record = records.get(source, entry_id, addressed)
    found.queue = queue_depth(sqs, deployment.fetcher.queue_url)
    # Only X spends money, so only X's entries are ever set aside.
    found.backlog = store.backlog.find(source, entry_id) if addressed is None else None
    waiting = queue_depth(sqs, deployment.poster.dlq_url).waiting if _dead_letter_in_question(found) else 0
    if waiting:
        letters = DeadLetters(deployment.poster.dlq_url, sqs).peek(
            hold_seconds=HOLD_SECONDS, expected=waiting
        )
        found.dead_letters = [
            letter
            for letter in letters
            if message_identity(letter.body) == (source, entry_id)
            and letter.group_id == group_id(source, addressed)
        ]
    found.verdict, found.summary = _verdict(found, now)
    return found


def _dead_letter_in_question(found: Explanation) -> bool:
    """Only an entry that was sent and is neither posted nor set aside can be dead-lettered."""
    if found.record is not None and found.record.status == "COMPLETED":
        return False
    return found.seen is not None and not found.seen.baseline and found.backlog is None


def _verdict(found: Explanation, now: datetime) -> tuple[str, str]:  # noqa: PLR0911 - one answer per place
    record, data = found.record, (found.record.data if found.record else None) or {}
    if record is not None and record.status == "COMPLETED":
        what = {
            "dry_run": "rendered in DryRun mode (logged, not sent to X)",
            "duplicate": "found already on X",
        }
        summary = f"{what.get(data.get('outcome', ''), 'posted')} {when(data.get('posted_at'), now)}"
        if data.get("tweet_id"):
            summary += f", tweet {data['tweet_id']}"
        return POSTED, summary
    if record is not None and record.status == "INPROGRESS":
        until = record.in_progress_until_ms
        if until and until / 1000 > now.timestamp():
            return IN_PROGRESS, "being posted right now by a poster invocation"
        return IN_PROGRESS, (
            "an attempt to post it was interrupted; its message comes back on the queue and is retried"
        )
    if found.dead_letters:
        reason = (
            found.dead_letters[0].reason or "no reason attribute: SQS moved it after maxReceiveCount receives"
        )
        ids = " ".join(f"--message-id {letter.message_id}" for letter in found.dead_letters)
        if found.dead_letters[0].check_first:
            return DEAD_LETTER, (
                f"in the dead-letter queue: {reason}. Look for the post first: if it is missing, "
                f"`bmsuploader redrive {ids} --yes`; if it is there, "
                f"`bmsuploader redrive {ids} --discard --yes`"
            )
        return DEAD_LETTER, (
            f"in the dead-letter queue: {reason}. Fix the cause, then `bmsuploader redrive {ids} --preview`"
        )
    if found.backlog is not None:
        item, place, of = found.backlog
        return BACKLOG, (
            f"set aside in the backlog {when(item.parked_at, now)} (monthly spend limit reached), "
            f"{place} of {of} for this source; the fetcher re-queues it, in order, when the limit allows"
        )
    if found.seen is None:
        return NOT_SEEN, _not_seen(found)
    if found.seen.baseline:
        return BASELINE, (
            f"recorded {when(found.seen.seen_at, now)} by the source's first run as the baseline: "
            "never posted, by design (a new source posts nothing, or only its newest entries with "
            "first_run = post_newest)"
        )
    queue = found.queue or QueueDepth(0, 0, 0)
    if queue.total:
        return QUEUED, (
            f"seen and enqueued {when(found.seen.seen_at, now)}; not posted yet, so it waits on the queue "
            f"({queue.waiting} waiting, {queue.in_flight} in flight or parked, {queue.delayed} delayed). "
            "It is not looked for there: receiving from a FIFO queue would hold its source back"
        )
    seen_ago = (now - datetime.fromisoformat(found.seen.seen_at)).total_seconds()
    expired = (
        f" A post record would have expired by now (kept {duration(KEEP_SECONDS)})."
        if seen_ago > KEEP_SECONDS
        else ""
    )
    return NO_TRACE, (
        f"seen {when(found.seen.seen_at, now)}, but not on the queue, in the backlog or the dead-letter "
        f"queue, and the poster has no record of it.{expired} (Baselines recorded before baselines were "
        "marked look like this too.) Its log lines (query below) tell the rest"
    )


def _not_seen(found: Explanation) -> str:
    source, state = found.configured, found.state
    if source is None:
        return f"not seen, and {found.source!r} is not in the sources file: check the name"
    if not source.enabled:
        return "not seen: the source is disabled (enabled = false)"
    if state is None:
        return "not seen: the fetcher has not run this source yet"
    if state.consecutive_failures:
        return (
            f"not seen: the source fails ({state.consecutive_failures} run(s) in a row): {state.last_error}. "
            "The first good run catches up, in order"
        )
    return (
        "not seen: not listed on the pages the fetcher reads yet, or over the per-run cap "
        "(MaxEnqueuePerRun: the next run sends it); check the id with `bmsuploader parse --source "
        f"{found.source} --url ...`"
    )


def to_json(found: Explanation) -> dict[str, Any]:
    data = found.record.data if found.record else None
    return {
        "source": found.source,
        "entry_id": found.entry_id,
        "destination": found.destination,
        "verdict": found.verdict,
        "summary": found.summary,
        "seen_at": found.seen.seen_at if found.seen else None,
        "baseline": bool(found.seen and found.seen.baseline),
        "post": None
        if found.record is None
        else {"status": found.record.status, "expires_at": found.record.expires_at, **(data or {})},
        "tweet_url": found.tweet_url,
        "dead_letters": [
            {"message_id": letter.message_id, "reason": letter.reason} for letter in found.dead_letters
        ],
        "backlog": None
        if found.backlog is None
        else {"parked_at": found.backlog[0].parked_at, "place": found.backlog[1], "of": found.backlog[2]},
        "queue": None if found.queue is None else vars(found.queue),
        "logs": {"log_groups": list(found.log_groups), "query": found.query},
    }


def render(found: Explanation, now: datetime) -> str:
    lines = [
        f"{found.source} / {found.entry_id} on {found.destination}: {found.verdict.replace('_', ' ')}",
        f"  {found.summary}",
    ]
    if found.seen:
        first = " (the first run's baseline)" if found.seen.baseline else ""
        lines.append(f"  seen      {when(found.seen.seen_at, now)}{first}")
    data = (found.record.data if found.record else None) or {}
    if found.tweet_url:
        lines.append(f"  tweet     {found.tweet_url}")
    if data.get("text"):
        lines.append(f"  text      {data['text']}")
    for letter in found.dead_letters:
        lines.append(f"  dead-letter message {letter.message_id}, there since {when(letter.sent_at, now)}")
    groups = ", ".join(found.log_groups) or "the stack's FetcherLogGroupName and PosterLogGroupName"
    lines += ["", f"Its log lines (CloudWatch Logs Insights over {groups}):", ""]
    lines += [f"  {line}" for line in found.query.splitlines()]
    return "\n".join(lines)
