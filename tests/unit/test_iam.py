"""The functions' roles, pinned: every action on which resource, and who calls it.

The integration tests hold these to the code (tests/integration/iam.py): a
handler call no statement allows fails the test that made it, and a statement
for the code that no call of the whole suite used fails test_iam.py there.
This table is the reviewed list; change it together with template.yaml.
"""

from __future__ import annotations

from typing import Any

from tests.unit.test_template import TEMPLATE_PATH, load_template

#: role -> Sid -> (actions, resource). The resource is the logical id of ``!GetAtt X.Arn``, or
#: the ``!Sub`` string. "Logs" and "EventSourceMapping" serve the Lambda service, not the code.
ROLES: dict[str, dict[str, tuple[set[str], str]]] = {
    "FetcherRole": {
        "Logs": ({"logs:CreateLogStream", "logs:PutLogEvents"}, "FetcherLogGroup"),
        "StateTable": (
            {
                "dynamodb:PutItem",  # Leases.acquire (conditional), SourceStates.put
                "dynamodb:BatchGetItem",  # SourceStates.run_state, SeenEntries.unseen
                # SeenEntries.mark_seen, StateStore.finish_run (states and the lease), Backlog.unpark
                "dynamodb:BatchWriteItem",
                "dynamodb:UpdateItem",  # Backlog.drained
                "dynamodb:Query",  # Backlog.oldest
            },
            "StateTable",
        ),
        "EntriesQueue": ({"sqs:SendMessage"}, "Queue"),  # EntryQueue.send: SendMessageBatch
    },
    "PosterRole": {
        "Logs": ({"logs:CreateLogStream", "logs:PutLogEvents"}, "PosterLogGroup"),
        "EventSourceMapping": (
            {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
            "Queue",
        ),
        "EntriesQueue": ({"sqs:ChangeMessageVisibility"}, "Queue"),  # QueueControl.delay (batch)
        "DeadLetterQueue": ({"sqs:SendMessage"}, "DeadLetterQueue"),  # QueueControl.dead_letter
        # PostBudget.reserve/release (UpdateItem); Backlog.park (a Put and an Update in one
        # transaction); Sessions.load/save (GetItem, PutItem: Bluesky's stored session)
        "StateTable": ({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}, "StateTable"),
        # Powertools DynamoDBPersistenceLayer: _put_record, _update_record, _delete_record;
        # ours: Attempts.maybe_posted (BatchGetItem), Attempts.remember_unknown (PutItem)
        "IdempotencyTable": (
            {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchGetItem"},
            "IdempotencyTable",
        ),
        # publishing.load_credentials: Powertools get_parameters_by_name(decrypt=True) -> GetParameters
        "XCredentials": (
            {"ssm:GetParameters"},
            "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${XParameterPath}/*",
        ),
        # post.secrets.load_secrets for the other destinations: GetParameters
        "DestinationSecrets": (
            {"ssm:GetParameters"},
            "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${DestinationsParameterPath}/*",
        ),
    },
}


def _resource(expression: Any) -> str:
    if "Fn::GetAtt" in expression:
        logical, attribute = expression["Fn::GetAtt"]
        assert attribute == "Arn", expression
        return str(logical)
    return str(expression["Fn::Sub"])


def test_roles_grant_exactly_the_pinned_actions() -> None:
    template = load_template(TEMPLATE_PATH)
    found: dict[str, dict[str, tuple[set[str], str]]] = {}
    for role in ROLES:
        properties = template["Resources"][role]["Properties"]
        assert properties["AssumeRolePolicyDocument"]["Statement"] == [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
        assert "ManagedPolicyArns" not in properties
        statements = [s for p in properties["Policies"] for s in p["PolicyDocument"]["Statement"]]
        for statement in statements:
            assert set(statement) == {"Sid", "Effect", "Action", "Resource"}
            assert statement["Effect"] == "Allow"
            actions = statement["Action"]
            found.setdefault(role, {})[statement["Sid"]] = (
                {actions} if isinstance(actions, str) else set(actions),
                _resource(statement["Resource"]),
            )
        assert len(statements) == len(found[role]), f"{role}: Sids must be unique"
    assert found == ROLES


def test_no_wildcards_and_no_discovery_actions() -> None:
    for statements in ROLES.values():
        for actions, resource in statements.values():
            assert not any("*" in action for action in actions)
            assert not resource.endswith(":*") and resource != "*"
            # what the old policy templates granted and no code calls
            assert not actions & {
                "ssm:DescribeParameters",
                "ssm:GetParametersByPath",
                "ssm:GetParameter",
                "dynamodb:Scan",
                "dynamodb:DescribeTable",
                "dynamodb:ConditionCheckItem",
            }
