"""What the benchmark scripts share: where the code comes from, the environment, the local
stack, and the count of AWS calls.

    import bench_env   # first: it puts this checkout's src/ ahead of any installed copy

* this checkout's ``src/shared`` and ``src/local`` go first on ``sys.path``, so a worktree
  measures its own code, not the copy the virtualenv was installed from;
* dummy credentials and a region, Powertools metrics off and its logger at ERROR;
* :func:`local_stack`: a moto server on loopback with template.yaml's tables and queues;
* :func:`count_every_aws_call`: every API call of every botocore client (ours and
  Powertools'), counted and timed per ``service:Operation`` in :data:`CALLS` and
  :data:`SECONDS`; the time is the client's wall time for the call, so on loopback it
  is mostly what the emulator takes to answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src" / "shared"), str(ROOT / "src" / "local"), str(ROOT)]
os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="ap-northeast-1",
    POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="ERROR",
)

if TYPE_CHECKING:
    from bmsuploader_local.aws import StackResources

#: calls per ``service:Operation`` since the last ``clear()``
CALLS: Counter[str] = Counter()
#: seconds spent in those calls
SECONDS: Counter[str] = Counter()


def count_every_aws_call() -> None:
    """Wrap botocore's one entry point for API calls, once per process."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call
    if getattr(original, "_bench_counted", False):
        return

    def counted(self: Any, operation_name: str, api_params: Any) -> Any:
        name = f"{self.meta.service_model.service_name}:{operation_name}"
        started = time.perf_counter()
        try:
            return original(self, operation_name, api_params)
        finally:
            CALLS[name] += 1
            SECONDS[name] += time.perf_counter() - started

    counted._bench_counted = True  # type: ignore[attr-defined]
    BaseClient._make_api_call = counted  # type: ignore[method-assign]


def clear_counts() -> None:
    CALLS.clear()
    SECONDS.clear()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The handlers' JSON logs and EMF lines go to stdout; keep the report readable."""
    with Path(os.devnull).open("w") as devnull, contextlib.redirect_stdout(devnull):
        yield


@contextlib.contextmanager
def local_stack(stack_name: str) -> Iterator[StackResources]:
    """A moto server on loopback (``AWS_ENDPOINT_URL``) with the stack's tables and queues,
    and the handlers' environment variables set; stopped on exit."""
    from bmsuploader_local.aws import provision_stack, start_moto_server

    server, endpoint = start_moto_server()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        resources = provision_stack(ROOT / "template.yaml", stack_name=stack_name)
        os.environ.update(resources.environment())
        yield resources
    finally:
        server.stop()
        os.environ.pop("AWS_ENDPOINT_URL", None)


def scheduled_event() -> dict[str, Any]:
    """The fetcher's EventBridge Scheduler event."""
    event: dict[str, Any] = json.loads((ROOT / "events" / "fetcher-schedule.json").read_text())
    return event
