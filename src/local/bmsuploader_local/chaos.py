"""The project's seeded fault-schedule test ("chaos"): ``make chaos N=300 SEED=1``.

It drives the **real handlers** -- ``load_handler("fetcher"|"poster").lambda_handler(event,
context)`` with the environment of ``provision_stack(...).environment()`` -- against a
moto server on loopback (boto3 reaches it through ``AWS_ENDPOINT_URL``, as in every
test), three growing sample sites (two classic CGI listings with pages, one RSS feed),
the fake X and a fake server for every other network of ``networks.FAKES`` (one
``[[destination]]`` each, named after its kind; ``--destinations x,mastodon`` picks
them; secrets in SSM, ``NETWORK_BASE_URLS``, each fake on the virtual clock: Bluesky's
access tokens expire every 2 virtual hours, so its sessions are refreshed under faults), while a
seeded schedule injects faults. Each *schedule* is one
EventBridge run of the fetcher (every 30 virtual minutes); between schedules this
module plays Lambda's SQS event source mapping: receive up to 10, shape the event,
invoke the poster, delete what is not in ``batchItemFailures`` (nothing when the
invocation fails). Messages received ``maxReceiveCount`` times (template.yaml) go to
the DLQ through moto's redrive policy.

Faults (each can be switched on or off, see :class:`Fault`): AWS throttling, connection
errors, timeouts after AWS applied a request, partial batch results (SendMessageBatch
``Failed``, BatchWriteItem/BatchGetItem unprocessed); the Lambda process dying right
after an AWS call or right after any network accepted a post (a create call it answered
2xx: one predicate per kind in :data:`NETWORK_FAULTS`); duplicate and concurrent fetcher
runs, a second poller; a lost DeleteMessageBatch; 401/429/5xx windows and dropped
connections from X, and from each other network in windows of its own (drawn from
its own generator); maintenance pages on page 1 and on older pages; bursts bigger
than a page; poison; a monthly spend limit reached before a month turn.

Then faults stop and schedules and polls go on until nothing moves on the queue, in
the backlog or on any network, and the run is judged **per destination**: every upload
posted exactly once on each network, in upload order per (destination, source),
nothing left on the queue or in the backlog, nothing in the DLQ but X's deliberate
poison (X refuses it; the other networks post it) and, for a network that cannot
check after an unknown outcome, dead letters "may already be posted", counted as
*held for the operator* (by the dead letter's ``check_first`` mark, never its wording),
not lost. The last line is ``schedules=N duplicates=D lost=L out_of_order=O stuck=S``
(the sums); a line per destination comes before it, and three
more checks: posts of entries never uploaded (a flood of old ones), other dead letters
of the other networks, and "masked" duplicates (X only) -- a second attempt at a post
that only X's duplicate-content check stopped although no fault hit the first attempt
after X answered it (the gap idempotency cannot close is a fault right there; anything
else is idempotency failing). Only X spends: the spend limit and the backlog are X's.

How the simulation stays faithful (and where it bends the emulator):

* **A crash is a dead process.** :class:`SimulatedCrash` is a ``BaseException``: the
  code's ``except Exception`` blocks do not see it, and once raised every later AWS
  or X call of that invocation raises it again, so ``finally`` blocks (lease release,
  budget release) do nothing, as in a killed process. The container is then cold.
* **Virtual time.** One :class:`VirtualClock` is "now" for the handlers
  (``bmsuploader.contract.clock.use``: leases, budget month, backlog stamps), for
  moto's SQS (``unix_time``/``unix_time_millis`` in ``moto.sqs.models``: visibility
  timeouts, the 5-minute deduplication window, retention) and for Powertools
  idempotency (the module-level ``dt`` of its persistence layer and base handler:
  record expiry and the IN_PROGRESS expiry). Powertools must follow the same clock:
  on real time an IN_PROGRESS record left by a crash would stay live for 30 real
  seconds while SQS redelivers after 180 *virtual* seconds (milliseconds of wall
  time), so every redelivery would meet "already in progress" and burn receive
  counts towards the DLQ -- an artefact, not a defect. The contexts
  (:class:`VirtualContext`) count their remaining time on the same clock, so the
  lease (remaining + 30 s) and the IN_PROGRESS expiry are what they are in Lambda.
  The publishers read a rate limit's reset against :func:`bmsuploader.contract.clock.epoch`,
  so they follow it too.
* **SQS FIFO group semantics.** moto differs from SQS: after a failure it can hand
  out a group's tail before its head (its "pending group" bookkeeping is updated
  while it walks the messages), and it decides group blocking once per receive.
  :func:`faithful_fifo_groups` replaces moto's receive for FIFO queues with SQS's
  documented rule: strict order within a MessageGroupId, and while any message of
  a group is in flight (received, not deleted, visibility not expired) no other
  message of that group is delivered. The redrive to the DLQ is kept. (moto's
  deduplication window only looks at messages still queued, where SQS remembers a
  deduplication id for 5 minutes after the message is gone: that makes repeats
  *more* frequent here, which only tests idempotency harder; it is left as is.)
* **Determinism.** A seed gives the same fault schedule: each schedule's plan comes
  from its own RNG (seeded from seed and schedule index), and each injected fault
  is decided from (seed, schedule, invocation, call) -- worker-thread calls are keyed
  by their request body -- so one different decision does not shift all later ones.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
import threading
import time
import types
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import boto3

from bmsuploader.aws.queue import CHECK_FIRST_ATTRIBUTE, REASON_ATTRIBUTE
from bmsuploader.config.sources import load_sources
from bmsuploader_local.aws import ACCOUNT, REGION, StackResources, provision_stack, start_moto_server
from bmsuploader_local.fake_x import FakeX
from bmsuploader_local.lambda_runtime import (
    SRC,
    FakeContext,
    delete_succeeded,
    load_handler,
    receive_as_event,
)
from bmsuploader_local.loopback import Scripted
from bmsuploader_local.networks import FAKES, LocalNetwork, base_urls, start_networks
from bmsuploader_local.saved_stack import environment
from bmsuploader_local.template import load_template
from bmsuploader_local.uploader_site import SAMPLE_COMMENTS, UploaderSite

if TYPE_CHECKING:
    from types import ModuleType

    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

TEMPLATE = SRC.parent / "template.yaml"
SCHEDULE_EVENT = SRC.parent / "events" / "fetcher-schedule.json"
JST = ZoneInfo("Asia/Tokyo")
#: The month turn every run crosses (at 80 % of its schedules).
MONTH_TURN = dt.datetime(2026, 12, 1, tzinfo=JST)
POISON_MARKER = "【POISON】"
MALFORMED_MARKER = "chaos-malformed"
#: Price of a post in USD (links are off in every chaos source, so both prices are this).
COST_PER_POST = 0.015
MAX_ENQUEUE_PER_RUN = 8
#: Lambda's asynchronous invocation retries a failed fetcher run after about 1 and 2 minutes.
ASYNC_RETRY_DELAYS = (60.0, 120.0)
#: Polls at one instant before time must move on (a safety net: each failure sets a delay).
MAX_POLLS_PER_INSTANT = 200
#: Schedules the settling phase may take before the run is judged anyway.
MAX_SETTLE_SCHEDULES = 400
#: Months the settling phase may skip while only the spend limit holds the backlog.
MAX_MONTH_JUMPS = 3


class Fault(StrEnum):
    """The fault kinds; each one can be switched off (``--without``)."""

    THROTTLE = "throttle"  # AWS ThrottlingException / ProvisionedThroughputExceeded, before the request
    CONNECTION = "connection"  # EndpointConnectionError, before the request
    AMBIGUOUS = "ambiguous"  # ReadTimeoutError after AWS applied the request
    PARTIAL_BATCH = "partial-batch"  # a batch call leaves entries failed / unprocessed (no error)
    #: SendMessageBatch fails an entry in the middle and sends the later ones. Not in ``all``:
    #: whether SQS FIFO can do that within one group is not documented either way.
    PARTIAL_BATCH_ANY = "partial-batch-any"
    CRASH_AWS = "crash-aws"  # the process dies right after an AWS call succeeded
    CRASH_X = "crash-x"  # the process dies right after X accepted a post
    DUPLICATE_FETCH = "duplicate-fetch"  # EventBridge Scheduler delivers a run twice
    CONCURRENT_FETCH = "concurrent-fetch"  # a second run starts while one is running
    CONCURRENT_POLL = "concurrent-poll"  # a second poller invokes the poster during a batch
    LOST_DELETE = "lost-delete"  # the event source mapping's DeleteMessageBatch does not happen
    X_401 = "x-401"
    X_429 = "x-429"
    X_5XX = "x-5xx"
    X_DROP = "x-drop"  # X accepts the post, then the connection drops
    MAINTENANCE_FIRST = "maintenance-first"  # page 1 answers 200 with a row-less "busy" page
    MAINTENANCE_OLDER = "maintenance-older"  # an older page does, while a burst needs it
    BURST = "burst"  # more uploads at once than one listing page shows
    POISON = "poison"  # X answers 400 for an upload (the other networks post it); a malformed message
    BUDGET = "budget"  # a monthly spend limit reached before the month turns
    # The other networks (every destination kind but X), each in its own windows:
    NET_401 = "net-401"
    NET_429 = "net-429"
    NET_5XX = "net-5xx"
    NET_DROP = "net-drop"  # the network takes the post, then the connection drops
    CRASH_NET = "crash-net"  # the process dies right after another network accepted a post


#: what ``all`` means: every kind whose behaviour AWS documents or the field notes describe
ALL_FAULTS = frozenset(Fault) - {Fault.PARTIAL_BATCH_ANY}


def parse_faults(only: str = "all", without: str = "") -> frozenset[Fault]:
    """``only`` and ``without`` are comma-separated fault names; ``all`` stands for
    :data:`ALL_FAULTS` (``all,partial-batch-any`` adds the undocumented one)."""

    def names(text: str) -> set[Fault]:
        parts = {part.strip() for part in text.split(",") if part.strip()}
        try:
            return (set(ALL_FAULTS) if "all" in parts else set()) | {Fault(p) for p in parts - {"all"}}
        except ValueError as exc:
            raise SystemExit(f"{exc}; fault kinds: all, {', '.join(Fault)}") from exc

    return frozenset(names(only or "all") - names(without))


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class SourceSpec:
    """One chaos source and the sample site behind it."""

    name: str
    kind: str  # html | rss
    rows_per_page: int
    max_pages: int
    first_id: int

    @property
    def window(self) -> int:
        """Unseen uploads the source may hold and still be caught up without loss by design:
        below ``max_pages`` pages (html) or the feed's length (rss), with a page to spare."""
        return (self.max_pages - 1) * self.rows_per_page if self.kind == "html" else self.rows_per_page - 5

    def entry_id(self, site_id: str) -> str:
        """The id the fetcher parses: the classic CGI file number, the feed's guid."""
        return site_id if self.kind == "html" else f"up{site_id}"


SOURCES = (
    SourceSpec("alpha", "html", rows_per_page=5, max_pages=10, first_id=1),
    SourceSpec("beta", "html", rows_per_page=5, max_pages=10, first_id=3001),
    SourceSpec("gamma", "rss", rows_per_page=20, max_pages=1, first_id=6001),
)
INITIAL_UPLOADS = 12


def sources_toml(sites: Mapping[str, UploaderSite], destinations: Sequence[str] = ()) -> str:
    """The chaos sources file; ``destinations`` (kinds) adds a ``[[destination]]`` table for each."""
    blocks = []
    for spec in SOURCES:
        site = sites[spec.name]
        lines = ["[[source]]", f'name = "{spec.name}"', f'kind = "{spec.kind}"']
        if spec.kind == "html":
            lines += [
                'preset = "classic-cgi"',
                f'url = "{site.listing_url}"',
                f'page_url_template = "{site.listing_url}?page={{page}}"',
                f"max_pages = {spec.max_pages}",
            ]
        else:
            lines.append(f'url = "{site.feed_url}"')
        lines += [
            'first_run = { policy = "baseline" }',
            'template = "{source} {entry_id} {title}"',
            "include_link = false",
        ]
        blocks.append("\n".join(lines))
    blocks += [destination_toml(kind) for kind in destinations]
    return "\n\n".join(blocks) + "\n"


#: Where each destination's secrets live (start_networks stores what its fake accepts there).
SECRETS_PATH = "/bmsuploader/destinations"


def destination_toml(kind: str) -> str:
    """One destination of ``kind``, named after it. The instance only where the kind needs
    one (the poster talks to the fakes through ``NETWORK_BASE_URLS`` whatever it says)."""
    from pydantic import ValidationError

    from bmsuploader.config.destinations import Destination

    fields = {"name": kind, "kind": kind}
    if kind != "x":
        fields["secret"] = f"{SECRETS_PATH}/{kind}"
        try:
            Destination.model_validate(fields)
        except ValidationError:
            fields["instance"] = f"https://{kind}.example"
    return "\n".join(["[[destination]]", *(f'{key} = "{value}"' for key, value in fields.items())])


@dataclass(frozen=True)
class NetworkFaults:
    """How the fault test meets one destination kind (its row in :data:`NETWORK_FAULTS`).

    Besides its row, a kind's fake (``networks.FAKES``) needs a ``responder`` hook for its
    create call and ``unauthorized()``, ``server_error(status)`` and ``accept_then_drop()``
    answers; one whose answers depend on time (post times the publisher's check compares,
    an Idempotency-Key's hour) has a ``now`` clock, which follows the virtual one."""

    #: whether (method, path) is the call that creates a post
    creates: Callable[[str, str], bool]
    #: the fake's 429 for an outage window ending at ``end``, asked at ``now`` (virtual epochs)
    rate_limited: Callable[[float, float], Any]
    #: whether a create call's status means the network took the post
    accepted: Callable[[int], bool] = lambda status: 200 <= status < 300


def _x_rate_limited(now: float, end: float) -> Any:
    return FakeX.rate_limited(int(end))  # virtual epoch (see virtual_time)


def _mastodon_rate_limited(now: float, end: float) -> Any:
    from bmsuploader_local.fake_mastodon import FakeMastodon

    return FakeMastodon.rate_limited(dt.datetime.fromtimestamp(end, dt.UTC))


def _misskey_rate_limited(now: float, end: float) -> Any:
    from bmsuploader_local.fake_misskey import FakeMisskey

    return FakeMisskey.rate_limited(retry_after=max(1, math.ceil(end - now)))


def _bluesky_rate_limited(now: float, end: float) -> Any:
    from bmsuploader_local.fake_bluesky import FakeBluesky

    return FakeBluesky.rate_limited(int(end))  # virtual epoch


def _discord_rate_limited(now: float, end: float) -> Any:
    from bmsuploader_local.fake_discord import FakeDiscord

    return FakeDiscord.rate_limited(round(end - now, 3))


_DISCORD_WEBHOOK = re.compile(r"^/api(?:/v\d{1,2})?/webhooks/\d+/[^/]+/?$")

#: One row per destination kind: the injector's "crash right after the network accepted a
#: post" matches a create call by its row, and the outage windows answer 429 through it.
NETWORK_FAULTS: dict[str, NetworkFaults] = {
    "x": NetworkFaults(
        creates=lambda method, path: method == "POST" and path == "/2/tweets",
        rate_limited=_x_rate_limited,
        accepted=lambda status: status == 201,
    ),
    "mastodon": NetworkFaults(
        creates=lambda method, path: method == "POST" and path == "/api/v1/statuses",
        rate_limited=_mastodon_rate_limited,
    ),
    "misskey": NetworkFaults(
        creates=lambda method, path: method == "POST" and path == "/api/notes/create",
        rate_limited=_misskey_rate_limited,
    ),
    "bluesky": NetworkFaults(
        creates=lambda method, path: method == "POST" and path == "/xrpc/com.atproto.repo.createRecord",
        rate_limited=_bluesky_rate_limited,
    ),
    "discord": NetworkFaults(
        creates=lambda method, path: method == "POST" and bool(_DISCORD_WEBHOOK.match(path)),
        rate_limited=_discord_rate_limited,
    ),
}


# --------------------------------------------------------------------------- virtual time


class VirtualClock:
    """Seconds since the epoch that move only when the simulation says so."""

    def __init__(self, start: dt.datetime) -> None:
        self._t = start.timestamp()

    def time(self, _when: object = None) -> float:
        return self._t

    def millis(self, _when: object = None) -> float:
        return self._t * 1000.0

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._t, dt.UTC)

    def set(self, t: float) -> None:
        """Move to ``t`` (never backwards)."""
        self._t = max(self._t, t)


def _datetime_module(clock: VirtualClock) -> types.ModuleType:
    """A stand-in for the ``datetime`` module whose ``datetime.now()`` reads ``clock``."""

    class VirtualDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Self:
            return cls.fromtimestamp(clock.time(), tz)

    module = types.ModuleType("datetime")
    module.__dict__.update(vars(dt))
    module.datetime = VirtualDatetime  # type: ignore[attr-defined]
    return module


def _patch(stack: contextlib.ExitStack, target: Any, name: str, value: Any) -> None:
    """``setattr`` for as long as ``stack`` lasts."""
    original = getattr(target, name)
    setattr(target, name, value)
    stack.callback(setattr, target, name, original)


@contextlib.contextmanager
def virtual_time(clock: VirtualClock) -> Iterator[None]:
    """Make ``clock`` the time of the handlers, of moto's SQS and of Powertools idempotency."""
    import importlib

    from moto.sqs import models as sqs_models

    from bmsuploader.contract import clock as contract_clock

    with contextlib.ExitStack() as stack:
        _patch(stack, sqs_models, "unix_time", clock.time)
        _patch(stack, sqs_models, "unix_time_millis", clock.millis)
        shim = _datetime_module(clock)
        for name in ("base", "persistence.base", "persistence.datarecord", "persistence.dynamodb"):
            module = importlib.import_module(f"aws_lambda_powertools.utilities.idempotency.{name}")
            _patch(stack, module, "dt", shim)
        # The publishers read a rate limit's reset against contract.clock too.
        contract_clock.use(clock.now)
        stack.callback(contract_clock.use, None)
        yield


@dataclass
class VirtualContext(FakeContext):
    """A Lambda context whose remaining time runs on the virtual clock."""

    clock: VirtualClock | None = None
    _virtual_start: float = 0.0

    def __post_init__(self) -> None:
        self._virtual_start = self.clock.time() if self.clock else 0.0

    def get_remaining_time_in_millis(self) -> int:
        if self.clock is None:
            return super().get_remaining_time_in_millis()
        elapsed = self.clock.time() - self._virtual_start
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


# --------------------------------------------------------------------------- moto's FIFO, made faithful

_RECEIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def faithful_fifo_groups() -> Iterator[None]:
    """Receive from FIFO queues by SQS's documented group rules (see the module docstring).

    Walk the messages in send order; a group whose earliest message is in flight (or
    delayed) is blocked for the rest of the walk, so no later message of it is
    delivered; a visible message is delivered (several of one group may go in one
    batch, in order); a message received ``maxReceiveCount`` times goes to the DLQ
    and its group carries on.
    """
    from moto.sqs import models

    original = models.SQSBackend.receive_message

    def receive_message(  # noqa: PLR0917 - moto's signature
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        queue = self.get_queue(queue_name)
        if not queue.fifo_queue:
            return original(
                self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names
            )
        with _RECEIVE_LOCK:
            return _receive_fifo(
                self,
                queue,
                name=queue_name,
                count=count,
                visibility_timeout=visibility_timeout,
                attribute_names=message_attribute_names,
            )

    with contextlib.ExitStack() as stack:
        _patch(stack, models.SQSBackend, "receive_message", receive_message)
        yield


def _receive_fifo(
    backend: Any,
    queue: Any,
    *,
    name: str,
    count: int,
    visibility_timeout: int,
    attribute_names: list[str] | None,
) -> list[Any]:
    from copy import deepcopy

    from moto.sqs import models

    policy = queue.redrive_policy if queue.dead_letter_queue is not None else None
    max_receives = int(policy["maxReceiveCount"]) if policy else None
    # moto's own clock (the virtual one under virtual_time). Its ``Message.visible`` says
    # "now > visible_at", so a visibility timeout of 0 would wait a tick: compare here instead.
    now = vars(models)["unix_time_millis"]()
    blocked: set[str | None] = set()
    delivered: list[Any] = []
    expired: list[Any] = []
    to_dlq: list[Any] = []
    for message in list(queue._messages):
        if message.group_id in blocked:
            continue
        if message.visible_at > now or message.delayed_until > now:
            blocked.add(message.group_id)  # in flight: its group waits behind it
            continue
        if not backend.is_message_valid_based_on_retention_period(name, message):
            expired.append(message)  # SQS deletes it, whatever its state
            continue
        if max_receives is not None and message.approximate_receive_count >= max_receives:
            to_dlq.append(message)
            continue
        if len(delivered) >= count:
            break
        queue.pending_messages.add(message)
        message.mark_received(visibility_timeout=visibility_timeout)
        copy = deepcopy(message)
        models._filter_message_attributes(copy, attribute_names or [])
        delivered.append(copy)
    for message in expired:
        queue._messages.remove(message)
    for message in to_dlq:
        queue._messages.remove(message)
        queue.dead_letter_queue.add_message(message)
    return delivered


@contextlib.contextmanager
def _shared_botocore_loader() -> Iterator[None]:
    """Wall time only: every new boto3 session (Powertools makes one per cold start) reuses
    one loader, so service models are not read from disk again at each simulated cold start."""
    import botocore.session

    original = botocore.session.create_loader
    loaders: dict[Any, Any] = {}

    def create_loader(search_path_string: Any = None) -> Any:
        if search_path_string not in loaders:
            loaders[search_path_string] = original(search_path_string)
        return loaders[search_path_string]

    with contextlib.ExitStack() as stack:
        _patch(stack, botocore.session, "create_loader", create_loader)
        yield


def _moto_queue(queue_url: str) -> Any:
    from moto.sqs.models import sqs_backends

    return sqs_backends[ACCOUNT][REGION].queues[queue_url.rsplit("/", 1)[-1]]


# --------------------------------------------------------------------------- fault injection


class SimulatedCrash(BaseException):
    """The Lambda process died here. A BaseException, so no ``except Exception`` sees it."""


@dataclass(frozen=True)
class Rates:
    """Per-call (or per-poll) probabilities while a schedule lasts."""

    throttle: float = 0.0
    connection: float = 0.0
    ambiguous: float = 0.0
    partial_batch: float = 0.0
    partial_batch_any: float = 0.0
    crash_aws: float = 0.0
    crash_x: float = 0.0
    #: after any other network accepted a post
    crash_network: float = 0.0
    lost_delete: float = 0.0
    concurrent_poll: float = 0.0
    concurrent_fetch: float = 0.0


@dataclass
class Frame:
    """One invocation in progress (or the harness's own calls, which get no faults)."""

    kind: str  # fetcher | poster | harness
    index: int = 0
    thread: int = 0
    dead: bool = False
    nested: bool = False
    calls: Counter[str] = field(default_factory=Counter)
    #: the text of the last post X answered (201, or 403 duplicate) in this invocation
    last_post: str | None = None


_THROTTLE_CODES = {
    "dynamodb": ("ProvisionedThroughputExceededException", "ThrottlingException"),
    "sqs": ("RequestThrottled", "ThrottlingException"),
}


class FaultInjector:
    """botocore event hooks on every client, and a hook on the HTTP calls to the networks.

    ``before-call`` answers with a throttling error or raises a connection error
    (the request never reaches AWS); ``after-call`` of a successful call kills the
    process (:class:`SimulatedCrash`) or raises a read timeout (AWS applied it, the
    caller cannot know). The hooks act only inside an invocation frame.
    """

    def __init__(self, seed: int, clock: VirtualClock) -> None:
        self.seed = seed
        self.clock = clock
        self.rates = Rates()
        self.step = 0
        self.frames: list[Frame] = []
        self.invocations = 0
        self.counts: Counter[str] = Counter()
        #: posts X answered before a fault hit their invocation: a later attempt may post them
        #: again (the gap idempotency cannot close), and X's duplicate check is what stops it
        self.unheard: set[str] = set()
        #: each destination kind's server (X and the other networks' fakes), by kind
        self.base_urls: dict[str, str] = {}
        self.stack_name = "\x00"
        #: called from a hook to start a second run/poll while one is in progress
        self.on_concurrent: dict[str, Callable[[], object]] = {}
        self._lock = threading.Lock()

    # --- frames ---------------------------------------------------------------------

    def new_step(self, step: int, rates: Rates) -> None:
        self.step, self.rates, self.invocations = step, rates, 0

    @contextlib.contextmanager
    def invocation(self, kind: str) -> Iterator[Frame]:
        nested = any(f.kind != "harness" for f in self.frames)
        frame = Frame(kind, index=self.invocations, thread=threading.get_ident(), nested=nested)
        self.invocations += 1
        self.frames.append(frame)
        try:
            yield frame
        finally:
            self.frames.remove(frame)

    @contextlib.contextmanager
    def harness(self) -> Iterator[None]:
        frame = Frame("harness")
        self.frames.append(frame)
        try:
            yield
        finally:
            self.frames.remove(frame)

    def _frame(self) -> Frame | None:
        frame = self.frames[-1] if self.frames else None
        return None if frame is None or frame.kind == "harness" else frame

    def _key(self, frame: Frame, op: str, body: object) -> str:
        if threading.get_ident() == frame.thread:
            base = f"main/{op}"
        else:  # a worker thread: its calls interleave at random, so key them by what they ask
            raw = body if isinstance(body, bytes) else str(body).encode()
            raw = raw.replace(self.stack_name.encode(), b"")  # unique per run, not part of the ask
            base = f"worker/{op}/{hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:12]}"
        with self._lock:
            frame.calls[base] += 1
            return f"{base}#{frame.calls[base]}"

    def _injected(self, frame: Frame, what: str) -> None:
        self.counts[what] += 1
        if frame.last_post is not None:
            self.unheard.add(frame.last_post)

    def _hit(self, frame: Frame, key: str, purpose: str, rate: float) -> bool:
        if rate <= 0:
            return False
        name = f"chaos/{self.seed}/{self.step}/{frame.kind}{frame.index}/{key}/{purpose}"
        return random.Random(name).random() < rate  # noqa: S311 - a reproducible schedule, not a secret

    # --- botocore hooks -----------------------------------------------------------------

    def install(self, stack: contextlib.ExitStack) -> None:
        """Hook every botocore client created from now on, and requests' HTTP transport (tweepy's
        and the other publishers')."""
        import botocore.session
        import requests.adapters

        original_create = botocore.session.Session.create_client

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original_create(session, *args, **kwargs)
            client.meta.events.register("before-call", self.before_call)
            client.meta.events.register("after-call", self.after_call)
            return client

        _patch(stack, botocore.session.Session, "create_client", create_client)

        original_send = requests.adapters.HTTPAdapter.send

        def send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            frame = self._frame()
            if frame is not None and frame.dead:
                raise SimulatedCrash("the process is dead")
            response = original_send(adapter, request, *args, **kwargs)
            if frame is None:
                return response
            kind = self._network_of(str(request.url))
            if kind == "x" and response.status_code in (201, 403):  # X answered a post
                frame.last_post = _post_text(request.body)
            if kind is not None and self._created(
                kind, request.method, str(request.url), response.status_code
            ):
                key = self._key(frame, f"{kind}/post", b"")
                rate = self.rates.crash_x if kind == "x" else self.rates.crash_network
                if self._hit(frame, key, "crash", rate):
                    self._injected(frame, f"crash after {'X' if kind == 'x' else kind} accepted a post")
                    frame.dead = True
                    raise SimulatedCrash(f"died right after {kind} accepted the post")
            return response

        _patch(stack, requests.adapters.HTTPAdapter, "send", send)

    def _network_of(self, url: str) -> str | None:
        origin = urlsplit(url).netloc
        return next((kind for kind, base in self.base_urls.items() if urlsplit(base).netloc == origin), None)

    @staticmethod
    def _created(kind: str, method: str, url: str, status: int) -> bool:
        """Whether this call created a post on ``kind``'s network (its row in NETWORK_FAULTS)."""
        row = NETWORK_FAULTS[kind]
        return row.creates(method.upper(), urlsplit(url).path) and row.accepted(status)

    def before_call(self, event_name: str, params: Any, context: Any, **_: Any) -> Any:
        frame = self._frame()
        if frame is None:
            return None
        if frame.dead:
            raise SimulatedCrash("the process is dead")
        op = event_name.removeprefix("before-call.")
        key = self._key(frame, op, params.get("body") if isinstance(params, dict) else None)
        context["chaos_key"] = key
        if (
            not frame.nested
            and threading.get_ident() == frame.thread
            and frame.kind in self.on_concurrent
            and "concurrent" not in frame.calls
        ):
            rate = self.rates.concurrent_fetch if frame.kind == "fetcher" else self.rates.concurrent_poll
            if self._hit(frame, key, "concurrent", rate):
                frame.calls["concurrent"] += 1
                self.counts[f"concurrent {frame.kind} invocation"] += 1  # not a fault of this one
                self.on_concurrent[frame.kind]()
        service = op.split(".", 1)[0]
        if self._hit(frame, key, "throttle", self.rates.throttle):
            codes = _THROTTLE_CODES.get(service, ("ThrottlingException",))
            code = codes[int(self._hit(frame, key, "code", 0.5))] if len(codes) > 1 else codes[0]
            self._injected(frame, f"throttled ({code})")
            return _error_response(code)
        if self._hit(frame, key, "connection", self.rates.connection):
            from botocore.exceptions import EndpointConnectionError

            self._injected(frame, "connection error")
            raise EndpointConnectionError(endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "aws"))
        if op == "sqs.SendMessageBatch" and self._hit(frame, key, "any", self.rates.partial_batch_any):
            rng = random.Random(f"chaos/{self.seed}/{self.step}/{frame.kind}{frame.index}/{key}/any")  # noqa: S311
            return self._partial_send(frame, params, context, rng, suffix=False)
        if op in _PARTIAL and self._hit(frame, key, "partial", self.rates.partial_batch):
            rng = random.Random(f"chaos/{self.seed}/{self.step}/{frame.kind}{frame.index}/{key}/which")  # noqa: S311
            return _PARTIAL[op](self, frame, params, context, rng)
        return None

    # --- partial batch results: what AWS does under load instead of an error ------------

    def _partial_send(
        self, frame: Frame, params: Any, context: Any, rng: random.Random, *, suffix: bool = True
    ) -> Any:
        """SendMessageBatch: the last entries fail (``Failed``), the others are sent. With
        ``suffix=False`` one entry before the last fails and the later ones are sent."""
        body = json.loads(params["body"])
        entries = body["Entries"]
        if not suffix:
            if len(entries) < 2:
                return None
            middle = rng.randrange(len(entries) - 1)
            self._injected(frame, "partial batch (SendMessageBatch, a middle entry)")
            failed = [{"Id": entries[middle]["Id"], "SenderFault": False, "Code": "InternalError"}]
            body["Entries"] = entries[:middle] + entries[middle + 1 :]
            params["body"] = json.dumps(body).encode()
            context["chaos_partial"] = ("Failed", failed)
            return None
        cut = rng.randrange(len(entries))  # entries[cut:] fail; all of them when cut == 0
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"}
            for e in entries[cut:]
        ]
        self._injected(frame, "partial batch (SendMessageBatch)")
        if cut == 0:
            from botocore.awsrequest import AWSResponse, HTTPHeaders

            parsed = {"Successful": [], "Failed": failed, "ResponseMetadata": {"HTTPStatusCode": 200}}
            return AWSResponse("", 200, HTTPHeaders(), None), parsed
        body["Entries"] = entries[:cut]
        params["body"] = json.dumps(body).encode()
        context["chaos_partial"] = ("Failed", failed)
        return None

    def _partial_write(self, frame: Frame, params: Any, context: Any, rng: random.Random) -> Any:
        """BatchWriteItem: some requests come back in ``UnprocessedItems``."""
        body = json.loads(params["body"])
        (table, requests), *_ = body["RequestItems"].items()
        keep = [r for r in requests if rng.random() < 0.5] or requests[:1]
        left = [r for r in requests if r not in keep]
        if not left:
            return None
        self._injected(frame, "partial batch (BatchWriteItem)")
        body["RequestItems"] = {table: keep}
        params["body"] = json.dumps(body).encode()
        context["chaos_partial"] = ("UnprocessedItems", {table: left})
        return None

    def _partial_get(self, frame: Frame, params: Any, context: Any, rng: random.Random) -> Any:
        """BatchGetItem: some keys come back in ``UnprocessedKeys``."""
        body = json.loads(params["body"])
        (table, request), *_ = body["RequestItems"].items()
        keys = request["Keys"]
        keep = [k for k in keys if rng.random() < 0.5] or keys[:1]
        left = [k for k in keys if k not in keep]
        if not left:
            return None
        self._injected(frame, "partial batch (BatchGetItem)")
        body["RequestItems"] = {table: {**request, "Keys": keep}}
        params["body"] = json.dumps(body).encode()
        context["chaos_partial"] = ("UnprocessedKeys", {table: {**request, "Keys": left}})
        return None

    def after_call(self, event_name: str, http_response: Any, parsed: Any, context: Any, **_: Any) -> None:
        frame = self._frame()
        if frame is None or frame.dead or http_response.status_code >= 300:
            return
        if "chaos_partial" in context:  # what was held back in before_call is reported as such
            field_name, value = context.pop("chaos_partial")
            if isinstance(value, list):
                parsed.setdefault(field_name, []).extend(value)
            else:
                parsed[field_name] = value
        key = context.get("chaos_key", event_name)
        op = event_name.removeprefix("after-call.")
        if self._hit(frame, key, "crash", self.rates.crash_aws):
            self._injected(frame, "crash after an AWS call")
            frame.dead = True
            raise SimulatedCrash(f"died right after {op}")
        if self._hit(frame, key, "ambiguous", self.rates.ambiguous):
            from botocore.exceptions import ReadTimeoutError

            self._injected(frame, "timeout after AWS applied a call")
            raise ReadTimeoutError(endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "aws"))

    def lost_delete(self) -> bool:
        frame = Frame("esm", index=self.invocations)
        return self._hit(frame, f"delete#{self.invocations}", "lost", self.rates.lost_delete)


_PARTIAL: dict[str, Callable[[FaultInjector, Frame, Any, Any, random.Random], Any]] = {
    "sqs.SendMessageBatch": FaultInjector._partial_send,
    "dynamodb.BatchWriteItem": FaultInjector._partial_write,
    "dynamodb.BatchGetItem": FaultInjector._partial_get,
}


def _post_text(body: Any) -> str | None:
    try:
        text = json.loads(body or b"null").get("text")
    except (ValueError, AttributeError):
        return None
    return text if isinstance(text, str) else None


def _error_response(code: str) -> tuple[Any, dict[str, Any]]:
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    parsed = {
        "Error": {"Code": code, "Message": "Rate exceeded (injected)"},
        "ResponseMetadata": {"HTTPStatusCode": 400, "RetryAttempts": 0},
    }
    return AWSResponse("", 400, HTTPHeaders(), None), parsed


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Window:
    """An outage of one network: it answers every create call with ``kind``'s answer."""

    kind: Fault
    start: float
    end: float


@dataclass(frozen=True)
class StepPlan:
    """What one schedule brings. A pure function of (seed, index, fault kinds)."""

    index: int
    at: float
    uploads: Mapping[str, int]
    poison: str | None
    malformed: str | None
    maintenance_first: tuple[str, ...]
    maintenance_older: Mapping[str, tuple[int, int]]  # source -> (page, schedules it lasts)
    x_window: Window | None
    rates: Rates
    duplicate_after: float | None
    #: the other networks' outages, by kind
    network_windows: Mapping[str, Window] = field(default_factory=dict)


def plan_step(
    seed: int,
    index: int,
    kinds: frozenset[Fault],
    at: float,
    interval: float,
    *,
    networks: Sequence[str] = (),
) -> StepPlan:
    """The same draws are made whatever ``kinds`` is, so switching a kind off leaves
    the rest of the schedule as it was (that is how a violation is pinned on a kind).
    ``networks`` are the destination kinds other than X: each draws its outage from its
    own generator, so adding a network changes nothing else."""
    rng = random.Random(f"chaos/{seed}/{index}/plan")  # noqa: S311 - a reproducible schedule

    def chance(kind: Fault, p: float) -> bool:
        return rng.random() < p and kind in kinds

    def rate(kind: Fault, p: float, low: float, high: float) -> float:
        on, value = rng.random() < p, rng.uniform(low, high)
        return value if on and kind in kinds else 0.0

    uploads: dict[str, int] = {}
    for spec in SOURCES:
        count = rng.choices((0, 1, 2, 3), weights=(75, 20, 4, 1))[0]
        burst = spec.rows_per_page + rng.randint(1, spec.rows_per_page + 2)
        if chance(Fault.BURST, 0.03) and spec.kind == "html":
            count = burst
        uploads[spec.name] = count
    older: dict[str, tuple[int, int]] = {}
    for spec in SOURCES:
        page, lasts = rng.choice((2, 2, 3)), rng.randint(1, 3)
        burst = spec.rows_per_page * (page - 1) + rng.randint(1, spec.rows_per_page)
        if chance(Fault.MAINTENANCE_OLDER, 0.04) and spec.kind == "html":
            older[spec.name] = (page, lasts)
            uploads[spec.name] = max(uploads[spec.name], burst)  # so that the walk needs that page
    first = tuple(spec.name for spec in SOURCES if chance(Fault.MAINTENANCE_FIRST, 0.07))
    poison_source = rng.choice([s.name for s in SOURCES])
    poison = poison_source if chance(Fault.POISON, 0.05) else None
    malformed_source = rng.choice([s.name for s in SOURCES])
    malformed = malformed_source if chance(Fault.POISON, 0.02) else None
    x_kinds = (Fault.X_401, Fault.X_429, Fault.X_5XX, Fault.X_DROP)
    x_kind = rng.choice(x_kinds)
    x_start, x_length = at + rng.uniform(0, interval), rng.uniform(5 * 60, 120 * 60)
    x_window = Window(x_kind, x_start, x_start + x_length) if chance(x_kind, 0.15) else None
    rates = Rates(
        throttle=rate(Fault.THROTTLE, 0.35, 0.02, 0.12),
        connection=rate(Fault.CONNECTION, 0.25, 0.02, 0.08),
        ambiguous=rate(Fault.AMBIGUOUS, 0.25, 0.02, 0.08),
        crash_aws=rate(Fault.CRASH_AWS, 0.3, 0.01, 0.05),
        crash_x=rate(Fault.CRASH_X, 0.3, 0.1, 0.5),
        lost_delete=rate(Fault.LOST_DELETE, 0.2, 0.1, 0.4),
        concurrent_poll=rate(Fault.CONCURRENT_POLL, 0.3, 0.05, 0.2),
        concurrent_fetch=rate(Fault.CONCURRENT_FETCH, 0.25, 0.1, 0.3),
    )
    after = rng.uniform(0, 120)
    duplicate_after = after if chance(Fault.DUPLICATE_FETCH, 0.2) else None
    # New kinds draw last, so that adding one leaves every older schedule as it was.
    partial = rate(Fault.PARTIAL_BATCH, 0.25, 0.05, 0.2)
    partial_any = rate(Fault.PARTIAL_BATCH_ANY, 0.25, 0.05, 0.2)
    crash_network = rate(Fault.CRASH_NET, 0.3, 0.1, 0.5)
    rates = replace(rates, partial_batch=partial, partial_batch_any=partial_any, crash_network=crash_network)
    windows = {
        kind: w
        for kind in networks
        if (w := network_window(seed, index, kind, kinds=kinds, at=at, interval=interval))
    }
    return StepPlan(
        index=index,
        at=at,
        uploads=uploads,
        poison=poison,
        malformed=malformed,
        maintenance_first=first,
        maintenance_older=older,
        x_window=x_window,
        rates=rates,
        duplicate_after=duplicate_after,
        network_windows=windows,
    )


NETWORK_WINDOW_KINDS = (Fault.NET_401, Fault.NET_429, Fault.NET_5XX, Fault.NET_DROP)


def network_window(
    seed: int, index: int, network: str, *, kinds: frozenset[Fault], at: float, interval: float
) -> Window | None:
    """One network's outage in one schedule (or none), as likely and as long as X's."""
    rng = random.Random(f"chaos/{seed}/{index}/network/{network}")  # noqa: S311 - a reproducible schedule
    kind = rng.choice(NETWORK_WINDOW_KINDS)
    start, length = at + rng.uniform(0, interval), rng.uniform(5 * 60, 120 * 60)
    return Window(kind, start, start + length) if rng.random() < 0.15 and kind in kinds else None


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Upload:
    source: str
    entry_id: str
    order: int
    poison: bool
    schedule: int


@dataclass
class Verdict:
    schedules: int
    duplicates: int = 0
    lost: int = 0
    out_of_order: int = 0
    stuck: int = 0
    #: posts of entries that were never uploaded after the baseline (a flood of old ones)
    unexpected: int = 0
    #: second attempts to post a text that only X's duplicate check stopped, with no fault
    #: after the first one to explain them (idempotency should have answered)
    masked: int = 0
    #: dead letters of a network other than X that neither wait for the operator ("may
    #: already be posted") nor count as lost (their upload was posted there anyway)
    dead_lettered: int = 0
    details: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    #: the same counts for each destination (and its posts and held dead letters)
    by_destination: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    @property
    def ok(self) -> bool:
        problems = (
            self.duplicates,
            self.lost,
            self.out_of_order,
            self.stuck,
            self.unexpected,
            self.masked,
            self.dead_lettered,
        )
        return not any(problems)

    def line(self) -> str:
        return (
            f"schedules={self.schedules} duplicates={self.duplicates} lost={self.lost} "
            f"out_of_order={self.out_of_order} stuck={self.stuck}"
        )

    def report(self) -> str:
        stats = ", ".join(f"{name}={value}" for name, value in sorted(self.stats.items()))
        lines = [f"  {stats}"]
        for name, tally in self.by_destination.items():
            counts = ("posts", "duplicates", "lost", "out_of_order", "stuck", "held")
            lines.append(f"  {name}: " + " ".join(f"{count}={tally[count]}" for count in counts))
        lines += [f"  VIOLATION {d}" for d in self.details]
        if self.unexpected or self.masked or self.dead_lettered:
            lines.append(
                f"  unexpected_posts={self.unexpected} masked_duplicates={self.masked} "
                f"dead_lettered={self.dead_lettered}"
            )
        return "\n".join([*lines, self.line()])


# --------------------------------------------------------------------------- the run


#: X and every network with a fake (:data:`bmsuploader_local.networks.FAKES`).
DEFAULT_DESTINATIONS: tuple[str, ...] = ("x", *FAKES)


def parse_destinations(text: str) -> tuple[str, ...]:
    """``x,mastodon,misskey``: destination kinds, one destination each (named after its kind)."""
    kinds = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [kind for kind in kinds if kind != "x" and kind not in FAKES]
    if unknown or not kinds:
        raise SystemExit(f"unknown destination kind(s) {unknown}; kinds: {', '.join(DEFAULT_DESTINATIONS)}")
    missing = [kind for kind in kinds if kind not in NETWORK_FAULTS]
    if missing:
        raise SystemExit(
            f"{missing}: add a row to chaos.NETWORK_FAULTS (how its create call and its 429 look)"
        )
    return kinds


@dataclass(frozen=True)
class ChaosConfig:
    schedules: int = 40
    seed: int = 1
    faults: frozenset[Fault] = ALL_FAULTS
    interval_seconds: float = 30 * 60.0
    #: where src/fetcher/app.py and src/poster/app.py are read from (another checkout to bisect)
    handlers: Path = SRC
    #: destination kinds, one destination of each, named after its kind (see parse_destinations)
    destinations: tuple[str, ...] = DEFAULT_DESTINATIONS

    @property
    def networks(self) -> tuple[str, ...]:
        """The destination kinds other than X."""
        return tuple(kind for kind in self.destinations if kind != "x")

    @property
    def month_turn_schedule(self) -> int:
        return max(1, int(self.schedules * 0.8))

    @property
    def start(self) -> float:
        return MONTH_TURN.timestamp() - self.month_turn_schedule * self.interval_seconds + 60.0

    @property
    def monthly_posts(self) -> int:
        """The limit in posts (0 = none): 70 % of the uploads planned before the month turn,
        so it is reached before the turn and (on average) not after it."""
        if Fault.BUDGET not in self.faults:
            return 0
        planned = sum(
            sum(plan_step(self.seed, i, self.faults, 0.0, self.interval_seconds).uploads.values())
            for i in range(self.month_turn_schedule)
        )
        return max(3, round(0.7 * planned))


class Container:
    """One Lambda container of a function: warm until a crash kills it."""

    def __init__(self, function: str, src: Path = SRC) -> None:
        self.function = function
        self.src = src
        self.module: ModuleType | None = None

    def invoke(self, event: dict[str, Any], context: FakeContext) -> Any:
        if self.module is None:
            self.module = load_handler(self.function, self.src)
        return self.module.lambda_handler(event, context)

    def kill(self) -> None:
        self.module = None


class ChaosRun:
    """One seeded run: build the world, play the schedule, settle, judge."""

    def __init__(self, config: ChaosConfig) -> None:
        parse_destinations(",".join(config.destinations))  # a kind the fault test cannot run fails here
        self.config = config
        self.clock = VirtualClock(dt.datetime.fromtimestamp(config.start, dt.UTC))
        self.injector = FaultInjector(config.seed, self.clock)
        self.uploads: list[Upload] = []
        self.pending: dict[str, set[str]] = {spec.name: set() for spec in SOURCES}
        self.x_windows: list[Window] = []
        self.network_windows: dict[str, list[Window]] = {kind: [] for kind in config.networks}
        self.networks: dict[str, LocalNetwork] = {}
        self.broken_until: dict[tuple[str, int], int] = {}
        self._posts_pruned: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.fetchers = (Container("fetcher", config.handlers), Container("fetcher", config.handlers))
        self.posters = (Container("poster", config.handlers), Container("poster", config.handlers))

    # --- the world ------------------------------------------------------------------

    @contextlib.contextmanager
    def _world(self, log: IO[str]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            # Last out: later boto3 users get a default session made from the environment they see.
            stack.callback(setattr, boto3, "DEFAULT_SESSION", None)
            server, endpoint = start_moto_server()
            stack.callback(server.stop)
            aws = {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "chaos",
                "AWS_SECRET_ACCESS_KEY": "chaos",
                "AWS_DEFAULT_REGION": REGION,
                "POWERTOOLS_SERVICE_NAME": "bmsuploader",
                "POWERTOOLS_METRICS_NAMESPACE": "BmsUploader",
            }
            stack.enter_context(environment(aws))
            boto3.setup_default_session()
            self.stack: StackResources = provision_stack(
                TEMPLATE, stack_name=f"chaos{self.config.seed}x{int(time.time() * 1000) % 10**8}"
            )
            self.injector.stack_name = self.stack.stack_name
            self.sqs: SQSClient = boto3.client("sqs")
            self.dynamodb: DynamoDBClient = boto3.client("dynamodb")
            self.queue_arn = self.sqs.get_queue_attributes(
                QueueUrl=self.stack.queue_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            self.sites = {
                spec.name: stack.enter_context(
                    UploaderSite.with_sample_uploads(
                        INITIAL_UPLOADS, rows_per_page=spec.rows_per_page, first_id=spec.first_id
                    )
                )
                for spec in SOURCES
            }
            self.fake_x = stack.enter_context(FakeX())
            self.fake_x.responder = self._x_answer
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
            sources = workdir / "sources.toml"
            sources.write_text(sources_toml(self.sites, self.config.destinations), encoding="utf-8")
            # One fake per kind, its secrets in SSM; each on the virtual clock (the publishers'
            # checks compare post times with the entry's fetch time), its outages ours.
            self.networks = stack.enter_context(start_networks(load_sources(sources).destinations))
            for kind, network in self.networks.items():
                if hasattr(network.fake, "now"):
                    network.fake.now = self.clock.now
                if hasattr(network.fake, "clock"):  # Bluesky: access tokens expire every 2 virtual
                    network.fake.clock = self.clock.time  # hours, so sessions are refreshed under faults
                network.fake.responder = functools.partial(self._network_answer, kind)
            self.injector.base_urls = {
                "x": self.fake_x.base_url,
                **{kind: network.base_url for kind, network in self.networks.items()},
            }
            stack.enter_context(
                environment(
                    {
                        **self.stack.environment(),
                        "SOURCES_FILE": str(sources),
                        "X_API_BASE_URL": self.fake_x.base_url,
                        "NETWORK_BASE_URLS": base_urls(self.networks),
                        "DRY_RUN": "false",
                        "MONTHLY_SPEND_LIMIT_USD": f"{self.config.monthly_posts * COST_PER_POST:.3f}",
                        # the same limit for code that counted posts (--handlers of an older checkout)
                        "MONTHLY_POST_BUDGET": str(self.config.monthly_posts),
                        "COST_PER_POST": str(COST_PER_POST),
                        "COST_PER_POST_WITH_URL": str(COST_PER_POST),
                        "MAX_ENQUEUE_PER_RUN": str(MAX_ENQUEUE_PER_RUN),
                    }
                )
            )
            from aws_lambda_powertools.utilities import parameters

            parameters.clear_caches()  # type: ignore[no-untyped-call]
            stack.callback(parameters.clear_caches)
            stack.enter_context(virtual_time(self.clock))
            stack.enter_context(faithful_fifo_groups())
            stack.enter_context(_shared_botocore_loader())
            stack.enter_context(contextlib.redirect_stdout(log))
            # A crashed invocation flushes no metric; Powertools then warns on stderr.
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message="No application metrics to publish")
            self.injector.install(stack)
            self.injector.on_concurrent = {
                "fetcher": lambda: self._fetch(self.fetchers[1]),
                "poster": lambda: self._poll(self.posters[1]),
            }
            self.fetcher_timeout = int(
                load_template(TEMPLATE)["Resources"]["FetcherFunction"]["Properties"].get("Timeout", 120)
            )
            yield

    # --- playing ------------------------------------------------------------------------

    def run(self, log: IO[str] | None = None) -> Verdict:
        with contextlib.ExitStack() as outer:
            sink = log or outer.enter_context(Path(os.devnull).open("w", encoding="utf-8"))
            with self._world(sink):
                self._fetch(self.fetchers[0])  # the baseline, before any fault
                self._drain_visible()
                for index in range(self.config.schedules):
                    self._schedule(index)
                self._settle()
                return self._judge()

    def _schedule(self, index: int) -> None:
        at = self.config.start + index * self.config.interval_seconds
        self._run_until(at)
        plan = plan_step(
            self.config.seed,
            index,
            self.config.faults,
            at,
            self.config.interval_seconds,
            networks=self.config.networks,
        )
        self.injector.new_step(index, plan.rates)
        self._apply(plan)
        self._scheduled_run()
        if plan.duplicate_after is not None:
            self.stats["duplicate fetcher runs"] += 1
            self._run_until(at + plan.duplicate_after)
            self._scheduled_run()
        self._drain_visible()
        if index == self.config.month_turn_schedule - 1:  # did the spend limit bite?
            self.stats["set aside before the month turn"] = len(self._backlog())

    def _apply(self, plan: StepPlan) -> None:
        for (name, page), until in list(self.broken_until.items()):
            if until <= plan.index:
                self.sites[name].broken_pages.discard(page)
                del self.broken_until[(name, page)]
        self._prune_pending()
        for spec in SOURCES:
            site = self.sites[spec.name]
            room = max(spec.window - len(self.pending[spec.name]), 0)
            count = min(plan.uploads[spec.name], room)
            for i in range(count):
                poison = plan.poison == spec.name and i == count - 1
                comment = SAMPLE_COMMENTS[len(self.uploads) % len(SAMPLE_COMMENTS)]
                site_id = site.add_upload(f"{POISON_MARKER}{comment}" if poison else comment)
                entry_id = spec.entry_id(site_id)
                self.uploads.append(Upload(spec.name, entry_id, len(self.uploads), poison, plan.index))
                if not poison:
                    self.pending[spec.name].add(entry_id)
            self.stats["poison uploads"] += int(plan.poison == spec.name and count > 0)
        for name in plan.maintenance_first:
            self.sites[name].break_next(1)
            self.stats["maintenance page 1"] += 1
        for name, (page, lasts) in plan.maintenance_older.items():
            self.sites[name].broken_pages.add(page)
            self.broken_until[(name, page)] = plan.index + lasts
            self.stats[f"maintenance page {page}"] += 1
        if plan.x_window is not None:
            self.x_windows.append(plan.x_window)
            self.stats[f"X window {plan.x_window.kind}"] += 1
        for kind, window in plan.network_windows.items():
            self.network_windows[kind].append(window)
            self.stats[f"{kind} window {window.kind}"] += 1
        if plan.malformed is not None:
            self.stats["malformed messages"] += 1
            with self.injector.harness():
                self.sqs.send_message(
                    QueueUrl=self.stack.queue_url,
                    MessageBody=json.dumps(
                        {
                            "schema_version": 99,
                            "source": plan.malformed,
                            "entry_id": f"{MALFORMED_MARKER}-{plan.index}",
                        }
                    ),
                    MessageGroupId=plan.malformed,
                    MessageDeduplicationId=f"{MALFORMED_MARKER}-{plan.index}",
                )

    def _x_answer(self, text: str | None) -> Scripted | None:
        """The fake X's answer when nothing is scripted: poison, or an outage window."""
        if text is not None and POISON_MARKER in text:
            return FakeX.bad_request("Your Tweet text is invalid (deliberate poison).")
        now = self.clock.time()
        for window in self.x_windows:
            if window.start <= now < window.end:
                if window.kind is Fault.X_401:
                    return FakeX.unauthorized()
                if window.kind is Fault.X_429:
                    return FakeX.rate_limited(int(window.end))  # virtual epoch (see virtual_time)
                if window.kind is Fault.X_5XX:
                    return FakeX.server_error(503)
                return FakeX.accept_then_drop()
        return None

    def _network_answer(self, kind: str, text: str | None) -> Any:
        """A network's answer to a create call when nothing is scripted: an outage window, or
        ``None`` (as the network would; a poison upload is an ordinary post there)."""
        now = self.clock.time()
        fake = type(self.networks[kind].fake)
        for window in self.network_windows[kind]:
            if window.start <= now < window.end:
                self.stats[f"{kind} answered {window.kind}"] += 1  # the window really hit a post
                if window.kind is Fault.NET_401:
                    return fake.unauthorized()
                if window.kind is Fault.NET_429:
                    return NETWORK_FAULTS[kind].rate_limited(now, window.end)
                if window.kind is Fault.NET_5XX:
                    return fake.server_error(503)
                return fake.accept_then_drop()
        return None

    def _prune_pending(self) -> None:
        """Forget the uploads any network has (posted implies seen: the bound stays on the safe side)."""
        for name, texts in self._posts().items():
            for text in texts[self._posts_pruned[name] :]:
                source, entry_id = posted_entry(text)
                self.pending.get(source, set()).discard(entry_id)
            self._posts_pruned[name] = len(texts)

    # --- the functions ----------------------------------------------------------------

    def _scheduled_run(self) -> None:
        """One scheduled fetcher run; Lambda's async retries after a failure."""
        if self._fetch(self.fetchers[0]):
            return
        for delay in ASYNC_RETRY_DELAYS:
            self.stats["fetcher retries"] += 1
            self._run_until(self.clock.time() + delay)
            if self._fetch(self.fetchers[0]):
                return

    def _fetch(self, container: Container) -> bool:
        event = json.loads(SCHEDULE_EVENT.read_text(encoding="utf-8"))
        context = VirtualContext(
            function_name="FetcherFunction", timeout_seconds=self.fetcher_timeout, clock=self.clock
        )
        self.stats["fetcher invocations"] += 1
        try:
            with self.injector.invocation("fetcher"):
                container.invoke(event, context)
        except SimulatedCrash:
            container.kill()
            self.stats["fetcher crashed"] += 1
            return False
        except Exception:  # noqa: BLE001 - an invocation error, as Lambda records it
            self.stats["fetcher errors"] += 1
            return False
        return True

    def _poll(self, container: Container) -> bool:
        """One event source mapping poll. Returns whether any message was received."""
        with self.injector.harness():
            event = receive_as_event(self.stack.queue_url, client=self.sqs, queue_arn=self.queue_arn)
        if not event["Records"]:
            return False
        context = VirtualContext(
            function_name="PosterFunction", timeout_seconds=self.stack.poster_timeout, clock=self.clock
        )
        self.stats["poster invocations"] += 1
        try:
            with self.injector.invocation("poster"):
                response = container.invoke(event, context)
        except SimulatedCrash:
            container.kill()
            self.stats["poster crashed"] += 1
            return True
        except Exception:  # noqa: BLE001 - the whole batch failed: nothing is deleted
            self.stats["poster errors"] += 1
            return True
        if self.injector.lost_delete():
            self.stats["lost deletes"] += 1
            return True
        with self.injector.harness():
            delete_succeeded(self.stack.queue_url, event, response, client=self.sqs)
        return True

    def _drain_visible(self) -> None:
        for _ in range(MAX_POLLS_PER_INSTANT):
            # Peeking at the emulator saves the empty receive that would end every drain.
            if not self._any_visible() or not self._poll(self.posters[0]):
                return
        self.stats["poll limit reached"] += 1

    def _any_visible(self) -> bool:
        now = self.clock.millis()
        return any(
            m.visible_at <= now and m.delayed_until <= now
            for m in list(_moto_queue(self.stack.queue_url)._messages)
        )

    def _run_until(self, t: float) -> None:
        """Let virtual time pass to ``t``, polling whenever a message becomes visible."""
        while True:
            self._drain_visible()
            wake = self._next_visible()
            if wake is None or wake > t:
                break
            self.clock.set(wake)
        self.clock.set(t)

    def _next_visible(self) -> float | None:
        now = self.clock.millis()
        times = [
            max(m.visible_at, m.delayed_until)
            for m in list(_moto_queue(self.stack.queue_url)._messages)
            if max(m.visible_at, m.delayed_until) > now
        ]
        return (min(times) + 1.0) / 1000.0 if times else None

    # --- settling and judging -------------------------------------------------------------

    def _settle(self) -> None:
        """Faults off; schedules and polls go on until nothing moves."""
        self.injector.new_step(self.config.schedules, Rates())
        self.x_windows.clear()
        for windows in self.network_windows.values():
            windows.clear()
        for site in self.sites.values():
            site.broken_pages.clear()
        self.broken_until.clear()
        at = self.clock.time()
        last: tuple[int, ...] | None = None
        quiet = stalled = 0
        for _ in range(MAX_SETTLE_SCHEDULES):
            self.stats["settle schedules"] += 1
            at = max(at + self.config.interval_seconds, self.clock.time())
            self._run_until(at)
            self._scheduled_run()
            self._drain_visible()
            queued, backlog = self._queued(), len(self._backlog())
            snapshot = (
                len(self.fake_x.posts),
                len(self.fake_x.requests),
                *self._network_activity(),
                queued,
                backlog,
            )
            moved = snapshot != last
            last = snapshot
            quiet = 0 if moved or queued or backlog else quiet + 1
            stalled = 0 if moved or queued or not backlog else stalled + 1
            if quiet >= 3:
                break
            if stalled >= 3 and self.stats["month jumps while settling"] >= MAX_MONTH_JUMPS:
                break  # the backlog does not drain: judged as stuck
            if stalled >= 3:  # the spend limit holds the backlog: next month
                month = dt.datetime.fromtimestamp(at, JST).replace(day=1, hour=0, minute=0, second=0)
                at = (month + dt.timedelta(days=32)).replace(day=1).timestamp() + 60.0
                self.stats["month jumps while settling"] += 1
                stalled = 0

    def _network_activity(self) -> tuple[int, ...]:
        """Posts and requests of each network: settling waits until none of them moves."""
        return tuple(
            count
            for network in self.networks.values()
            for count in (len(network.texts()), len(getattr(network.fake, "requests", ())))
        )

    def _queued(self) -> int:
        return len(_moto_queue(self.stack.queue_url)._messages)

    def _backlog(self) -> list[MessageKey]:
        with self.injector.harness():
            items: list[MessageKey] = []
            for spec in SOURCES:
                response = self.dynamodb.query(
                    TableName=self.stack.table_name,
                    KeyConditionExpression="pk = :pk",
                    ExpressionAttributeValues={":pk": {"S": f"BACKLOG#{spec.name}"}},
                    ConsistentRead=True,
                )
                for item in response.get("Items", []):
                    destination, _, _ = _message_of(item.get("body", {}).get("S", ""))
                    items.append((destination, spec.name, item["entry_id"]["S"]))
            return items

    def _posts(self) -> dict[str, list[str]]:
        """The texts each destination's network holds, oldest first, by destination name."""
        return {
            name: [p["text"] for p in self.fake_x.posts] if name == "x" else self.networks[name].texts()
            for name in self.config.destinations
        }

    def _judge(self) -> Verdict:
        verdict = Verdict(schedules=self.config.schedules, stats=self.stats + self.injector.counts)
        queued = [_message_of(m.body) for m in _moto_queue(self.stack.queue_url)._messages]
        backlog = self._backlog()
        verdict.stuck = len(queued) + len(backlog)
        for key in queued:
            verdict.details.append(f"stuck on the queue: {_label(key)}")
            verdict.by_destination[key[0]]["stuck"] += 1
        for key in backlog:
            verdict.details.append(f"stuck in the backlog: {_label(key)}")
            verdict.by_destination[key[0]]["stuck"] += 1
        dead = [(_message_of(m.body), *_marks(m)) for m in _moto_queue(self.stack.dlq_url)._messages]
        verdict.stats["dlq messages"] = len(dead)
        verdict.stats["dlq copies beyond the first"] = len(dead) - len({key for key, *_ in dead})
        verdict.stats["uploads"] = len(self.uploads)
        if "bluesky" in self.networks:  # sessions renewed under faults (tokens expire on the clock)
            fake = self.networks["bluesky"].fake
            for method in ("com.atproto.server.refreshSession", "com.atproto.server.createSession"):
                verdict.stats[f"bluesky {method.rsplit('.', 1)[1]}"] = len(fake.calls(method))
        waiting = set(queued) | set(backlog)
        for name, texts in self._posts().items():
            self._judge_destination(verdict, name, texts, waiting, dead)
        if "x" in self.config.destinations:
            self._judge_masked(verdict)
        return verdict

    def _judge_destination(
        self,
        verdict: Verdict,
        name: str,
        texts: list[str],
        waiting: set[MessageKey],
        dead: list[DeadMark],
    ) -> None:
        """One destination's posts against the uploads: each posted once, in upload order per
        source, or still waiting; on X a poison upload belongs in the DLQ, elsewhere it is posted."""
        tally = verdict.by_destination[name]
        posted = self._judge_posts(verdict, name, texts)
        in_dlq, held = self._judge_dead_letters(verdict, name, posted, dead)
        for upload in self.uploads:
            entry = (upload.source, upload.entry_id)
            key = (name, *entry)
            if name == "x" and upload.poison:  # X refuses it: the DLQ is where it belongs
                if entry not in in_dlq and key not in waiting:
                    tally["lost"] += 1
                    verdict.details.append(f"deliberate poison neither in the DLQ nor queued: {_label(key)}")
            elif not posted[entry] and key not in waiting and entry not in held:
                tally["lost"] += 1
                where = "in the DLQ" if entry in in_dlq else "nowhere"
                verdict.details.append(
                    f"lost ({where}): {_label(key)} (uploaded at schedule {upload.schedule})"
                )
        verdict.duplicates += tally["duplicates"]
        verdict.lost += tally["lost"]
        verdict.out_of_order += tally["out_of_order"]
        verdict.unexpected += tally["unexpected"]
        verdict.dead_lettered += tally["dead_lettered"]
        verdict.stats[f"posts {name}"] = len(texts)
        if held:
            verdict.stats[f"held for the operator {name}"] = len(held)

    def _judge_posts(self, verdict: Verdict, name: str, texts: list[str]) -> Counter[tuple[str, str]]:
        """Duplicates, order and posts of entries never uploaded, on one destination; the count
        of posts of each (source, entry id)."""
        tally = verdict.by_destination[name]
        by_key = {(u.source, u.entry_id): u for u in self.uploads}
        posted: Counter[tuple[str, str]] = Counter()
        newest: dict[str, int] = {}
        for text in texts:
            source, entry_id = posted_entry(text)
            upload = by_key.get((source, entry_id))
            if upload is None:
                tally["unexpected"] += 1
                verdict.details.append(f"posted but not uploaded after the baseline: {text!r:.60} on {name}")
                continue
            posted[source, entry_id] += 1
            if posted[source, entry_id] == 2:
                verdict.details.append(f"posted twice: {_label((name, source, entry_id))}")
            if upload.order < newest.get(source, -1):
                tally["out_of_order"] += 1
                verdict.details.append(
                    f"posted out of order: {_label((name, source, entry_id))} after a newer upload"
                )
            newest[source] = max(newest.get(source, -1), upload.order)
        tally["posts"] = len(texts)
        tally["duplicates"] = sum(count - 1 for count in posted.values())
        return posted

    def _judge_dead_letters(
        self,
        verdict: Verdict,
        name: str,
        posted: Counter[tuple[str, str]],
        dead: list[DeadMark],
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """(entries in the DLQ, those held for the operator) of one destination. On a network
        other than X only "may already be posted" belongs there; any other dead letter is an
        upload lost (counted by the caller) or, when it was posted anyway, ``dead_lettered``."""
        tally = verdict.by_destination[name]
        uploaded = {(u.source, u.entry_id) for u in self.uploads}
        in_dlq: set[tuple[str, str]] = set()
        held: set[tuple[str, str]] = set()
        for (destination, source, entry_id), reason, check_first in dead:
            if destination != name:
                continue
            in_dlq.add((source, entry_id))
            if name == "x":
                continue  # poison (judged by the caller) or a malformed message
            if check_first:
                held.add((source, entry_id))
            elif (source, entry_id) not in uploaded or posted[source, entry_id]:
                tally["dead_lettered"] += 1
                verdict.details.append(f"in the DLQ: {_label((name, source, entry_id))} ({reason})")
        tally["held"] = len(held)
        return in_dlq, held

    def _judge_masked(self, verdict: Verdict) -> None:
        """X only: a second attempt that only X's duplicate-content check stopped, with no
        fault after the first attempt to explain it (idempotency should have answered)."""
        refused = [r.text for r in self.fake_x.requests if r.status == 403]
        verdict.stats["x refused duplicates"] = len(refused)
        dropped = {r.text for r in self.fake_x.requests if r.status is None}
        for text in refused:
            if text not in self.injector.unheard and text not in dropped:
                verdict.masked += 1
                verdict.details.append(f"posted again, stopped only by X's duplicate check: {text!r:.60}")


#: (destination, source, entry id) of a message, a backlog item or a post
MessageKey = tuple[str, str, str]
#: A dead letter: whose, the poster's reason, and whether it waits for the operator because
#: the network cannot tell whether an earlier attempt posted it (the ``check_first`` mark of
#: MaybePostedError: a Discord webhook cannot list its messages; a Mastodon or Misskey account
#: that posted too much since to tell).
type DeadMark = tuple[MessageKey, str | None, bool]
_MARKUP = re.compile(r"</?plain>")
_ESCAPED = re.compile(r"\\(.)")


def posted_entry(text: str) -> tuple[str, str]:
    """(source, entry id) of a post: every chaos template starts with them. Read through the
    networks' escapes: Misskey's ``<plain>...</plain>`` around a field with MFM signs, and
    Discord's backslash before a markdown sign."""
    plain = _ESCAPED.sub(r"\1", _MARKUP.sub("", text))
    source, entry_id = ([*plain.split(None, 2), "", ""])[:2]
    return source, entry_id


def _message_of(body: str) -> MessageKey:
    """(destination, source, entry id) of a queued body; a body without a destination is X's."""
    try:
        data = json.loads(body)
        return (str(data.get("destination") or "x"), str(data.get("source")), str(data.get("entry_id")))
    except (ValueError, AttributeError):
        return ("x", "<unreadable>", repr(body[:40]))


def _label(key: MessageKey) -> str:
    destination, source, entry_id = key
    return f"{source}/{entry_id} on {destination}"


def _marks(message: Any) -> tuple[str | None, bool]:
    """The ``reason`` attribute the poster gives a dead letter (none when SQS moved it there),
    and whether it carries the ``check_first`` mark."""
    attributes = message.message_attributes
    reason = attributes.get(REASON_ATTRIBUTE)
    value = reason.get("string_value", reason.get("StringValue")) if isinstance(reason, dict) else None
    return (value if isinstance(value, str) else None), CHECK_FIRST_ATTRIBUTE in attributes


def run_chaos(config: ChaosConfig, log: IO[str] | None = None) -> Verdict:
    """One seeded run of the real handlers under faults; see the module docstring."""
    return ChaosRun(config).run(log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bmsuploader_local.chaos",
        description="Seeded fault schedule against the real handlers (moto, sample sites, fake networks).",
    )
    parser.add_argument("--schedules", type=int, default=300, help="fetcher schedules under faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="all", help=f"comma-separated kinds, or all: {', '.join(Fault)}")
    parser.add_argument("--without", default="", help="comma-separated kinds to switch off")
    parser.add_argument(
        "--destinations",
        default=",".join(DEFAULT_DESTINATIONS),
        help="comma-separated destination kinds, one destination each (default: all of them)",
    )
    parser.add_argument("--log", type=Path, help="write the handlers' JSON log lines here")
    parser.add_argument(
        "--handlers",
        type=Path,
        default=SRC,
        help="a src/ directory to load the handlers from (with PYTHONPATH=<it>/shared: an older commit)",
    )
    args = parser.parse_args(argv)
    config = replace(ChaosConfig(), schedules=args.schedules, seed=args.seed, handlers=args.handlers)
    config = replace(
        config,
        faults=parse_faults(args.faults, args.without),
        destinations=parse_destinations(args.destinations),
    )
    off, extra = sorted(ALL_FAULTS - config.faults), sorted(config.faults - ALL_FAULTS)
    kinds = "all" if not off else ",".join(sorted(config.faults & ALL_FAULTS)) or "none"
    print(
        f"chaos: seed={config.seed} schedules={config.schedules} "
        f"destinations={','.join(config.destinations)} faults={kinds}"
        + "".join(f"+{kind}" for kind in extra)
        + (f" (off: {','.join(off)})" if off else ""),
        flush=True,
    )
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(args.log.open("w", encoding="utf-8")) if args.log else None
        verdict = run_chaos(config, log)
    verdict.stats["wall seconds"] = round(time.monotonic() - started)
    print(verdict.report(), flush=True)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
