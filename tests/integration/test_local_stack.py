"""The local stack is provisioned the way real AWS needs it, not only the way moto allows."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest

from bmsuploader_local.aws import provision_stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_tables_are_used_only_once_active(aws_endpoint: str) -> None:
    """moto creates a table ACTIVE at once; real DynamoDB keeps it CREATING for a while and
    refuses UpdateTimeToLive and item calls until then. Play a table that is CREATING on the
    first DescribeTable, and check nothing touches a table before it was seen ACTIVE."""
    calls: list[tuple[str, str]] = []  # (operation, table)
    described: Counter[str] = Counter()
    active: set[str] = set()

    def before(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in ("CreateTable", "UpdateTimeToLive", "PutItem", "GetItem", "UpdateItem"):
            calls.append((model.name, params["TableName"]))

    def after(parsed: dict[str, Any], **_: Any) -> None:
        table = parsed["Table"]
        described[table["TableName"]] += 1
        if described[table["TableName"]] == 1:
            table["TableStatus"] = "CREATING"
        else:
            active.add(table["TableName"])
        calls.append(("DescribeTable:" + table["TableStatus"], table["TableName"]))

    session = boto3.DEFAULT_SESSION or boto3.setup_default_session() or boto3.DEFAULT_SESSION
    assert session is not None
    session.events.register("before-parameter-build.dynamodb", before, unique_id="provision-order")
    session.events.register("after-call.dynamodb.DescribeTable", after, unique_id="provision-status")
    try:
        resources = provision_stack(ROOT / "template.yaml", stack_name=f"t{uuid.uuid4().hex[:10]}")
    finally:
        session.events.unregister("before-parameter-build.dynamodb", unique_id="provision-order")
        session.events.unregister("after-call.dynamodb.DescribeTable", unique_id="provision-status")

    tables = {resources.table_name, resources.idempotency_table}
    assert active == tables, calls
    for index, (operation, table) in enumerate(calls):
        if operation != "CreateTable" and not operation.startswith("DescribeTable"):
            seen_active = ("DescribeTable:ACTIVE", table) in calls[:index]
            assert seen_active, f"{operation} on {table} before it was ACTIVE: {calls}"
    assert {table for operation, table in calls if operation == "UpdateTimeToLive"} == tables
