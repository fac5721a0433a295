"""Lint SAM templates the way CloudFormation will see them: SAM transform first, then cfn-lint.

    .venv-sam/bin/python scripts/sam_lint.py template.yaml [more.yaml ...] [--json]

cfn-lint (so `sam validate --lint`) no longer runs the SAM transform: it checks
``AWS::Serverless::*`` resources against SAM's schemas only, which accepted
``Runtime: python9`` and ``Timeout: 1000`` on a function. This script expands
the template with aws-sam-translator, as the CloudFormation service does on
deploy, and lints the ``AWS::Lambda::Function``/``AWS::IAM::Role``/... it
produces. It needs aws-sam-translator and cfn-lint, which the SAM CLI's
virtualenv has (.venv-sam); the project's own virtualenv does not, because
aws-sam-translator pins pydantic and would hold back what the layer ships.

Exit status 1 when any template has a match. ``--json`` prints, per template,
the matches and the transformed template (tests/unit/test_transformed.py reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REGION = "ap-northeast-1"  # samconfig.toml's region; the transform needs one


def transform(template_path: Path) -> dict[str, Any]:
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.yaml_helper import yaml_parse

    template: dict[str, Any] = yaml_parse(template_path.read_text(encoding="utf-8"))
    # Local code folders become S3 URIs, as `sam package` makes them before the transform runs.
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://bmsuploader-artifacts/{properties[key]}"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    # No managed policy names are resolved: the template uses none (the roles are its own).
    translator = Translator(managed_policy_map={}, sam_parser=Parser())
    transformed: dict[str, Any] = translator.translate(sam_template=template, parameter_values={})
    return transformed


def lint(transformed: dict[str, Any]) -> list[str]:
    from cfnlint.api import ManualArgs, lint

    matches = lint(json.dumps(transformed), config=ManualArgs(regions=[REGION], include_checks=["I"]))
    return [f"{m.rule.id} {m.message} (at {'/'.join(map(str, m.path))})" for m in matches]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("templates", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="print matches and transformed templates as JSON")
    args = parser.parse_args()

    results = []
    for path in args.templates:
        transformed = transform(path)
        results.append({"template": str(path), "matches": lint(transformed), "transformed": transformed})
    if args.json:
        json.dump(results, sys.stdout)
    else:
        for result in results:
            for match in result["matches"]:
                print(f"{result['template']}: {match}")
            print(f"{result['template']}: {len(result['matches'])} match(es) after the SAM transform")
    return 1 if any(r["matches"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
