"""The operator commands' pure parts: which stack, its settings, errors in one line, the idempotency key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

from bmsuploader.aws.idempotency import ANNOUNCE_FUNCTION, HANDLER_MODULE, announce_config, record_key
from bmsuploader.contract.errors import BmsUploaderError, ConfigError
from bmsuploader.contract.message import EntryMessage
from bmsuploader.ops.display import duration
from bmsuploader.ops.stack import Deployment, aws_problem, target_from_samconfig

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


# --- which stack ---------------------------------------------------------------------


def test_the_repository_samconfig_names_the_stacks() -> None:
    default = target_from_samconfig(ROOT / "samconfig.toml")
    staging = target_from_samconfig(ROOT / "samconfig.toml", config_env="staging")
    assert (default.stack_name, default.region) == ("bmsuploader", "ap-northeast-1")
    assert staging.stack_name == "bmsuploader-staging"


def test_deploy_parameters_win_over_global_and_flags_over_both(tmp_path: Path) -> None:
    config = tmp_path / "samconfig.toml"
    config.write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "g"\nregion = "us-east-1"\n'
        '[default.deploy.parameters]\nstack_name = "d"\nprofile = "ops"\n',
        encoding="utf-8",
    )
    assert target_from_samconfig(config) == target_from_samconfig(
        config, stack="d", region="us-east-1", profile="ops"
    )
    flagged = target_from_samconfig(config, stack="s", region="eu-west-1", profile="p")
    assert (flagged.stack_name, flagged.region, flagged.profile) == ("s", "eu-west-1", "p")


def test_no_stack_name_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BmsUploaderError, match="which stack"):
        target_from_samconfig(tmp_path / "absent.toml")


# --- the stack's settings, through the functions' own models ------------------------------

OUTPUTS = {
    "StateTableName": "state",
    "QueueUrl": "https://sqs/q.fifo",
    "DeadLetterQueueUrl": "https://sqs/dlq.fifo",
    "IdempotencyTableName": "idem",
    "PosterFunctionName": "bmsuploader-PosterFunction-AbC",
    "FetcherLogGroupName": "/aws/lambda/bmsuploader/fetcher",
    "PosterLogGroupName": "/aws/lambda/bmsuploader/poster",
}
PARAMETERS = {
    "MonthlySpendLimitUSD": "5",
    "CostPerPost": "0.015",
    "CostPerPostWithUrl": "0.2",
    "SilentSourceHours": "48",
    "XParameterPath": "/bmsuploader/x",
    "DryRun": "true",
    "AlarmEmail": "",
}


def test_outputs_and_parameters_become_the_functions_settings() -> None:
    deployment = Deployment.from_stack("bmsuploader", "ap-northeast-1", OUTPUTS, PARAMETERS)
    assert deployment.fetcher.table_name == "state"
    assert deployment.fetcher.limit_micro == 5_000_000
    assert deployment.fetcher.silent_source_hours == 48
    assert deployment.poster.dlq_url == "https://sqs/dlq.fifo"
    assert deployment.poster.dry_run is True
    assert deployment.log_groups == ("/aws/lambda/bmsuploader/fetcher", "/aws/lambda/bmsuploader/poster")
    # A stack deployed before a parameter existed: the model's default, as in the function.
    older = Deployment.from_stack(
        "b", "r", OUTPUTS, {k: v for k, v in PARAMETERS.items() if k != "SilentSourceHours"}
    )
    assert older.fetcher.silent_source_hours == 168


def test_a_bad_parameter_is_reported_as_the_function_would() -> None:
    with pytest.raises(ConfigError, match="MONTHLY_SPEND_LIMIT_USD"):
        Deployment.from_stack("b", "r", OUTPUTS, {**PARAMETERS, "MonthlySpendLimitUSD": "-1"})


# --- errors -------------------------------------------------------------------------------


def client_error(code: str, operation: str = "DescribeStacks", message: str = "m") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (NoCredentialsError(), "no AWS credentials"),
        (NoRegionError(), "no AWS region"),
        (client_error("ExpiredToken"), "have expired"),
        (client_error("UnrecognizedClientException"), "rejected the credentials"),
        (
            client_error("AccessDenied", "GetQueueAttributes", "not allowed"),
            "access denied to GetQueueAttributes",
        ),
        (client_error("ResourceNotFoundException", "Query"), "Query: m (deleted outside the stack?"),
        (client_error("Throttling", "Query"), "Query failed: Throttling: m"),
    ],
)
def test_aws_failures_read_as_one_line(exc: Exception, says: str) -> None:
    line = aws_problem(exc)  # type: ignore[arg-type]
    assert says in line and "\n" not in line


# --- the idempotency record's key: Powertools' own derivation --------------------------------


def test_record_key_is_the_one_powertools_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "bmsuploader-PosterFunction-AbC")
    layer = DynamoDBPersistenceLayer(table_name="idem")
    # What the idempotent_function decorator passes for `announce_once` in module `app`.
    layer.configure(config=announce_config(), function_name=f"{HANDLER_MODULE}.{ANNOUNCE_FUNCTION}")
    message = EntryMessage(
        source="up", entry_id="00123", title="t", url="http://x.test/u", fetched_at=NOW
    ).model_dump(mode="json")

    expected = layer._get_hashed_idempotency_key(message)

    assert record_key("bmsuploader-PosterFunction-AbC", "up", "00123") == expected


def test_the_poster_wraps_the_function_the_key_names() -> None:
    source = (ROOT / "src" / "poster" / "app.py").read_text(encoding="utf-8")
    assert f"def {ANNOUNCE_FUNCTION}(\n    *, message: EntryMessage" in source
    assert "idempotency = announce_config()" in source


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (5, 125, 3600, 3 * 3600 + 300, 3 * 86400 + 7200)] == [
        "5 s",
        "2 min",
        "1 h",
        "3 h 5 min",
        "3 d 2 h",
    ]


def test_explain_tells_to_look_before_redriving_a_message_that_may_already_be_posted() -> None:
    from bmsuploader.aws.queue import DeadLetter
    from bmsuploader.aws.state.seen import SeenEntry
    from bmsuploader.ops.explain import DEAD_LETTER, Explanation, _verdict

    def letter(*, check_first: bool) -> DeadLetter:
        return DeadLetter(
            "m-1", "r", "{}", "uploader~hook", "outcome unknown", None, 1, check_first=check_first
        )

    seen = SeenEntry(seen_at="2026-11-28T00:00:00+00:00", baseline=False)
    now = datetime(2026, 11, 29, tzinfo=UTC)
    held = Explanation("uploader", "00027", "hook", seen=seen, dead_letters=[letter(check_first=True)])
    failed = Explanation("uploader", "00027", "hook", seen=seen, dead_letters=[letter(check_first=False)])

    verdict, summary = _verdict(held, now)
    assert verdict == DEAD_LETTER and "Look for the post first" in summary
    assert "redrive --message-id m-1 --discard --yes" in summary
    assert "Fix the cause" in _verdict(failed, now)[1]
