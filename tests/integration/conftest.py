"""Fixtures for the integration tests: the fake uploader site and handler runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bmsuploader.contract.message import EntryMessage, parse_message
from bmsuploader_local.lambda_runtime import FakeContext, load_handler
from bmsuploader_local.uploader_site import UploaderSite
from tests.integration import iam

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


@pytest.fixture
def site() -> Iterator[UploaderSite]:
    with UploaderSite.with_sample_uploads(30, rows_per_page=20) as running:
        yield running


def write_sources(path: Path, site: UploaderSite, *, feed: bool = True, **uploader: Any) -> Path:
    """A sources file pointing at the fake site: its CGI listing and (optionally) its feed."""
    options = {"first_run": '{ policy = "baseline" }', "max_pages": "3", **uploader}
    lines = [
        "[[source]]",
        'name = "uploader"',
        'kind = "html"',
        'preset = "classic-cgi"',
        f'url = "{site.listing_url}"',
        f'page_url_template = "{site.listing_url}?page={{page}}"',
        *(f"{key} = {value}" for key, value in options.items()),
    ]
    if feed:
        lines += ["", "[[source]]", 'name = "feed"', 'kind = "rss"', f'url = "{site.feed_url}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def sources_file(tmp_path: Path, site: UploaderSite, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_sources(tmp_path / "sources.toml", site)
    monkeypatch.setenv("SOURCES_FILE", str(path))
    return path


def scheduled_event() -> dict[str, Any]:
    return json.loads((EVENTS / "fetcher-schedule.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture
def run_fetcher(stack: Any) -> Callable[..., dict[str, Any]]:
    """Invoke a freshly imported fetcher handler, as one Lambda invocation."""

    def run(event: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        app = load_handler("fetcher")
        result: dict[str, Any] = app.lambda_handler(
            event or scheduled_event(), FakeContext(timeout_seconds=120)
        )
        return result

    return run


def drain(queue_url: str) -> list[tuple[dict[str, Any], EntryMessage]]:
    """Receive and delete everything on the queue, in delivery order: (attributes, message)."""
    sqs = boto3.client("sqs")
    out: list[tuple[dict[str, Any], EntryMessage]] = []
    while True:
        response = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        )
        messages = response.get("Messages", [])
        if not messages:
            return out
        for message in messages:
            out.append((message["Attributes"], parse_message(message["Body"])))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def by_source(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["source"]: s for s in results["sources"]}


# --- IAM: every AWS call a handler makes is one its role in template.yaml allows ------------


@pytest.fixture(autouse=True)
def iam_allows_every_call() -> Iterator[None]:
    """Fail a test in which a function's code made an AWS call its deployed role would deny.

    moto allows everything; this applies the template's roles (see tests/integration/iam.py).
    """
    audit = iam.install()
    start = len(audit.calls)
    yield
    denied = sorted(
        {f"{c.function}: {c.action} on {c.arn} ({c.operation})" for c, g in audit.calls[start:] if g is None}
    )
    assert not denied, "template.yaml's roles would deny these calls (AccessDenied in AWS):\n" + "\n".join(
        denied
    )


#: Statements that serve the Lambda service (log delivery, the SQS poller), not the code.
SERVICE_STATEMENTS = {"Logs", "EventSourceMapping"}
_DESELECTED: list[str] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    _DESELECTED.extend(item.nodeid for item in items)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The grant-coverage test judges every handler call of the session: it runs last."""
    last = [item for item in items if item.name == "test_every_statement_for_the_code_is_used"]
    items[:] = [item for item in items if item not in last] + last
