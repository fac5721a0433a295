"""Login sessions of networks that have them (Bluesky), kept between invocations.

    pk = "SESSION#<destination>"   sk = "SESSION"   session (a map of strings), saved_at

A session is a secret (its tokens post as the account), kept in the state
table, which DynamoDB encrypts at rest; it is never logged. Kept so that a cold
start refreshes the stored session instead of logging in again: Bluesky limits
``createSession`` to a few hundred a day per account.
"""

from __future__ import annotations

from bmsuploader.aws.state.table import StateTable, s
from bmsuploader.contract import clock


def _key(destination: str) -> dict[str, dict[str, str]]:
    return {"pk": s(f"SESSION#{destination}"), "sk": s("SESSION")}


class Sessions(StateTable):
    """:class:`~bmsuploader.post.networks.base.SessionStore` on the state table."""

    def load(self, destination: str) -> dict[str, str] | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=_key(destination), ConsistentRead=True
        ).get("Item")
        if not item or "session" not in item:
            return None
        return {name: value["S"] for name, value in item["session"]["M"].items() if "S" in value}

    def save(self, destination: str, session: dict[str, str]) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item={
                **_key(destination),
                "session": {"M": {name: s(value) for name, value in session.items()}},
                "saved_at": {"N": str(int(clock.epoch()))},
            },
        )
