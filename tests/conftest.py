"""Shared test fixtures: a real AWS emulator over HTTP, and the handlers.

The session starts ``moto`` server on a loopback port (or uses
``AWS_ENDPOINT_URL`` when it is already set, e.g. to point at another
emulator) and points boto3 at it through the standard ``AWS_ENDPOINT_URL``
variable -- the code under test has no endpoint plumbing of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Before any boto3 client exists: dummy credentials, a region, and no real AWS.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "ap-northeast-1")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "bmsuploader")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "BmsUploader")
os.environ.setdefault("POWERTOOLS_DEV", "false")


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """A moto server on loopback for the whole session (or an existing endpoint)."""
    existing = os.environ.get("AWS_ENDPOINT_URL")
    if existing:
        yield existing
        return
    from bmsuploader_local.aws import start_moto_server

    server, url = start_moto_server()
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        yield url
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        server.stop()


@pytest.fixture
def stack(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Fresh tables, queues and SSM parameters, derived from template.yaml.

    Each test gets its own stack name, so tests never see each other's state.
    The handler environment variables are set as Lambda would set them.
    """
    from bmsuploader_local.aws import provision_stack

    resources = provision_stack(ROOT / "template.yaml", stack_name=f"t{uuid.uuid4().hex[:10]}")
    for name, value in resources.environment().items():
        monkeypatch.setenv(name, value)
    return resources
