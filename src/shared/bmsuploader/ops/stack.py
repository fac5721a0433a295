"""Where a deployed stack's parts are: its CloudFormation outputs, found by stack name.

The stack name (and region and profile) come from ``samconfig.toml``, as for
``sam deploy``, unless ``--stack`` / ``--region`` / ``--profile`` say otherwise.
One DescribeStacks gives the outputs (queue URLs, table names, the poster's
function name, log groups) and the parameters (spend limit, prices, silence
threshold). They become the functions' own settings models
(:class:`~bmsuploader.contract.settings.FetcherSettings` and
:class:`~bmsuploader.contract.settings.PosterSettings`) through the variables
template.yaml sets from them, so the commands validate and read them exactly
as the functions do.

AWS failures become one line (:func:`aws_problem`): no credentials, expired
credentials, wrong region, missing stack, missing permission.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from bmsuploader.contract.errors import BmsUploaderError
from bmsuploader.contract.settings import FetcherSettings, PosterSettings

#: Stack output -> the function variable template.yaml sets from the same resource.
OUTPUT_VARIABLES = {
    "StateTableName": "TABLE_NAME",
    "QueueUrl": "QUEUE_URL",
    "DeadLetterQueueUrl": "DLQ_URL",
    "IdempotencyTableName": "IDEMPOTENCY_TABLE",
}
#: Stack parameter -> the function variable template.yaml sets from it.
PARAMETER_VARIABLES = {
    "MonthlySpendLimitUSD": "MONTHLY_SPEND_LIMIT_USD",
    "CostPerPost": "COST_PER_POST",
    "CostPerPostWithUrl": "COST_PER_POST_WITH_URL",
    "MaxEnqueuePerRun": "MAX_ENQUEUE_PER_RUN",
    "SilentSourceHours": "SILENT_SOURCE_HOURS",
    "XParameterPath": "X_PARAMETER_PATH",
    "DryRun": "DRY_RUN",
}
REQUIRED_OUTPUTS = (*OUTPUT_VARIABLES, "PosterFunctionName")
LOG_GROUP_OUTPUTS = ("FetcherLogGroupName", "PosterLogGroupName")


@dataclass(frozen=True)
class Target:
    """Which stack the command line means."""

    stack_name: str
    region: str | None = None
    profile: str | None = None


def target_from_samconfig(
    path: Path,
    *,
    config_env: str = "default",
    stack: str | None = None,
    region: str | None = None,
    profile: str | None = None,
) -> Target:
    """The stack, region and profile: the flags, else samconfig.toml's deploy, else global parameters."""
    settings: dict[str, Any] = {}
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        document = {}
    except tomllib.TOMLDecodeError as exc:
        raise BmsUploaderError(f"{path}: not valid TOML: {exc}") from exc
    environment = document.get(config_env, {})
    for command in ("global", "deploy"):  # deploy's own settings win, as in `sam deploy`
        settings.update(environment.get(command, {}).get("parameters", {}))
    name = stack or settings.get("stack_name")
    if not name:
        where = f"{path} has no stack_name for config env {config_env!r}" if document else f"no {path} here"
        raise BmsUploaderError(f"which stack? {where}: pass --stack NAME")
    return Target(
        stack_name=str(name),
        region=region or settings.get("region"),
        profile=profile or settings.get("profile"),
    )


@dataclass(frozen=True)
class Deployment:
    """A stack's parts and settings, as the commands use them."""

    stack_name: str
    region: str
    fetcher: FetcherSettings
    poster: PosterSettings
    poster_function_name: str
    log_groups: tuple[str, ...]
    dashboard: str | None
    #: where EventBridge Scheduler puts runs it could not start (stacks from before it: None)
    schedule_dlq_url: str | None = None

    @classmethod
    def from_stack(
        cls, stack_name: str, region: str, outputs: Mapping[str, str], parameters: Mapping[str, str]
    ) -> Deployment:
        missing = [name for name in REQUIRED_OUTPUTS if not outputs.get(name)]
        if missing:
            raise BmsUploaderError(
                f"stack {stack_name!r} has no output {', '.join(missing)}: deploy the current "
                "template.yaml (sam build && sam deploy)"
            )
        environment = {variable: outputs[name] for name, variable in OUTPUT_VARIABLES.items()}
        environment |= {v: parameters[p] for p, v in PARAMETER_VARIABLES.items() if parameters.get(p)}
        return cls(
            stack_name=stack_name,
            region=region,
            fetcher=FetcherSettings.from_env(environment),
            poster=PosterSettings.from_env(environment),
            poster_function_name=outputs["PosterFunctionName"],
            log_groups=tuple(outputs[name] for name in LOG_GROUP_OUTPUTS if outputs.get(name)),
            dashboard=outputs.get("DashboardName"),
            schedule_dlq_url=outputs.get("ScheduleDeadLetterQueueUrl"),
        )


class _CloudFormation(Protocol):
    def describe_stacks(self, *, StackName: str) -> Mapping[str, Any]: ...


def session_for(target: Target) -> boto3.Session:
    try:
        return boto3.Session(profile_name=target.profile, region_name=target.region)
    except ProfileNotFound as exc:
        raise BmsUploaderError(f"{exc} (--profile, or profile in samconfig.toml)") from exc


def describe(session: boto3.Session, target: Target) -> Deployment:
    """One DescribeStacks: the stack's outputs and parameters."""
    cloudformation = cast(_CloudFormation, session.client("cloudformation"))
    region = session.region_name or "?"
    try:
        stacks = cloudformation.describe_stacks(StackName=target.stack_name)["Stacks"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationError" and "does not exist" in str(exc):
            raise BmsUploaderError(
                f"stack {target.stack_name!r} not found in region {region}: check --stack and --region "
                "(or samconfig.toml)"
            ) from exc
        raise
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    return Deployment.from_stack(stack["StackName"], region, outputs, parameters)


_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired"}
_REJECTED = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "AuthFailure",
}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
_GONE = {"ResourceNotFoundException", "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"}


def aws_problem(exc: BotoCoreError | ClientError) -> str:  # noqa: PLR0911 - one answer per kind
    """One line that says what is wrong and what to do, for any AWS failure."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "no AWS credentials: set AWS_PROFILE (or --profile), or run `aws configure` / `aws sso login`"
    if isinstance(exc, NoRegionError):
        return "no AWS region: pass --region, or set region in samconfig.toml"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS ({exc.kwargs.get('endpoint_url')}): check the region and the network"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        if code in _EXPIRED:
            return f"the AWS credentials have expired ({code}): log in again (e.g. `aws sso login`)"
        if code in _REJECTED:
            return f"AWS rejected the credentials ({code}): check AWS_PROFILE or the access keys"
        if code in _DENIED:
            return f"access denied to {exc.operation_name}: {message}"
        if code in _GONE:
            return f"{exc.operation_name}: {message or code} (deleted outside the stack? redeploy it)"
        return f"{exc.operation_name} failed: {code}: {message}"
    return str(exc)
