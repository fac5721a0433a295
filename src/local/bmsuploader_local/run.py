"""``bmsuploader run-local`` (``make run``): the whole pipeline on this machine.

No AWS account and no network: a moto server on loopback stands in for AWS,
the stack's tables and queues are created from ``template.yaml``, the bundled
sample uploader and a second sample site's RSS feed are served from loopback,
and posts go to a local fake X
(or only to the log with ``--dry-run``). The real handlers run: the fetcher
with ``events/fetcher-schedule.json``, the poster with the messages really
waiting on the queue, shaped as Lambda's SQS event source delivers them.

State is kept in ``.local-run/`` between runs (the stack's tables and queues,
:mod:`bmsuploader_local.saved_stack`; the sample site's uploads; the fake X's
posts), so a second run finds nothing new, and ``bmsuploader status --local``
(``make status``) reads what the last run left.
``--new-upload`` adds one upload to the sample uploader first: exactly one post.
With ``SOURCES_FILE`` set, that file's real URLs are fetched instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import boto3

from bmsuploader.config.sources import load_sources
from bmsuploader_local.aws import StackResources, provision_stack, register_stack, start_moto_server
from bmsuploader_local.fake_x import FakeX
from bmsuploader_local.lambda_runtime import (
    SRC,
    FakeContext,
    delete_succeeded,
    invoke,
    load_handler,
    receive_as_event,
)
from bmsuploader_local.networks import base_urls, start_networks
from bmsuploader_local.saved_stack import TEMPLATE, environment, load_json, local_aws, local_stack
from bmsuploader_local.uploader_site import SAMPLE_COMMENTS, UploaderSite

ROOT = SRC.parent
SCHEDULE_EVENT = ROOT / "events" / "fetcher-schedule.json"
# In the layer (/opt/python/sources.local.toml) so `sam local invoke` with events/env.json reads it too.
SAMPLE_SOURCES = SRC / "shared" / "sources.local.toml"
#: Where sources.local.toml expects the sample uploader and the sample feed site.
SAMPLE_SITE_PLACEHOLDER = "http://host.docker.internal:8080"
SAMPLE_FEED_PLACEHOLDER = "http://host.docker.internal:8082"
#: The feed site numbers its uploads from here, so the two samples never share ids.
FEED_FIRST_ID = 501
SAMPLE_UPLOADS = 30
MAX_POLLS = 50


def _sample_site(state_dir: Path, new_upload: bool) -> UploaderSite:
    saved = load_json(state_dir / "site.json", {"extra_uploads": 0})
    extra = int(saved["extra_uploads"]) + (1 if new_upload else 0)
    site = UploaderSite.with_sample_uploads(SAMPLE_UPLOADS, rows_per_page=20)
    for i in range(extra):
        site.add_upload(f"【追加{i + 1}】{SAMPLE_COMMENTS[i % len(SAMPLE_COMMENTS)]}")
    (state_dir / "site.json").write_text(json.dumps({"extra_uploads": extra}), encoding="utf-8")
    return site


def run_local(
    *, new_upload: bool = False, dry_run: bool = False, state_dir: Path = Path(".local-run")
) -> int:
    out = sys.stdout
    with ExitStack() as stack:
        resources = stack.enter_context(local_stack(state_dir, save=True))
        endpoint = os.environ["AWS_ENDPOINT_URL"]

        user_sources = os.environ.get("SOURCES_FILE")
        if user_sources:
            sources_file = Path(user_sources)
            site_label = f"sources from {sources_file} (real URLs)"
        else:
            site = stack.enter_context(_sample_site(state_dir, new_upload))
            feed_site = stack.enter_context(
                UploaderSite.with_sample_uploads(SAMPLE_UPLOADS, first_id=FEED_FIRST_ID)
            )
            sources_file = state_dir / "sources.toml"
            sources_file.write_text(
                SAMPLE_SOURCES.read_text(encoding="utf-8")
                .replace(SAMPLE_SITE_PLACEHOLDER, site.base_url)
                .replace(SAMPLE_FEED_PLACEHOLDER, feed_site.base_url),
                encoding="utf-8",
            )
            site_label = (
                f"sample uploader {site.base_url} ({len(site.uploads)} uploads, also as a table: "
                f"{site.table_url}), "
                f"sample feed {feed_site.base_url}"
            )

        x_label = "DRY_RUN (posts go to the log only)"
        env = {**resources.environment(), "SOURCES_FILE": str(sources_file), "DRY_RUN": "true"}
        destinations = load_sources(sources_file).destinations
        fake_x: FakeX | None = None
        network_labels = [f"{d.name} ({d.kind}): DRY_RUN" for d in destinations if d.kind != "x"]
        if not dry_run:
            fake_x = stack.enter_context(FakeX())
            fake_x.posts.extend(load_json(state_dir / "x.json", []))
            networks = stack.enter_context(start_networks(destinations))
            env.update(
                {
                    "DRY_RUN": "false",
                    "X_API_BASE_URL": fake_x.base_url,
                    "NETWORK_BASE_URLS": base_urls(networks),
                }
            )
            x_label = f"fake X {fake_x.base_url}"
            network_labels = [
                f"{d.name} ({d.kind}): fake {networks[d.kind].base_url}"
                for d in destinations
                if d.kind != "x"
            ]
        stack.enter_context(environment(env))

        print(f"bmsuploader local run\n  AWS: moto server {endpoint} (stack from {TEMPLATE.name})", file=out)
        print(f"  site: {site_label}\n  X: {x_label}", file=out)
        for label in network_labels:
            print(f"  {label}", file=out)
        print(file=out)

        logs = state_dir / "lambda.log"
        with logs.open("w", encoding="utf-8") as log, _redirect_stdout(log):
            fetch = invoke(
                load_handler("fetcher"),
                json.loads(SCHEDULE_EVENT.read_text(encoding="utf-8")),
                FakeContext(function_name=resources.fetcher_function_name, timeout_seconds=120),
            )
            posts, waiting = _drain_queue(resources)

        _report(out, fetch=fetch, posts=posts, waiting=waiting, resources=resources, logs=logs)
        if fake_x is not None:
            (state_dir / "x.json").write_text(json.dumps(fake_x.posts, ensure_ascii=False), encoding="utf-8")
    return 0


@contextmanager
def _redirect_stdout(stream: Any) -> Iterator[None]:
    saved = sys.stdout
    sys.stdout = stream
    try:
        yield
    finally:
        sys.stdout = saved


def _drain_queue(resources: StackResources) -> tuple[list[dict[str, Any]], int]:
    """Poll like the event source mapping until the queue has nothing visible."""
    poster = load_handler("poster")
    request_ids: list[str] = []
    for _ in range(MAX_POLLS):
        event = receive_as_event(resources.queue_url)
        if not event["Records"]:
            break
        context = FakeContext(function_name=resources.poster_function_name, timeout_seconds=30)
        request_ids.append(context.aws_request_id)
        response = invoke(poster, event, context)
        delete_succeeded(resources.queue_url, event, response)
        if response.get("batchItemFailures"):
            break  # parked: the rest waits for its visibility timeout, as in Lambda
    return _posts_of(resources, set(request_ids)), _waiting(resources.queue_url)


def _posts_of(resources: Any, request_ids: set[str]) -> list[dict[str, Any]]:
    """This run's posts, read back from the idempotency records the poster wrote."""
    dynamodb = boto3.client("dynamodb")
    posts = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=resources.idempotency_table):
        for item in page["Items"]:
            data = json.loads(item.get("data", {}).get("S", "null") or "null")
            if isinstance(data, dict) and data.get("invocation_id") in request_ids:
                posts.append(data)
    return sorted(posts, key=lambda p: p["posted_at"])


def _waiting(queue_url: str) -> int:
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _report(
    out: Any, *, fetch: dict[str, Any], posts: list[dict[str, Any]], waiting: int, resources: Any, logs: Path
) -> None:
    print(f"fetcher: {fetch['outcome']}", file=out)
    if fetch.get("requeued_from_backlog") or fetch.get("backlog_pending"):
        print(
            f"  backlog: {fetch['requeued_from_backlog']} re-queued, "
            f"{'entries still waiting' if fetch['backlog_pending'] else 'empty'}",
            file=out,
        )
    print(f"  {'source':<20} {'found':>5} {'new':>5} {'enqueued':>8} {'deferred':>8}  outcome", file=out)
    for s in fetch["sources"]:
        found = "-" if s["outcome"] == "not_modified" else s["found"]  # 304: the page was not read
        print(
            f"  {s['source']:<20} {found:>5} {s['new']:>5} {s['enqueued']:>8} {s['deferred']:>8}  "
            f"{s['outcome']}{' - ' + s['error'] if s.get('error') else ''}",
            file=out,
        )
    print(f"\nposter: {len(posts)} post(s)", file=out)
    # By destination (X first), each in the order posted.
    for post in sorted(posts, key=lambda p: (p.get("destination", "x") != "x", p.get("destination", "x"))):
        label = post["outcome"].replace("_", "-")  # [posted], [dry-run], [duplicate]
        destination = post.get("destination", "x")
        print(
            f"  [{label}] {destination:<10} length {post['weighted_length']:>3}  id {post['tweet_id']}",
            file=out,
        )
        print(f"      {post['text']}", file=out)
    dlq = _waiting(resources.dlq_url)
    print(f"\nqueue: {waiting} waiting, dead-letter queue: {dlq}", file=out)
    print(f"Lambda logs (JSON, as CloudWatch would show them): {logs}", file=out)


def serve_local(
    *,
    host: str = "127.0.0.1",
    aws_port: int = 5000,
    site_port: int = 8080,
    x_port: int = 8081,
    feed_port: int = 8082,
) -> int:
    """Keep the local stand-ins running for ``sam local invoke`` (events/env.json).

    Starts moto on ``aws_port`` with the stack ``bmsuploader`` made from
    template.yaml (the names in events/env.json), the sample uploader on
    ``site_port``, the sample feed site on ``feed_port`` and the fake X on
    ``x_port`` (the addresses sources.local.toml and events/env.json use), on
    ``host`` (loopback unless told otherwise: Docker containers reach the host through its bridge
    address, so ``sam local`` on Linux needs ``--host 0.0.0.0``), until Ctrl-C.
    """
    moto, endpoint = start_moto_server(host, aws_port)
    with ExitStack() as stack:
        stack.callback(moto.stop)
        stack.enter_context(environment(local_aws(endpoint)))
        resources = provision_stack(TEMPLATE, stack_name="bmsuploader")
        register_stack(resources)  # so `bmsuploader status --stack bmsuploader` finds it too
        site = stack.enter_context(
            UploaderSite.with_sample_uploads(SAMPLE_UPLOADS, host=host, port=site_port)
        )
        feed_site = stack.enter_context(
            UploaderSite.with_sample_uploads(
                SAMPLE_UPLOADS, first_id=FEED_FIRST_ID, host=host, port=feed_port
            )
        )
        fake_x = stack.enter_context(FakeX(host=host, port=x_port))
        print(f"moto server  {endpoint}  (stack 'bmsuploader' from {TEMPLATE.name})")
        for key, value in resources.environment().items():
            print(f"  {key}={value}")
        print(
            f"sample site  {site.base_url}\nsample feed  {feed_site.base_url}\nfake X       {fake_x.base_url}"
        )
        print("sam local invoke ... --env-vars events/env.json   (Ctrl-C stops everything)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping")
    return 0
