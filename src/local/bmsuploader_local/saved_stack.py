"""The local stack kept between runs in a state directory (``.local-run/``).

``make run`` (:mod:`bmsuploader_local.run`) starts it, runs the handlers on it
and saves it; the operator commands with ``--local`` (``make status``) start
it again from what was saved, to read it (or, for ``redrive --yes``, change
and save it). Saved: both tables (but a run's lease) and every message on
both queues, parked ones included, as JSON in ``aws.json``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from itertools import batched
from pathlib import Path
from typing import Any

import boto3

from bmsuploader_local.aws import (
    StackResources,
    dump_queue,
    provision_stack,
    restore_queue,
    start_moto_server,
)
from bmsuploader_local.lambda_runtime import SRC

TEMPLATE = SRC.parent / "template.yaml"
STACK_NAME = "bmsuploader-local"


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def local_aws(endpoint: str) -> dict[str, str]:
    """boto3 pointed at the local emulator through the standard variables, with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "ap-northeast-1",
        "POWERTOOLS_SERVICE_NAME": "bmsuploader",
        "POWERTOOLS_METRICS_NAMESPACE": "BmsUploader",
    }


def load_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def _restore(resources: StackResources, saved: dict[str, Any]) -> None:
    dynamodb = boto3.client("dynamodb")
    tables = {"state": resources.table_name, "idempotency": resources.idempotency_table}
    queues = {"queue": resources.queue_url, "dead_letter_queue": resources.dlq_url}
    for key, name in tables.items():
        for chunk in batched(saved.get(key, []), 25, strict=False):  # BatchWriteItem's limit
            dynamodb.batch_write_item(RequestItems={name: [{"PutRequest": {"Item": i}} for i in chunk]})
    for key, url in queues.items():
        restore_queue(url, saved.get("queues", {}).get(key, []))


def _dump(resources: StackResources) -> dict[str, Any]:
    """The tables (but a run's lease) and every message on both queues, parked ones included."""
    dynamodb = boto3.client("dynamodb")
    out: dict[str, Any] = {}
    for key, name in (("state", resources.table_name), ("idempotency", resources.idempotency_table)):
        items: list[dict[str, Any]] = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=name):
            items.extend(page["Items"])
        out[key] = [i for i in items if i.get("pk", {}).get("S") != "LEASE"]
    out["queues"] = {
        "queue": dump_queue(resources.queue_url),
        "dead_letter_queue": dump_queue(resources.dlq_url),
    }
    return out


@contextmanager
def local_stack(state_dir: Path, *, save: bool = False, handlers: bool = True) -> Iterator[StackResources]:
    """The local stack as the last ``make run`` left it in ``state_dir``: a moto server on
    loopback, the stack made from template.yaml, its tables and queues restored, boto3
    pointed at it. With ``save``, what it holds at the end is written back (not after an error).
    Without ``handlers`` (the operator commands), the poster's X parameters are not created.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        moto, endpoint = start_moto_server()
        stack.callback(moto.stop)
        # moto keeps its state per process, not per server: start from a clean emulator
        # (matters when run-local is called from a process that used moto before, e.g. tests).
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))  # noqa: S310
        stack.enter_context(environment(local_aws(endpoint)))
        resources = provision_stack(TEMPLATE, stack_name=STACK_NAME, x_credentials=handlers)
        _restore(resources, load_json(state_dir / "aws.json", {}))
        yield resources
        if save:
            (state_dir / "aws.json").write_text(json.dumps(_dump(resources)), encoding="utf-8")
