"""Fixtures of the per-network unit tests: SSM on a moto server over HTTP.

One moto server per test module (not the session's, :func:`tests.conftest.aws_endpoint`), so
a module's secrets are its own: a test that proves a missing secret is a clear error never
meets a parameter another module stored under the same name.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto.server import ThreadedMotoServer
from mypy_boto3_ssm import SSMClient


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def ssm(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SSMClient]:
    """An SSM client on this module's moto server, and the environment pointing boto3 at it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    parameters.clear_caches()  # Powertools caches values and its client across tests
    yield boto3.client("ssm")
    parameters.clear_caches()
