"""Local AWS: a moto server on loopback, and the stack's resources made from template.yaml.

Used by the tests and by ``bmsuploader run-local``. Names and attributes
(keys, TTL, FIFO, redrive, visibility) are read from ``template.yaml`` --
never repeated here -- so the local stack cannot drift from the deployed one.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from bmsuploader_local.template import load_template

REGION = "ap-northeast-1"
ACCOUNT = "123456789012"
#: provision_stack polls a new table until it is ACTIVE: seconds between polls, and how many
TABLE_POLL_SECONDS, TABLE_POLLS = 1, 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _faithful_fifo_sequence_numbers() -> None:
    """Make moto's FIFO SequenceNumbers increase, as SQS documents they do.

    SQS: "SequenceNumber continues to increase for a particular
    MessageGroupId". moto draws 20 random digits instead. The poster's
    backlog keeps upload order by this number, so the emulator must honour
    the guarantee the real service gives.
    """
    import itertools

    from moto.sqs import models

    if getattr(models.Queue.add_message, "_bmsuploader", False):
        return
    counter = itertools.count(10**19)
    original = models.Queue.add_message

    def add_message(self: Any, message: Any) -> None:
        if message.sequence_number is not None:
            message.sequence_number = str(next(counter))
        original(self, message)

    add_message._bmsuploader = True  # type: ignore[attr-defined]
    models.Queue.add_message = add_message  # type: ignore[method-assign]


def start_moto_server(host: str = "127.0.0.1", port: int | None = None) -> tuple[Any, str]:
    """Start moto's server in this process (on a free loopback port unless told otherwise).

    Returns the server and the endpoint to reach it at, always through loopback.
    """
    import logging

    from moto.server import ThreadedMotoServer

    _faithful_fifo_sequence_numbers()
    # werkzeug logs every request at INFO: thousands of lines per test run.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = port or free_port()
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class StackResources:
    stack_name: str
    table_name: str
    idempotency_table: str
    queue_url: str
    dlq_url: str
    x_parameter_path: str
    poster_timeout: int
    #: the template's Outputs, resolved against these resources (what DescribeStacks would list)
    outputs: dict[str, str] = field(default_factory=dict)
    #: the template's Parameters at their defaults (what a plain `sam deploy` deploys with)
    parameters: dict[str, str] = field(default_factory=dict)
    destinations_parameter_path: str = "/bmsuploader/destinations"

    @property
    def poster_function_name(self) -> str:
        """What Lambda would set as the poster's AWS_LAMBDA_FUNCTION_NAME (the idempotency key's prefix)."""
        return self.outputs["PosterFunctionName"]

    @property
    def fetcher_function_name(self) -> str:
        return self.outputs["FetcherFunctionName"]

    def environment(self) -> dict[str, str]:
        """The handlers' environment, as template.yaml would set it."""
        return {
            "TABLE_NAME": self.table_name,
            "IDEMPOTENCY_TABLE": self.idempotency_table,
            "QUEUE_URL": self.queue_url,
            "DLQ_URL": self.dlq_url,
            "X_PARAMETER_PATH": self.x_parameter_path,
            "DESTINATIONS_PARAMETER_PATH": self.destinations_parameter_path,
        }


class _Resolver:
    """Just enough of CloudFormation's intrinsic functions for tables and queues."""

    def __init__(self, template: dict[str, Any], stack_name: str) -> None:
        self.template = template
        self.stack_name = stack_name
        self.physical: dict[str, dict[str, str]] = {}  # logical id -> attribute -> value

    def parameter(self, name: str) -> str:
        if name == "AWS::StackName":
            return self.stack_name
        if name == "AWS::Region":
            return REGION
        if name == "AWS::AccountId":
            return ACCOUNT
        param = self.template.get("Parameters", {}).get(name)
        if param is not None:
            return str(param.get("Default", ""))
        if name not in self.physical:
            self.physical[name] = {"Ref": self._stand_in_name(name)}
        return self.physical[name]["Ref"]

    def _stand_in_name(self, logical: str) -> str:
        """The name of a resource the local stack does not create (functions, log groups, ...):
        its own name property if it has one, else ``<stack>-<logical id>`` as CloudFormation
        would start it."""
        resource = self.template["Resources"][logical]
        props = resource.get("Properties", {})
        for key in ("LogGroupName", "DashboardName", "Name", "FunctionName"):
            if key in props:
                return str(self.resolve(props[key]))
        return f"{self.stack_name}-{logical}"

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"Ref"}:
                return self.parameter(value["Ref"])
            if set(value) == {"Fn::Sub"}:
                text = value["Fn::Sub"]
                if isinstance(text, list):
                    text, variables = text
                    for key, val in variables.items():
                        text = text.replace("${" + key + "}", str(self.resolve(val)))
                return re.sub(r"\$\{([^}]+)\}", lambda m: self._sub_var(m.group(1)), text)
            if set(value) == {"Fn::GetAtt"}:
                target = value["Fn::GetAtt"]
                logical, attr = target if isinstance(target, list) else target.split(".", 1)
                return self.physical[logical][attr]
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def _sub_var(self, name: str) -> str:
        if "." in name:
            logical, attr = name.split(".", 1)
            return self.physical[logical][attr]
        return self.parameter(name)


def _resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template.get("Resources", {}).items() if v.get("Type") == kind}


def provision_stack(template_path: Path, *, stack_name: str, x_credentials: bool = True) -> StackResources:
    """Create the template's tables and queues (and, unless told not to, the X parameters the
    poster reads) on the current endpoint."""
    template = load_template(template_path)
    resolver = _Resolver(template, stack_name)
    dynamodb = boto3.client("dynamodb", region_name=os.environ.get("AWS_DEFAULT_REGION", REGION))
    sqs = boto3.client("sqs", region_name=os.environ.get("AWS_DEFAULT_REGION", REGION))
    ssm = boto3.client("ssm", region_name=os.environ.get("AWS_DEFAULT_REGION", REGION))

    tables = {
        logical: resolver.resolve(resource["Properties"])
        for logical, resource in _resources_of(template, "AWS::DynamoDB::Table").items()
    }
    for logical, props in tables.items():
        name = props.get("TableName") or f"{stack_name}-{logical}"
        dynamodb.create_table(
            TableName=name,
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
        )
        resolver.physical[logical] = {"Ref": name, "Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"}
    # A table is CREATING for a while after CreateTable; real DynamoDB (and stricter
    # emulators than moto) refuse UpdateTimeToLive and every item call until it is ACTIVE.
    waiter = dynamodb.get_waiter("table_exists")
    for logical, props in tables.items():
        name = resolver.physical[logical]["Ref"]
        waiter.wait(TableName=name, WaiterConfig={"Delay": TABLE_POLL_SECONDS, "MaxAttempts": TABLE_POLLS})
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )

    queues = _resources_of(template, "AWS::SQS::Queue")
    # Dead-letter queues first: a queue's RedrivePolicy names its DLQ's ARN.
    ordered = sorted(queues, key=lambda logical: "RedrivePolicy" in queues[logical].get("Properties", {}))
    for logical in ordered:
        props = resolver.resolve(queues[logical].get("Properties", {}))
        name = props.pop("QueueName", None) or f"{stack_name}-{logical}"
        attributes = {key: _attr(value) for key, value in props.items() if key not in {"Tags"}}
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        resolver.physical[logical] = {"Ref": url, "Arn": arn, "QueueName": name, "QueueUrl": url}

    functions = _resources_of(template, "AWS::Serverless::Function")
    poster = functions.get("PosterFunction", {}).get("Properties", {})
    timeout = int(poster.get("Timeout") or template.get("Globals", {}).get("Function", {}).get("Timeout", 3))

    x_path = resolver.parameter("XParameterPath").rstrip("/")
    if x_credentials:
        from bmsuploader.post.publishing import CREDENTIAL_NAMES  # the poster edge (imports tweepy)

        for name in CREDENTIAL_NAMES:
            ssm.put_parameter(
                Name=f"{x_path}/{name}", Value=f"local-{name}", Type="SecureString", Overwrite=True
            )

    return StackResources(
        stack_name=stack_name,
        table_name=resolver.physical["StateTable"]["Ref"],
        idempotency_table=resolver.physical["IdempotencyTable"]["Ref"],
        queue_url=resolver.physical["Queue"]["Ref"],
        dlq_url=resolver.physical["DeadLetterQueue"]["Ref"],
        x_parameter_path=x_path,
        destinations_parameter_path=resolver.parameter("DestinationsParameterPath").rstrip("/"),
        poster_timeout=timeout,
        outputs={
            key: str(resolver.resolve(out["Value"])) for key, out in template.get("Outputs", {}).items()
        },
        parameters={name: resolver.parameter(name) for name in template.get("Parameters", {})},
    )


def register_stack(resources: StackResources) -> None:
    """Make the stack known to the emulator's CloudFormation, with the template's outputs and
    parameters, so ``bmsuploader status --stack NAME`` finds it as it finds a deployed one.

    Only the outputs and parameters are real; the resources were made by :func:`provision_stack`.
    (The first call loads moto's CloudFormation, a few seconds.)
    """
    document = {
        "Parameters": {
            name: {"Type": "String", "Default": value} for name, value in resources.parameters.items()
        },
        # CloudFormation wants one resource; a log group is harmless and moto supports it.
        "Resources": {
            "Marker": {
                "Type": "AWS::Logs::LogGroup",
                "Properties": {"LogGroupName": f"/bmsuploader-local/{resources.stack_name}"},
            }
        },
        "Outputs": {key: {"Value": value} for key, value in resources.outputs.items()},
    }
    cloudformation = boto3.client("cloudformation", region_name=os.environ.get("AWS_DEFAULT_REGION", REGION))
    cloudformation.create_stack(StackName=resources.stack_name, TemplateBody=json.dumps(document))


def dump_queue(queue_url: str) -> list[dict[str, Any]]:
    """Every message on a queue of the in-process emulator, in order, visible or not.

    (SQS's API cannot list messages that are in flight or parked, so this reads moto's model.)
    """
    from moto.sqs.models import sqs_backends

    queue = sqs_backends[ACCOUNT][REGION].get_queue(queue_url.rsplit("/", 1)[-1])
    return [
        {
            "body": m.body,
            "group_id": m.group_id,
            "deduplication_id": m.deduplication_id,
            "attributes": {
                key: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
                for key, value in m.message_attributes.items()
                if value.get("StringValue") is not None
            },
        }
        for m in queue._messages
    ]


def restore_queue(queue_url: str, messages: list[dict[str, Any]]) -> None:
    sqs = boto3.client("sqs", region_name=os.environ.get("AWS_DEFAULT_REGION", REGION))
    for message in messages:
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=message["body"],
            MessageGroupId=message["group_id"],
            MessageDeduplicationId=message["deduplication_id"],
            MessageAttributes=message["attributes"],
        )


def _attr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
