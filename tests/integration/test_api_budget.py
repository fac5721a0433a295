"""AWS API calls per fetcher run, counted exactly with botocore event hooks.

The budget is part of the design (batched reads and writes, one state read
for all sources), so a change that adds a call per entry fails here.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bmsuploader_local.lambda_runtime import FakeContext, load_handler
from bmsuploader_local.uploader_site import UploaderSite
from tests.integration.conftest import scheduled_event, write_sources

pytestmark = pytest.mark.integration


def counted_run(app: ModuleType) -> Counter[str]:
    """Run the handler once and count every AWS API call its clients make."""
    cycle = app._cycle()
    calls: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        calls[f"{model.service_model.service_name}:{model.name}"] += 1

    clients = (cycle.store.lease.client, cycle.queue.client)  # every state part shares one client
    for client in clients:
        client.meta.events.register("before-call", hook)
    try:
        app.lambda_handler(scheduled_event(), FakeContext(timeout_seconds=120))
    finally:
        for client in clients:
            client.meta.events.unregister("before-call", hook)
    return calls


@pytest.fixture
def fifty_row_site() -> Any:
    with UploaderSite.with_sample_uploads(60, rows_per_page=50) as site:
        yield site


@pytest.fixture
def fresh_app(
    stack: Any, fifty_row_site: UploaderSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    path = write_sources(tmp_path / "sources.toml", fifty_row_site, feed=False)
    monkeypatch.setenv("SOURCES_FILE", str(path))
    return load_handler("fetcher")


@pytest.fixture
def app(fresh_app: ModuleType) -> ModuleType:
    counted_run(fresh_app)  # the baseline run
    return fresh_app


def test_first_run_baseline_of_fifty_costs_six_calls(fresh_app: ModuleType) -> None:
    calls = counted_run(fresh_app)
    print(f"\nfirst run, baseline of 50: {sum(calls.values())} calls {dict(calls)}")
    assert calls == Counter(
        {
            "dynamodb:BatchGetItem": 1,  # state and control item; no unseen check: all 50 are recorded
            "dynamodb:PutItem": 2,  # the lease; the baseline's state, saved at once
            "dynamodb:BatchWriteItem": 3,  # 50 seen marks, 25 per call; the lease release
        }
    )


def touch_listing(site: UploaderSite) -> None:
    """Change the page without adding an upload (a download counter moved)."""
    newest = site.uploads[-1]
    site.uploads[-1] = dataclasses.replace(newest, downloads=newest.downloads + 1)


def test_fifty_rows_zero_new_costs_three_calls(app: ModuleType, fifty_row_site: UploaderSite) -> None:
    touch_listing(fifty_row_site)
    calls = counted_run(app)
    print(f"\n50 rows, 0 new: {sum(calls.values())} calls {dict(calls)}")
    assert calls == Counter(
        {
            "dynamodb:PutItem": 1,  # the lease
            "dynamodb:BatchGetItem": 1,  # all sources' state and the poster's control item
            # no read of the 50 ids: page 1 lists exactly the ids of the last complete run
            "dynamodb:BatchWriteItem": 1,  # every source's state and the lease release
        }
    )


def test_a_changed_id_list_asks_which_ids_are_unseen(app: ModuleType, fifty_row_site: UploaderSite) -> None:
    # An upload deleted: page 1 now reaches one entry further back (never baselined, so new).
    del fifty_row_site.uploads[-5]
    calls = counted_run(app)
    assert calls["dynamodb:BatchGetItem"] == 2  # state and control, then the ids of page 1


def test_not_modified_page_costs_three_calls(app: ModuleType) -> None:
    calls = counted_run(app)
    print(f"\n304 Not Modified: {sum(calls.values())} calls {dict(calls)}")
    assert calls == Counter(
        {
            "dynamodb:PutItem": 1,
            "dynamodb:BatchGetItem": 1,
            "dynamodb:BatchWriteItem": 1,
        }
    )


def test_fifty_rows_ten_new_costs_one_send_per_entry(app: ModuleType, fifty_row_site: UploaderSite) -> None:
    for i in range(10):
        fifty_row_site.add_upload(f"★{i} budget")
    calls = counted_run(app)
    print(f"\n50 rows, 10 new: {sum(calls.values())} calls {dict(calls)}")
    assert calls == Counter(
        {
            "dynamodb:PutItem": 1,
            "dynamodb:BatchGetItem": 2,
            # One group (one source, one destination): one message per batch, so that a
            # refused entry can never leave a later one of its group ahead of it.
            "sqs:SendMessageBatch": 10,
            "dynamodb:BatchWriteItem": 2,  # 10 seen marks; the state and the lease release
        }
    )


def test_many_sources_cost_what_changed_not_what_is_configured(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 30 sources on 3 hosts (a host = a loopback port), 10 boards each.
    with contextlib.ExitStack() as running:
        sites = [running.enter_context(UploaderSite.with_sample_uploads(5)) for _ in range(3)]
        path = tmp_path / "sources.toml"
        path.write_text(
            "".join(
                f'[[source]]\nname = "s{h}-{b}"\nkind = "html"\npreset = "classic-cgi"\n'
                f'url = "{site.listing_url}?board={b}"\n\n'
                for h, site in enumerate(sites)
                for b in range(10)
            ),
            encoding="utf-8",
        )
        monkeypatch.setenv("SOURCES_FILE", str(path))
        app = load_handler("fetcher")
        counted_run(app)  # baselines

        idle = counted_run(app)
        sites[0].add_upload("★1 one board changed")  # every board of host 0 lists it
        asked: list[str] = []

        def ids_asked(params: dict[str, Any], **_: Any) -> None:
            asked.extend(key["sk"]["S"] for keys in params["RequestItems"].values() for key in keys["Keys"])

        client = app._cycle().store.seen.client
        client.meta.events.register("before-parameter-build.dynamodb.BatchGetItem", ids_asked)
        busy = counted_run(app)
        client.meta.events.unregister("before-parameter-build.dynamodb.BatchGetItem", ids_asked)

    # 30 states and the lease release: 31 writes, 25 per BatchWriteItem.
    assert idle == Counter({"dynamodb:PutItem": 1, "dynamodb:BatchGetItem": 1, "dynamodb:BatchWriteItem": 2})
    # 10 sources changed: one shared read of their 10 new ids (the other 50 ids on their page 1
    # were on it at the last run, all seen), the 10 new entries in one send and one mark
    # (batched across sources); the states as before.
    assert sorted(k for k in asked if k.startswith("ENTRY#")) == ["ENTRY#00006"] * 10
    assert busy == Counter(
        {
            "dynamodb:PutItem": 1,
            "dynamodb:BatchGetItem": 2,
            "sqs:SendMessageBatch": 1,
            "dynamodb:BatchWriteItem": 1 + 2,
        }
    )


def test_each_post_costs_three_dynamodb_calls(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idempotency record (put, then complete) and the spend reservation: the minimum for
    "never twice" and "never over the limit". Credentials: one SSM call per cold batch."""
    from botocore.client import BaseClient

    from bmsuploader_local.fake_x import FakeX
    from bmsuploader_local.lambda_runtime import delete_succeeded, receive_as_event
    from tests.integration.test_poster import enqueue, message

    calls: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def counted(self: Any, operation: str, params: Any) -> Any:
        calls[f"{self.meta.service_model.service_name}:{operation}"] += 1
        return original(self, operation, params)

    with FakeX() as fake_x:
        monkeypatch.setenv("X_API_BASE_URL", fake_x.base_url)
        monkeypatch.setenv("DRY_RUN", "false")
        (tmp_path / "none.toml").write_text(
            '[[source]]\nname = "x"\nkind = "rss"\nurl = "http://127.0.0.1:9/"\n'
        )
        monkeypatch.setenv("SOURCES_FILE", str(tmp_path / "none.toml"))
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
        enqueue(stack, *(message(f"{i:05d}") for i in range(1, 6)))
        app = load_handler("poster")
        event = receive_as_event(stack.queue_url)
        monkeypatch.setattr(BaseClient, "_make_api_call", counted)
        response = app.lambda_handler(event, FakeContext(function_name="poster", timeout_seconds=30))
        monkeypatch.setattr(BaseClient, "_make_api_call", original)
        delete_succeeded(stack.queue_url, event, response)
        assert len(fake_x.posts) == 5

    print(f"\nposter, 5 posts: {sum(calls.values())} calls {dict(calls)}")
    assert calls == Counter({"dynamodb:PutItem": 5, "dynamodb:UpdateItem": 10, "ssm:GetParameters": 1})
