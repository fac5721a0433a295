"""Just enough of the Lambda runtime to invoke the real handlers locally.

* :func:`load_handler` imports ``src/<function>/app.py`` the way Lambda does
  (fresh module named ``app``, environment read at import), and :func:`invoke`
  calls its handler with ``AWS_LAMBDA_FUNCTION_NAME`` set, as Lambda sets it
  (Powertools' idempotency keys start with both names).
* :class:`FakeContext` has the attributes Powertools reads.
* :func:`receive_as_event` receives the messages really waiting on the queue
  and shapes them exactly as Lambda's SQS event source mapping delivers them
  (camelCase record keys, string attributes, ``md5OfBody``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import boto3

from bmsuploader_local.aws import REGION

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

SRC = Path(__file__).resolve().parents[2]  # .../src


def load_handler(function: str, src: Path = SRC) -> ModuleType:
    """A fresh copy of ``<src>/<function>/app.py``, as module ``app`` (``Handler: app.lambda_handler``)."""
    path = src / function / "app.py"
    name = "app"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class FakeContext:
    function_name: str = "local"
    timeout_seconds: int = 30
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def invoke(handler: ModuleType, event: dict[str, Any], context: FakeContext) -> Any:
    """Call a loaded handler as Lambda does: with the function's name in ``AWS_LAMBDA_FUNCTION_NAME``."""
    saved = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    os.environ["AWS_LAMBDA_FUNCTION_NAME"] = context.function_name
    try:
        return handler.lambda_handler(event, context)
    finally:
        if saved is None:
            os.environ.pop("AWS_LAMBDA_FUNCTION_NAME", None)
        else:
            os.environ["AWS_LAMBDA_FUNCTION_NAME"] = saved


def receive_as_event(
    queue_url: str,
    *,
    max_messages: int = 10,
    wait_seconds: int = 0,
    client: SQSClient | None = None,
    queue_arn: str | None = None,
) -> dict[str, Any]:
    """Receive up to 10 messages and wrap them as a Lambda SQS event.

    ``client`` and ``queue_arn`` save a client and a GetQueueAttributes per
    poll for callers that poll thousands of times (the fault test).
    """
    sqs = client or boto3.client("sqs")
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=max_messages,
        WaitTimeSeconds=wait_seconds,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    arn = (
        queue_arn
        or sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    )
    return {"Records": [_record(m, arn) for m in response.get("Messages", [])]}


def _record(message: Any, queue_arn: str) -> dict[str, Any]:
    body = message["Body"]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            key: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for key, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def delete_succeeded(
    queue_url: str, event: dict[str, Any], response: dict[str, Any], *, client: SQSClient | None = None
) -> int:
    """Do what the event source mapping does after the handler returns:
    delete every record not listed in ``batchItemFailures``."""
    failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
    entries: list[Any] = [
        {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
        for i, r in enumerate(event["Records"])
        if r["messageId"] not in failed
    ]
    if entries:
        (client or boto3.client("sqs")).delete_message_batch(QueueUrl=queue_url, Entries=entries)
    return len(entries)
