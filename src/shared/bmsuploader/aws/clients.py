"""AWS clients, made with botocore directly: the fetcher never imports boto3.

boto3's own import pulls in s3transfer, which costs more than botocore itself
(``python -X importtime -c "import boto3"``: s3transfer is most of it), and the
fetcher needs two plain clients. botocore reads the same configuration as
boto3 -- credentials, region, and the standard ``AWS_ENDPOINT_URL*`` variables
that point the tests at the emulator -- so nothing else changes. (The poster
imports boto3 anyway: Powertools' idempotency layer needs it.)

One botocore session per process. Tests that inject faults register handlers
on :func:`session`'s event system before the clients are made.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, cast

import botocore.session

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient


@cache
def session() -> botocore.session.Session:
    return botocore.session.get_session()


def dynamodb() -> DynamoDBClient:
    return cast("DynamoDBClient", session().create_client("dynamodb"))


def sqs() -> SQSClient:
    return cast("SQSClient", session().create_client("sqs"))
