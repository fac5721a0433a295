"""The functions' IAM roles from template.yaml, applied to every AWS call the handlers make.

moto grants everything, so a call the deployed role forbids (a new DynamoDB
operation, another table, a GetParameter instead of GetParameters) would pass
every test and fail with AccessDenied in AWS. This module wraps botocore's one
entry point for API calls, works out which function made each call (a handler
or one of its stages on the stack), and judges it the way IAM would: an Allow
statement of that function's role in template.yaml must name the action and
match the resource.

Resources in the template are CloudFormation expressions; they are matched
against the physical names the handler sees in its environment, through the
template's own environment contract (``TABLE_NAME: !Ref StateTable`` means the
table called ``$TABLE_NAME`` is ``StateTable``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bmsuploader_local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = {
    str(ROOT / "src" / "fetcher" / "app.py"): "FetcherFunction",
    str(ROOT / "src" / "poster" / "app.py"): "PosterFunction",
}
#: a stage's code, for calls made on a worker thread (no handler frame on its stack)
STAGES = {
    str(ROOT / "src" / "shared" / "bmsuploader" / "fetch"): "FetcherFunction",
    str(ROOT / "src" / "shared" / "bmsuploader" / "post"): "PosterFunction",
}
#: batch operations IAM authorises as the single one
BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
#: a TransactWriteItems part -> the action IAM checks for it
TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


@dataclass(frozen=True)
class Call:
    function: str
    action: str  # e.g. "dynamodb:PutItem"
    arn: str
    operation: str  # the API operation, e.g. "TransactWriteItems"


@dataclass(frozen=True)
class Grant:
    """One action of one Allow statement, as ``role/Sid``."""

    function: str
    statement: str
    action: str
    resource: str  # the CloudFormation expression, as JSON (hashable)


@dataclass
class Audit:
    template: dict[str, Any]
    #: every call by a function's code, with the grant that allows it (None: IAM would deny it)
    calls: list[tuple[Call, Grant | None]] = field(default_factory=list)

    def record(self, call: Call, environ: dict[str, str]) -> None:
        self.calls.append((call, self.allowing(call, environ)))

    def grants(self, function: str) -> list[Grant]:
        role = _props(self.template, function)["Role"]["Fn::GetAtt"][0]
        found = []
        for policy in _props(self.template, role)["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Allow", statement
                actions = statement["Action"]
                resources = statement["Resource"]
                for action in [actions] if isinstance(actions, str) else actions:
                    for resource in resources if isinstance(resources, list) else [resources]:
                        found.append(
                            Grant(function, f"{role}/{statement.get('Sid')}", action, json.dumps(resource))
                        )
        return found

    def allowing(self, call: Call, environ: dict[str, str]) -> Grant | None:
        for grant in self.grants(call.function):
            if grant.action != call.action:
                continue
            pattern = self.resource_pattern(call.function, json.loads(grant.resource), environ)
            if pattern is not None and fnmatch.fnmatchcase(call.arn, pattern):
                return grant
        return None

    def resource_pattern(self, function: str, expression: Any, environ: dict[str, str]) -> str | None:
        """The ARN pattern an expression stands for in this environment (None: not resolvable)."""
        if isinstance(expression, str):
            return expression
        if "Fn::GetAtt" in expression:
            return self._arn_of(function, *expression["Fn::GetAtt"], environ)
        if "Fn::Sub" in expression and isinstance(expression["Fn::Sub"], str):
            return self._substitute(function, expression["Fn::Sub"], environ)
        return None

    def _arn_of(self, function: str, logical: str, attribute: str, environ: dict[str, str]) -> str | None:
        kind = self.template["Resources"][logical]["Type"]
        name = self._physical(function, logical, environ)
        if attribute != "Arn" or name is None:
            return None
        patterns = {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:*:*:table/{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:*:*:{name.rsplit('/', 1)[-1]}",  # Ref is the URL
        }
        return patterns.get(kind)

    def _substitute(self, function: str, text: str, environ: dict[str, str]) -> str | None:
        pseudo = {"AWS::Partition": "aws", "AWS::Region": "*", "AWS::AccountId": "*"}
        names = re.findall(r"\$\{([^}]+)\}", text)
        values = {name: pseudo.get(name) or self._physical(function, name, environ) for name in names}
        if None in values.values():
            return None
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(values[m.group(1)]), text)

    def _physical(self, function: str, logical: str, environ: dict[str, str]) -> str | None:
        """What the function's environment calls a resource or parameter (``VAR: !Ref logical``)."""
        env = dict(self.template["Globals"]["Function"]["Environment"]["Variables"])
        env.update(_props(self.template, function).get("Environment", {}).get("Variables", {}))
        for variable, value in env.items():
            if value == {"Ref": logical} and environ.get(variable):
                return environ[variable]
        return None


def _props(template: dict[str, Any], logical: str) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"][logical]["Properties"]
    return found


def calling_function() -> str | None:
    """The function whose code is on this thread's stack: its handler, else one of its stages."""
    frame = sys._getframe(2)
    stage = None
    while frame is not None:
        path = frame.f_code.co_filename
        if path in HANDLERS:
            return HANDLERS[path]
        if stage is None:
            stage = next((f for prefix, f in STAGES.items() if path.startswith(prefix + os.sep)), None)
        frame = frame.f_back  # type: ignore[assignment]
    return stage


def iam_requests(
    service: str, operation: str, params: dict[str, Any], region: str
) -> Iterator[tuple[str, str]]:
    """(action, resource ARN) pairs IAM authorises for one API call."""
    account = "000000000000"  # the template's patterns take any account
    if service == "dynamodb":

        def table(name: str) -> str:
            return f"arn:aws:dynamodb:{region}:{account}:table/{name}"

        if operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                ((kind, request),) = item.items()
                yield f"dynamodb:{TRANSACT_ACTIONS[kind]}", table(request["TableName"])
        elif operation == "TransactGetItems":
            for item in params["TransactItems"]:
                yield "dynamodb:GetItem", table(item["Get"]["TableName"])
        elif "RequestItems" in params:
            for name in params["RequestItems"]:
                yield f"dynamodb:{operation}", table(name)
        else:
            yield f"dynamodb:{operation}", table(params.get("TableName", "*"))
    elif service == "sqs":
        queue = params.get("QueueUrl", "*").rsplit("/", 1)[-1]
        yield f"sqs:{BATCH_ACTIONS.get(operation, operation)}", f"arn:aws:sqs:{region}:{account}:{queue}"
    elif service == "ssm":
        names = params.get("Names") or [params.get("Name") or params.get("Path", "*")]
        for name in names:
            yield f"ssm:{operation}", f"arn:aws:ssm:{region}:{account}:parameter{name}"
    else:
        yield f"{service}:{operation}", "*"


_AUDIT: Audit | None = None


def install() -> Audit:
    """Wrap botocore once per process; every later call by a function's code is recorded."""
    global _AUDIT  # noqa: PLW0603 -- one audit per process, like the patch it owns
    if _AUDIT is not None:
        return _AUDIT
    from botocore.client import BaseClient

    audit = _AUDIT = Audit(load_template(ROOT / "template.yaml"))
    original = BaseClient._make_api_call

    def audited(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        function = calling_function()
        if function is not None:
            service = self.meta.service_model.service_name
            for action, arn in iam_requests(service, operation_name, api_params, self.meta.region_name):
                audit.record(Call(function, action, arn, operation_name), dict(os.environ))
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = audited  # type: ignore[method-assign]
    return audit
