"""``bmsuploader status``: every source's health, what waits where, this month's spend, the lease.

Read-only. Per configured source (the sources file: what the stack was deployed
with): its state item, a COUNT query over its seen entries and one over its
backlog. Then the queue's and the dead-letter queue's counts (GetQueueAttributes),
the queue's oldest-message age (CloudWatch, the only place SQS reports it), the
poster's control item (posts and spend of the month, in Japan time) and the lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, cast

import boto3
from botocore.exceptions import ClientError

from bmsuploader.aws.queue import QueueDepth, queue_depth
from bmsuploader.aws.state import LeaseRecord, PosterControl, SourceState, StateStore, budget_month
from bmsuploader.config.sources import SourcesConfig
from bmsuploader.contract.settings import MICRO
from bmsuploader.ops.display import duration, local, usd, when
from bmsuploader.ops.stack import Deployment


@dataclass(frozen=True)
class SourceStatus:
    name: str
    enabled: bool
    #: None: the fetcher never ran this source
    state: SourceState | None
    entries_seen: int
    backlog: int
    silent: bool

    @property
    def health(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.state is None:
            return "never run"
        if self.state.consecutive_failures:
            return "failing"
        return "silent" if self.silent else "ok"


@dataclass(frozen=True)
class OldestAge:
    seconds: float | None
    #: where the figure comes from, or why there is none
    note: str


@dataclass(frozen=True)
class Status:
    deployment: Deployment
    checked_at: datetime
    sources: list[SourceStatus]
    queue: QueueDepth
    oldest: OldestAge
    dead_letters: QueueDepth
    #: fetcher runs EventBridge Scheduler could not start (None: the stack has no such queue)
    schedule_dead_letters: QueueDepth | None
    control: PosterControl
    lease: LeaseRecord | None


class _CloudWatch(Protocol):
    def get_metric_data(self, **kwargs: Any) -> Mapping[str, Any]: ...


def collect(deployment: Deployment, sources: SourcesConfig, session: boto3.Session, now: datetime) -> Status:
    store = StateStore.on(deployment.fetcher.table_name, session.client("dynamodb"))
    sqs = session.client("sqs")
    names = [source.name for source in sources.sources]
    states, control = store.sources.run_state(names, budget_month(now))
    silence = deployment.fetcher.silent_source_hours
    rows = [
        SourceStatus(
            name=source.name,
            enabled=source.enabled,
            state=states.get(source.name),
            entries_seen=store.seen.count(source.name),
            backlog=store.backlog.count(source.name),
            silent=source.name in states and states[source.name].silent(now, silence),
        )
        for source in sources.sources
    ]
    queue = queue_depth(sqs, deployment.fetcher.queue_url)
    cloudwatch = cast(_CloudWatch, session.client("cloudwatch"))
    return Status(
        deployment=deployment,
        checked_at=now,
        sources=rows,
        queue=queue,
        oldest=oldest_age(cloudwatch, deployment.fetcher.queue_url, queue, now),
        dead_letters=queue_depth(sqs, deployment.poster.dlq_url),
        schedule_dead_letters=queue_depth(sqs, deployment.schedule_dlq_url)
        if deployment.schedule_dlq_url
        else None,
        control=control,
        lease=store.lease.current(),
    )


def oldest_age(cloudwatch: _CloudWatch, queue_url: str, depth: QueueDepth, now: datetime) -> OldestAge:
    """The queue's ApproximateAgeOfOldestMessage. SQS's own API does not report it, and
    receiving from a FIFO queue to look would hold the message's group back from the poster."""
    if depth.total == 0:
        return OldestAge(0, "the queue is empty")
    try:
        response = cloudwatch.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "age",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/SQS",
                            "MetricName": "ApproximateAgeOfOldestMessage",
                            "Dimensions": [{"Name": "QueueName", "Value": queue_url.rsplit("/", 1)[-1]}],
                        },
                        "Period": 300,
                        "Stat": "Maximum",
                    },
                }
            ],
            StartTime=now - timedelta(hours=1),
            EndTime=now,
            ScanBy="TimestampDescending",
        )
    except ClientError as exc:
        if "AccessDenied" not in exc.response.get("Error", {}).get("Code", ""):
            raise
        return OldestAge(None, "unknown: reading it needs cloudwatch:GetMetricData")
    (result,) = response["MetricDataResults"]
    if not result.get("Values"):
        return OldestAge(None, "unknown: CloudWatch has no datapoint from the last hour yet")
    at = result["Timestamps"][0]
    return OldestAge(float(result["Values"][0]), f"CloudWatch, {duration((now - at).total_seconds())} ago")


# --- output --------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def to_json(status: Status) -> dict[str, Any]:
    d, control = status.deployment, status.control
    limit = d.fetcher.limit_micro
    return {
        "stack": d.stack_name,
        "region": d.region,
        "checked_at": status.checked_at.isoformat(),
        "dry_run": d.poster.dry_run,
        "sources": [_source_json(row) for row in status.sources],
        "queue": {
            "waiting": status.queue.waiting,
            "in_flight": status.queue.in_flight,
            "delayed": status.queue.delayed,
            "oldest_age_seconds": status.oldest.seconds,
            "oldest_age_note": status.oldest.note,
        },
        "dead_letter_queue": {"messages": status.dead_letters.total},
        "schedule_dead_letter_queue": None
        if status.schedule_dead_letters is None
        else {"messages": status.schedule_dead_letters.total},
        "backlog": {
            "entries": sum(row.backlog for row in status.sources),
            "pending": control.backlog_pending,
        },
        "spend": {
            "month": control.month,
            "posts": control.posts,
            "spend_usd": str(Decimal(control.spend_micro) / MICRO),
            "limit_usd": None if limit is None else str(Decimal(limit) / MICRO),
            "posts_left": control.posts_left(limit, d.fetcher.max_cost_micro),
        },
        "lease": None
        if status.lease is None
        else {
            "owner": status.lease.owner,
            "acquired_at": _iso(datetime.fromtimestamp(status.lease.acquired_at, status.checked_at.tzinfo)),
            "expires_at": _iso(datetime.fromtimestamp(status.lease.expires_at, status.checked_at.tzinfo)),
            "expired": status.lease.expires_at < status.checked_at.timestamp(),
        },
    }


def _source_json(row: SourceStatus) -> dict[str, Any]:
    state = row.state or SourceState()
    return {
        "name": row.name,
        "enabled": row.enabled,
        "health": row.health,
        "last_success_at": state.last_success_at,
        "last_attempt_at": state.last_attempt_at,
        "last_new_at": state.last_new_at,
        "consecutive_failures": state.consecutive_failures,
        "last_error": state.last_error,
        "entries_seen": row.entries_seen,
        "backlog": row.backlog,
        "validators": {"etag": state.validators.etag, "last_modified": state.validators.last_modified},
    }


def _ago(moment: str | None, now: datetime) -> str:
    if moment is None:
        return "never"
    return f"{duration((now - datetime.fromisoformat(moment)).total_seconds())} ago"


def _validators(state: SourceState | None) -> str:
    if state is None:
        return "-"
    kinds = [
        k
        for k, v in (("etag", state.validators.etag), ("last-modified", state.validators.last_modified))
        if v
    ]
    return "+".join(kinds) or "-"


def render(status: Status) -> str:
    d, now = status.deployment, status.checked_at
    lines = [f"stack {d.stack_name} ({d.region}), {local(now)}"]
    if d.poster.dry_run:
        lines.append("DryRun is on: the poster logs posts instead of sending them to X")
    header = ("source", "health", "last success", "fails", "last new entry", "seen", "backlog", "validators")
    table = [header]
    for row in status.sources:
        state = row.state
        table.append(
            (
                row.name,
                row.health,
                _ago(state.last_success_at if state else None, now),
                str(state.consecutive_failures if state else 0),
                _ago(state.last_new_at if state else None, now),
                str(row.entries_seen),
                str(row.backlog),
                _validators(state),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    numeric = {3, 5, 6}
    lines.append("")
    for r in table:
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    for row in status.sources:
        if row.state and row.state.last_error and row.state.consecutive_failures:
            lines.append(f"  {row.name}: {row.state.last_error}")
        if row.health == "silent":
            lines.append(
                f"  {row.name}: no new entry for {d.fetcher.silent_source_hours} h or more "
                "(SilentSourceHours): check that the page still lists new uploads"
            )
    lines.append("")
    lines.extend(_summary(status))
    return "\n".join(lines)


def _summary(status: Status) -> list[str]:
    d, now, control, q = status.deployment, status.checked_at, status.control, status.queue
    if status.oldest.seconds is None:
        oldest = f"oldest: {status.oldest.note}"
    elif q.total:
        oldest = f"oldest waits {duration(status.oldest.seconds)} ({status.oldest.note})"
    else:
        oldest = ""
    queue = f"{q.waiting} waiting, {q.in_flight} in flight (being posted or parked), {q.delayed} delayed"
    dlq = status.dead_letters.total
    backlog = sum(row.backlog for row in status.sources)
    limit = d.fetcher.limit_micro
    spend = f"{control.month} (JST): {control.posts} post(s), {usd(control.spend_micro)}"
    spend += " (no limit)" if limit is None else f" of {usd(limit)} ({100 * control.spend_micro // limit} %)"
    lines = [
        f"queue         {queue}" + (f"; {oldest}" if oldest else ""),
        f"dead letters  {dlq}" + ("  -> `bmsuploader redrive` lists them with their reasons" if dlq else ""),
        *(
            [f"schedule DLQ  {status.schedule_dead_letters.total}  (fetcher runs Scheduler could not start)"]
            if status.schedule_dead_letters and status.schedule_dead_letters.total
            else []
        ),
        f"backlog       {backlog} entr{'y' if backlog == 1 else 'ies'}"
        + ("  (set aside at the spend limit; re-queued when it allows)" if backlog else ""),
        f"spend         {spend}",
        f"lease         {_lease(status.lease, now)}",
    ]
    return lines


def _lease(lease: LeaseRecord | None, now: datetime) -> str:
    if lease is None:
        return "free (no fetcher run in progress)"
    since = when(datetime.fromtimestamp(lease.acquired_at, now.tzinfo), now)
    until = datetime.fromtimestamp(lease.expires_at, now.tzinfo)
    if until < now:
        return f"expired, taken {since} by {lease.owner} (that run crashed; the next run takes it over)"
    return f"held since {since} by {lease.owner}, until {when(until, now)} (a run in progress)"
