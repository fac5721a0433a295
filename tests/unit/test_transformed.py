"""template.yaml as CloudFormation receives it: after the SAM transform.

cfn-lint (and so `sam validate --lint`) no longer runs the transform; it
accepted ``Runtime: python9`` and ``Timeout: 1000`` on a function. These tests
transform the template with aws-sam-translator and lint the result with
cfn-lint (scripts/sam_lint.py, run in the SAM CLI's virtualenv: the project's
own cannot hold aws-sam-translator, which pins pydantic), and prove the lint
catches both mistakes on mutated copies.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAM_PYTHON = Path(os.environ.get("SAM_PYTHON", ROOT / ".venv-sam" / "bin" / "python"))

#: (description, old text, new text): mistakes the SAM schemas let through
MUTATIONS = {
    "python9": ("    Runtime: python3.13\n", "    Runtime: python9\n"),  # Globals
    "timeout": ("      Timeout: 120\n", "      Timeout: 1000\n"),  # the fetcher's
}


@pytest.fixture(scope="module")
def linted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """scripts/sam_lint.py over template.yaml and each mutated copy, in one run."""
    if not SAM_PYTHON.is_file():
        pytest.fail(f"{SAM_PYTHON} is missing: `make tools` creates the SAM CLI's virtualenv")
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    folder = tmp_path_factory.mktemp("mutated")
    paths = {"template": ROOT / "template.yaml"}
    for name, (old, new) in MUTATIONS.items():
        assert text.count(old) == 1, f"mutation {name}: {old!r} is not in template.yaml once"
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(text.replace(old, new), encoding="utf-8")
    run = subprocess.run(
        [str(SAM_PYTHON), str(ROOT / "scripts" / "sam_lint.py"), "--json", *map(str, paths.values())],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert run.returncode in (0, 1), run.stderr
    results = json.loads(run.stdout)
    return dict(zip(paths, results, strict=True))


def test_transformed_template_lints_clean(linted: dict[str, dict[str, Any]]) -> None:
    assert linted["template"]["matches"] == []


def test_lint_catches_a_runtime_that_does_not_exist(linted: dict[str, dict[str, Any]]) -> None:
    matches = linted["python9"]["matches"]
    for function in ("FetcherFunction", "PosterFunction"):
        where = f"Resources/{function}/Properties/Runtime"
        assert any(where in m and "python9" in m for m in matches), matches


def test_lint_catches_a_timeout_over_lambdas_limit(linted: dict[str, dict[str, Any]]) -> None:
    matches = linted["timeout"]["matches"]
    assert any("Resources/FetcherFunction/Properties/Timeout" in m for m in matches), matches


# --- IAM after the transform: SAM adds nothing to the template's own roles -----------------


def _roles(transformed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in transformed["Resources"].items() if r["Type"] == "AWS::IAM::Role"}


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in role.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]


def test_the_only_roles_are_the_templates_and_the_schedules(linted: dict[str, dict[str, Any]]) -> None:
    transformed = linted["template"]["transformed"]
    roles = _roles(transformed)
    assert set(roles) == {
        "FetcherRole",
        "PosterRole",
        "FetcherFunctionDayScheduleRole",
        "FetcherFunctionNightScheduleRole",
    }
    for name, role in roles.items():
        # SAM's generated function roles would carry AWSLambdaBasicExecutionRole (logs on *)
        # and AWSLambdaSQSQueueExecutionRole (every queue in the account).
        assert "ManagedPolicyArns" not in role, name
        for statement in _statements(role):
            resources = statement["Resource"]
            assert "*" not in (resources if isinstance(resources, list) else [resources]), (name, statement)
    # Scheduler sends to its dead-letter queue with the schedule's role, not a queue policy.
    assert not any(r["Type"] == "AWS::SQS::QueuePolicy" for r in transformed["Resources"].values())
    for schedule in ("Day", "Night"):
        statements = _statements(roles[f"FetcherFunction{schedule}ScheduleRole"])
        assert sorted((s["Action"], s["Resource"]["Fn::GetAtt"][0]) for s in statements) == [
            ("lambda:InvokeFunction", "FetcherFunction"),
            ("sqs:SendMessage", "ScheduleDeadLetterQueue"),
        ]
        target = transformed["Resources"][f"FetcherFunction{schedule}Schedule"]["Properties"]["Target"]
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}}
