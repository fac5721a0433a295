"""template.yaml keeps the contract the code and the operators rely on.

cfn-lint checks CloudFormation's own rules; these tests check ours: the things
that break ordering, retries, dedup or a local run without any linter noticing
(cfn-lint accepts, for example, BatchSize 11 on a FIFO queue and a 1200 s
Lambda timeout).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from bmsuploader.contract.message import parse_message
from bmsuploader.contract.outcomes import Outcome
from bmsuploader.contract.settings import FetcherSettings, PosterSettings
from bmsuploader.fetch.cycle import SourceReport
from bmsuploader.ops import queries
from bmsuploader.ops.stack import LOG_GROUP_OUTPUTS, OUTPUT_VARIABLES, PARAMETER_VARIABLES, REQUIRED_OUTPUTS
from bmsuploader_local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
EVENTS = ROOT / "events"

OUTPUTS = {
    "QueueUrl",
    "DeadLetterQueueUrl",
    "ScheduleDeadLetterQueueUrl",
    "StateTableName",
    "IdempotencyTableName",
    "FetcherFunctionName",
    "PosterFunctionName",
    "AlarmTopicArn",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def resource(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"][logical_id]
    return found


def props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = resource(template, logical_id)["Properties"]
    return found


def function_setting(template: dict[str, Any], logical_id: str, key: str) -> Any:
    """A function property as deployed: its own value, else the Globals one."""
    own = props(template, logical_id)
    return own.get(key, template["Globals"]["Function"].get(key))


def function_env(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """Globals and function variables merged, as SAM merges them."""
    merged = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    merged.update(props(template, logical_id).get("Environment", {}).get("Variables", {}))
    return merged


def events_of(template: dict[str, Any], logical_id: str, kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: event["Properties"]
        for name, event in props(template, logical_id).get("Events", {}).items()
        if event["Type"] == kind
    }


# --- runtime and packaging -----------------------------------------------------------


def test_runtime_and_architecture(template: dict[str, Any]) -> None:
    for function in ("FetcherFunction", "PosterFunction"):
        assert function_setting(template, function, "Runtime") == "python3.13"
        assert function_setting(template, function, "Architectures") == ["arm64"]
        assert function_setting(template, function, "Layers") == [{"Ref": "SharedLayer"}]
        assert props(template, function)["Handler"] == "app.lambda_handler"
        code_uri = props(template, function)["CodeUri"]
        assert (ROOT / code_uri / "requirements.txt").is_file()

    layer = resource(template, "SharedLayer")
    assert layer["Properties"]["ContentUri"] == "src/shared"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}


def test_json_logs_into_own_log_groups(template: dict[str, Any]) -> None:
    assert template["Globals"]["Function"]["LoggingConfig"]["LogFormat"] == "JSON"
    for function, group in (("FetcherFunction", "FetcherLogGroup"), ("PosterFunction", "PosterLogGroup")):
        assert props(template, function)["LoggingConfig"]["LogGroup"] == {"Ref": group}
        assert props(template, group)["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# --- queues ------------------------------------------------------------------------------


def test_fifo_queue_with_fifo_dead_letter_queue(template: dict[str, Any]) -> None:
    queue = props(template, "Queue")
    dlq = props(template, "DeadLetterQueue")
    assert queue["FifoQueue"] is True
    assert dlq["FifoQueue"] is True  # a FIFO queue's DLQ must be FIFO
    assert queue["QueueName"]["Fn::Sub"].endswith(".fifo")
    assert dlq["QueueName"]["Fn::Sub"].endswith(".fifo")
    # The fetcher sets its own MessageDeduplicationId (sha256 of source and entry id).
    assert queue["ContentBasedDeduplication"] is False
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    # High on purpose: parked messages are received many times before they can succeed.
    assert 100 <= queue["RedrivePolicy"]["maxReceiveCount"] <= 1000
    for q in (queue, dlq):
        assert q["SqsManagedSseEnabled"] is True
        assert q["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_visibility_timeout_is_six_times_poster_timeout(template: dict[str, Any]) -> None:
    poster_timeout = function_setting(template, "PosterFunction", "Timeout")
    assert props(template, "Queue")["VisibilityTimeout"] >= 6 * poster_timeout


def test_function_timeouts_within_lambda_limit(template: dict[str, Any]) -> None:
    # cfn-lint does not check this on SAM functions.
    assert function_setting(template, "FetcherFunction", "Timeout") <= 900
    assert function_setting(template, "PosterFunction", "Timeout") <= 900


# --- tables ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logical_id", "keys", "ttl"),
    [
        ("StateTable", {"pk": "HASH", "sk": "RANGE"}, "expires_at"),
        ("IdempotencyTable", {"id": "HASH"}, "expiration"),
    ],
)
def test_tables(template: dict[str, Any], logical_id: str, keys: dict[str, str], ttl: str) -> None:
    table = resource(template, logical_id)
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    p = table["Properties"]
    assert {k["AttributeName"]: k["KeyType"] for k in p["KeySchema"]} == keys
    assert {a["AttributeName"]: a["AttributeType"] for a in p["AttributeDefinitions"]} == dict.fromkeys(
        keys, "S"
    )
    assert p["BillingMode"] == "PAY_PER_REQUEST"
    assert p["DeletionProtectionEnabled"] is True  # on top of Retain: no DeleteTable by hand either
    assert p["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert p["SSESpecification"]["SSEEnabled"] is True
    assert p["TimeToLiveSpecification"] == {"AttributeName": ttl, "Enabled": True}


# --- events ------------------------------------------------------------------------------


def test_fetcher_schedules(template: dict[str, Any]) -> None:
    schedules = events_of(template, "FetcherFunction", "ScheduleV2")
    assert set(schedules) == {"DaySchedule", "NightSchedule"}
    for name, schedule in schedules.items():
        assert schedule["ScheduleExpressionTimezone"] == "Asia/Tokyo"
        # Quoted in YAML: a bare OFF would load as the boolean false.
        assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
        # Without OmitName SAM names the schedule after its logical id, and a second stack in
        # the account (staging) fails to deploy.
        assert schedule["OmitName"] is True
        assert schedule["RetryPolicy"]["MaximumRetryAttempts"] >= 1
        # A run Scheduler could not start ends in a queue (and an alarm), not nowhere.
        assert schedule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}}
        expression = schedule["ScheduleExpression"]["Fn::Sub"]
        assert expression.startswith("cron(") and expression.endswith(" * * ? *)")
        payload = json.loads(schedule["Input"])
        assert payload == {
            "source": "bmsuploader.schedule",
            "schedule": name.removesuffix("Schedule").lower(),
        }
    assert "${DayHours}" in schedules["DaySchedule"]["ScheduleExpression"]["Fn::Sub"]
    assert "${NightHours}" in schedules["NightSchedule"]["ScheduleExpression"]["Fn::Sub"]


def test_schedule_dead_letter_queue_is_a_standard_queue(template: dict[str, Any]) -> None:
    # EventBridge Scheduler refuses a FIFO queue as a dead-letter queue.
    queue = props(template, "ScheduleDeadLetterQueue")
    assert not queue.get("FifoQueue", False)
    assert not queue["QueueName"]["Fn::Sub"].endswith(".fifo")
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_poster_reads_the_fifo_queue_in_order(template: dict[str, Any]) -> None:
    (sqs,) = events_of(template, "PosterFunction", "SQS").values()
    assert sqs["Queue"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert 1 <= sqs["BatchSize"] <= 10  # the FIFO maximum; cfn-lint does not check it
    assert "MaximumBatchingWindowInSeconds" not in sqs  # not allowed on FIFO
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 2 <= sqs["ScalingConfig"]["MaximumConcurrency"] <= 1000
    assert "ReservedConcurrentExecutions" not in props(template, "PosterFunction")


# --- environment and permissions ---------------------------------------------------------


def test_environment_contract(template: dict[str, Any]) -> None:
    fetcher = function_env(template, "FetcherFunction")
    poster = function_env(template, "PosterFunction")
    # The settings models are the contract: every variable they read is declared, so
    # `sam local invoke --env-vars` can set it, and the required ones have a value.
    assert set(fetcher) >= FetcherSettings.variables()
    assert set(poster) >= PosterSettings.variables()
    for env, model in ((fetcher, FetcherSettings), (poster, PosterSettings)):
        assert all(env[name] != "" for name in model.required_variables())
    for env in (fetcher, poster):
        assert env["TABLE_NAME"] == {"Ref": "StateTable"}
        assert env["QUEUE_URL"] == {"Ref": "Queue"}
        assert env["POWERTOOLS_SERVICE_NAME"] == "bmsuploader"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "BmsUploader"
        # Deployed functions always use the real AWS endpoints.
        assert env["AWS_ENDPOINT_URL"] == ""
    assert poster["DLQ_URL"] == {"Ref": "DeadLetterQueue"}
    assert poster["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert poster["X_API_BASE_URL"] == ""  # the real X API


def test_functions_use_the_template_roles(template: dict[str, Any]) -> None:
    # Their statements are pinned in tests/unit/test_iam.py; SAM adds nothing to an own role.
    for function, role in (("FetcherFunction", "FetcherRole"), ("PosterFunction", "PosterRole")):
        assert props(template, function)["Role"] == {"Fn::GetAtt": [role, "Arn"]}
        assert "Policies" not in props(template, function)  # SAM ignores Policies next to Role
    assert template["Parameters"]["XParameterPath"]["AllowedPattern"].startswith("^/")


# --- alarms ------------------------------------------------------------------------------


def test_alarms(template: dict[str, Any]) -> None:
    alarms = {
        logical_id: r["Properties"]
        for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    for logical_id, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], logical_id
        assert len(alarm["AlarmDescription"]) > 60, f"{logical_id}: say what the operator should do"

    custom = {a["MetricName"]: a for a in alarms.values() if a["Namespace"] == "BmsUploader"}
    assert set(custom) == {"FormatErrors", "FetchErrors", "AuthFailed", "BudgetBlocked", "SilentSource"}
    # Each is a metric the code emits: a source's counts (fetcher) or an outcome (poster).
    emitted = set(SourceReport(source="s").counts()) | {outcome.metric for outcome in Outcome}
    assert set(custom) <= emitted
    for alarm in custom.values():
        # Powertools adds the service dimension (POWERTOOLS_SERVICE_NAME) to every metric.
        assert alarm["Dimensions"] == [{"Name": "service", "Value": "bmsuploader"}]
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["Threshold"] == 1
    assert custom["FetchErrors"]["EvaluationPeriods"] == 3
    # A silent source is silent every run: one hour without a run must not flip it to OK.
    assert custom["SilentSource"]["EvaluationPeriods"] > custom["SilentSource"]["DatapointsToAlarm"]

    by_metric = {(a["Namespace"], a["MetricName"]): a for a in alarms.values()}
    # Something waiting in either dead-letter queue alarms within 5 minutes.
    dead_letters = {
        a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]: a
        for a in alarms.values()
        if (a["Namespace"], a["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    }
    assert set(dead_letters) == {"DeadLetterQueue", "ScheduleDeadLetterQueue"}
    for alarm in dead_letters.values():
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
        assert alarm["Period"] <= 300
    assert by_metric[("AWS/SQS", "ApproximateAgeOfOldestMessage")]["Threshold"] == 86400
    lambda_errors = {
        a["Dimensions"][0]["Value"]["Ref"]
        for a in alarms.values()
        if (a["Namespace"], a["MetricName"]) == ("AWS/Lambda", "Errors")
    }
    assert lambda_errors == {"FetcherFunction", "PosterFunction"}

    subscription = resource(template, "AlarmEmailSubscription")
    assert subscription["Condition"] == "HasAlarmEmail"


def test_saved_outcomes_query(template: dict[str, Any]) -> None:
    query = props(template, "OutcomesQuery")
    assert query["LogGroupNames"] == [{"Ref": "FetcherLogGroup"}, {"Ref": "PosterLogGroup"}]
    assert "filter ispresent(outcome)" in query["QueryString"]


def test_saved_queries_are_the_ones_the_commands_print(template: dict[str, Any]) -> None:
    saved = {
        r["Properties"]["Name"]["Fn::Sub"]: r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Logs::QueryDefinition"
    }
    assert saved["${AWS::StackName}/entry-journey"]["QueryString"] == queries.journey()
    assert saved["${AWS::StackName}/errors-by-source (last day)"]["QueryString"] == queries.ERRORS_BY_SOURCE
    assert saved["${AWS::StackName}/posts (last day)"]["QueryString"] == queries.POSTS
    both = [{"Ref": "FetcherLogGroup"}, {"Ref": "PosterLogGroup"}]
    assert saved["${AWS::StackName}/entry-journey"]["LogGroupNames"] == both


def test_journey_query_quotes_what_it_is_given() -> None:
    query = queries.journey("up", 'a"b\\c')
    assert 'entry_id = "a\\"b\\\\c"' in query


def test_dashboard_body_is_json_and_names_only_what_exists(template: dict[str, Any]) -> None:
    body = props(template, "Dashboard")["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    known = set(template["Parameters"]) | set(template["Resources"]) | {"AWS::Region", "AWS::StackName"}
    assert {name.split(".")[0] for name in names} <= known
    # Every substitution is a name or a number (the spend limit): the body stays JSON.
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "1", body))["widgets"]
    text = json.dumps(widgets)
    for metric in ("EntriesNew", "FetchErrors", "FormatErrors", "SilentSource"):
        assert f'SUM({metric}) FROM SCHEMA(\\"BmsUploader\\", service, source) GROUP BY source' in text
    for metric in (
        "ApproximateAgeOfOldestMessage",
        "ApproximateNumberOfMessagesVisible",
        "EstimatedSpendUSD",
    ):
        assert metric in text
    assert "${MonthlySpendLimitUSD}" in body and "Duration" in text


def test_outputs(template: dict[str, Any]) -> None:
    assert set(template["Outputs"]) >= OUTPUTS | set(REQUIRED_OUTPUTS) | set(LOG_GROUP_OUTPUTS)


def test_status_reads_outputs_and_parameters_the_functions_are_configured_from(
    template: dict[str, Any],
) -> None:
    """`bmsuploader status` turns outputs and parameters into the functions' variables: the template
    must set each variable from that very output's resource or that parameter."""
    env = function_env(template, "FetcherFunction") | function_env(template, "PosterFunction")
    for output, variable in OUTPUT_VARIABLES.items():
        assert env[variable] == template["Outputs"][output]["Value"], output
    for parameter, variable in PARAMETER_VARIABLES.items():
        assert env[variable] == {"Ref": parameter}, parameter
    assert set(FetcherSettings.variables()) - {"SOURCES_FILE"} <= set(PARAMETER_VARIABLES.values()) | set(
        OUTPUT_VARIABLES.values()
    )


# --- events/ files match the template ---------------------------------------------------


def test_schedule_event_is_what_the_day_schedule_delivers(template: dict[str, Any]) -> None:
    day = events_of(template, "FetcherFunction", "ScheduleV2")["DaySchedule"]
    assert json.loads((EVENTS / "fetcher-schedule.json").read_text()) == json.loads(day["Input"])


def test_sqs_event_is_a_valid_fifo_batch(template: dict[str, Any]) -> None:
    event = json.loads((EVENTS / "poster-sqs-fifo.json").read_text(encoding="utf-8"))
    queue_name = props(template, "Queue")["QueueName"]["Fn::Sub"].replace("${AWS::StackName}", "bmsuploader")
    records = event["Records"]
    assert 1 <= len(records) <= 10
    for record in records:
        message = parse_message(record["body"])
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode(), usedforsecurity=False).hexdigest()
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"].endswith(f":{queue_name}")
        attributes = record["attributes"]
        assert attributes["MessageGroupId"] == message.source
        assert attributes["MessageDeduplicationId"] == message.deduplication_id
        assert attributes["ApproximateReceiveCount"] == "1"
    sequence = [int(r["attributes"]["SequenceNumber"]) for r in records]
    assert sequence == sorted(sequence)


def test_env_json_only_sets_declared_variables(template: dict[str, Any]) -> None:
    # `sam local invoke --env-vars` silently drops variables the template does not declare.
    env_json = json.loads((EVENTS / "env.json").read_text())
    assert set(env_json) == {"FetcherFunction", "PosterFunction"}
    for function, overrides in env_json.items():
        undeclared = set(overrides) - set(function_env(template, function))
        assert not undeclared, f"{function}: SAM would ignore {sorted(undeclared)}"
    assert env_json["PosterFunction"]["DRY_RUN"] == "true"


# --- packaging: each function ships what its imports need -------------------------------

SHARED = ROOT / "src" / "shared"
#: In the python3.13 Lambda runtime, so shipped by nobody (requirements would only add weight).
RUNTIME_PROVIDED = "boto3"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _module_imports(path: Path) -> set[str]:
    """Modules a file imports, anywhere except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _third_party_reached(handler: Path) -> dict[str, str]:
    """Top-level third-party modules reached from a handler through bmsuploader -> first importer."""
    reached: dict[str, str] = {}
    todo, seen = [handler], {handler}
    while todo:
        path = todo.pop()
        for module in _module_imports(path):
            top = module.split(".")[0]
            if top == "bmsuploader":
                base = SHARED.joinpath(*module.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file() and candidate not in seen:
                        seen.add(candidate)
                        todo.append(candidate)
            elif top not in sys.stdlib_module_names and top != "__future__":
                reached.setdefault(top, path.relative_to(ROOT).as_posix())
    return reached


def _distribution_closure(requirement_files: list[Path]) -> set[str]:
    """Distributions a set of requirements files installs, dependencies included."""
    todo = [
        Requirement(line.split("#")[0].strip())
        for path in requirement_files
        for line in path.read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    closure: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = _normalize(requirement.name)
        if name in closure:
            continue
        closure.add(name)
        for dependency in importlib.metadata.requires(requirement.name) or []:
            parsed = Requirement(dependency)
            if parsed.marker is None or parsed.marker.evaluate({"extra": ""}):
                todo.append(parsed)
    return closure


@pytest.mark.parametrize("function", ["fetcher", "poster"])
def test_function_package_covers_its_imports(function: str) -> None:
    """A deployed function has /var/task (its requirements), /opt/python (the layer) and boto3.

    Anything else it imports at cold start is a ModuleNotFoundError that no local test sees,
    because the dev virtualenv has every dependency of both functions.
    """
    shipped = _distribution_closure(
        [ROOT / "src" / function / "requirements.txt", SHARED / "requirements.txt"]
    )
    shipped |= {_normalize(RUNTIME_PROVIDED)} | {
        _normalize(Requirement(d).name) for d in importlib.metadata.requires(RUNTIME_PROVIDED) or []
    }
    distributions = importlib.metadata.packages_distributions()
    missing = {
        module: importer
        for module, importer in _third_party_reached(ROOT / "src" / function / "app.py").items()
        if not {_normalize(d) for d in distributions.get(module, [module])} & shipped
    }
    assert not missing, f"{function} imports modules its package lacks (module: first importer): {missing}"


def test_layer_does_not_ship_boto3() -> None:
    names = {_normalize(Requirement(line).name) for line in _requirement_lines(SHARED)}
    assert "boto3" not in names and "botocore" not in names


def test_poster_ships_the_twitter_text_data_but_no_setuptools() -> None:
    # bmsuploader.post.tweet_text reads twitter-text-parser's TLD lists as files (the import
    # graph above cannot see that) and never imports its code, whose pkg_resources import
    # is what setuptools was shipped for: half the poster package.
    requirements = {_normalize(Requirement(r).name) for r in _requirement_lines(ROOT / "src" / "poster")}
    assert "twitter-text-parser" in requirements
    assert "setuptools" not in requirements


def test_rendering_needs_no_pkg_resources() -> None:
    code = (
        "import sys; sys.modules['pkg_resources'] = None\n"  # as in the Lambda runtime: no setuptools
        "from datetime import UTC, datetime\n"
        "from bmsuploader.contract.message import EntryMessage\n"
        "from bmsuploader.post.rendering import render_post\n"
        "m = EntryMessage(source='s', entry_id='1', title='曲', url='https://a.jp/x',\n"
        "                 fetched_at=datetime.now(UTC))\n"
        "post = render_post(m, template='{title} {url}', include_link=True)\n"
        "assert post.weighted_length == 2 + 1 + 23, post\n"
        "assert 'twitter_text' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _requirement_lines(folder: Path) -> list[str]:
    lines = (folder / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


# --- loader and linter ---------------------------------------------------------------------


def test_loader_reads_short_tags_and_rejects_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "A: !Ref X\nB: !GetAtt Q.Arn\nC: !Sub '${X}-y'\nD: !If [Cond, !Ref X, !Ref AWS::NoValue]\n"
        "E: !Not [!Equals [!Ref X, '']]\n"
    )
    assert load_template(path) == {
        "A": {"Ref": "X"},
        "B": {"Fn::GetAtt": ["Q", "Arn"]},
        "C": {"Fn::Sub": "${X}-y"},
        "D": {"Fn::If": ["Cond", {"Ref": "X"}, {"Ref": "AWS::NoValue"}]},
        "E": {"Fn::Not": [{"Fn::Equals": [{"Ref": "X"}, ""]}]},
    }
    path.write_text("A: 1\nA: 2\n")
    with pytest.raises(Exception, match="duplicate key"):
        load_template(path)


def test_every_checkov_skip_says_why() -> None:
    # `make lint` runs checkov on template.yaml; a skip lives next to its resource, with a reason.
    skips = re.findall(r"#\s*checkov:skip=(\w+)(?::(.*))?", TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert skips
    for check, reason in skips:
        assert len(reason.strip()) >= 40, f"{check}: say why it does not apply"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "checkov --file template.yaml" in makefile.replace("$(CHECKOV)", "checkov")
    assert "--skip-check" not in makefile and not (ROOT / ".checkov.yaml").exists()


def test_cfn_lint_is_clean() -> None:
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(TEMPLATE_PATH, ManualArgs(include_checks=["I"]))
    assert not matches, "\n".join(str(m) for m in matches)
