"""The SQS FIFO edge: the fetcher sends entries, the poster delays and
dead-letters them.

FIFO semantics this relies on (see the field notes):

* order is strict within a MessageGroupId (= the source name), and only one
  batch per group is in flight;
* a MessageDeduplicationId (derived from source + entry id) repeated within
  5 minutes is accepted but not delivered again -- after that it is, which is
  why the fetcher's seen-marks and the poster's idempotency still matter;
* ChangeMessageVisibility on a received message sets when it comes back (at
  most 12 h): the poster's way of waiting without sleeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import batched
from typing import TYPE_CHECKING, Any

from bmsuploader.aws import clients
from bmsuploader.contract.message import EntryMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

SEND_BATCH_LIMIT = 10
#: SQS caps a message's *total* visibility since it was received at 12 h;
#: keep a margin for the time the invocation has already run.
MAX_VISIBILITY_SECONDS = 12 * 60 * 60 - 5 * 60


def clamp_visibility(seconds: int) -> int:
    """The delay SQS will accept for a received message: the one owner of the cap."""
    return max(0, min(seconds, MAX_VISIBILITY_SECONDS))


#: Message attribute carried by an entry re-queued from the backlog: its
#: original position, so parking it again keeps upload order.
BACKLOG_ORDER_ATTRIBUTE = "backlog_order"


@dataclass(frozen=True)
class Outgoing:
    """One message to send: body, group (the source), dedup id, and where it came from."""

    entry_id: str
    body: str
    group_id: str
    deduplication_id: str
    backlog_order: str | None = None

    @classmethod
    def of(cls, message: EntryMessage) -> Outgoing:
        return cls(message.entry_id, message.to_json(), message.source, message.deduplication_id)


@dataclass
class SendResult:
    """Messages sent, in order, up to the first failure; the rest wait."""

    sent: list[Outgoing] = field(default_factory=list)
    failed: list[tuple[Outgoing, str]] = field(default_factory=list)


class EntryQueue:
    """The fetcher's side of the queue."""

    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        self.queue_url = queue_url
        self.client: SQSClient = client or clients.sqs()

    def send_batch(self, messages: Sequence[EntryMessage]) -> SendResult:
        """Send new entries (see :meth:`send`)."""
        return self.send([Outgoing.of(message) for message in messages])

    def send(self, messages: Sequence[Outgoing]) -> SendResult:
        """Send up to 10 messages (oldest first) with one SendMessageBatch.

        Only the messages before the first failure count as sent: a later
        message that SQS accepted is left unseen and sent again next run, so
        nothing overtakes an entry that is still waiting. The FIFO dedup id
        drops the repeat within 5 minutes; after that the poster's
        idempotency does.
        """
        if len(messages) > SEND_BATCH_LIMIT:
            raise ValueError(f"at most {SEND_BATCH_LIMIT} messages per batch")
        if not messages:
            return SendResult()
        entries: list[Any] = []
        for index, message in enumerate(messages):
            entry: dict[str, Any] = {
                "Id": str(index),
                "MessageBody": message.body,
                "MessageGroupId": message.group_id,
                "MessageDeduplicationId": message.deduplication_id,
            }
            if message.backlog_order is not None:
                entry["MessageAttributes"] = {
                    BACKLOG_ORDER_ATTRIBUTE: {"DataType": "String", "StringValue": message.backlog_order}
                }
            entries.append(entry)
        response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        failures = {
            int(f["Id"]): f"{f.get('Code')}: {f.get('Message', '')}" for f in response.get("Failed", [])
        }
        result = SendResult()
        for index, message in enumerate(messages):
            if index in failures:
                result.failed.append((message, failures[index]))
            elif result.failed:
                result.failed.append((message, "sent after an earlier failure; will be sent again in order"))
            else:
                result.sent.append(message)
        return result


@dataclass(frozen=True)
class Delay:
    receipt_handle: str
    message_id: str
    seconds: int


class QueueControl:
    """The poster's side: hold messages back, and dead-letter poison."""

    def __init__(self, queue_url: str, dlq_url: str, client: SQSClient | None = None) -> None:
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self.client: SQSClient = client or clients.sqs()

    def delay(self, delays: Sequence[Delay]) -> list[str]:
        """Set each message's visibility timeout; returns the ids that failed."""
        failed: list[str] = []
        for chunk in batched(delays, SEND_BATCH_LIMIT, strict=False):
            response = self.client.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {
                        "Id": str(index),
                        "ReceiptHandle": d.receipt_handle,
                        "VisibilityTimeout": clamp_visibility(d.seconds),
                    }
                    for index, d in enumerate(chunk)
                ],
            )
            failed.extend(chunk[int(f["Id"])].message_id for f in response.get("Failed", []))
        return failed

    def dead_letter(self, *, body: str, group_id: str, deduplication_id: str, reason: str) -> str:
        """Copy a poison message to the DLQ with its reason; returns the DLQ message id.

        The caller then lets the original succeed, so it is deleted and its
        group carries on. If this send fails it raises, and the original stays
        on the queue: nothing is lost.
        """
        attributes: dict[str, Any] = {
            "reason": {"DataType": "String", "StringValue": reason[:1000] or "unknown"},
        }
        response = self.client.send_message(
            QueueUrl=self.dlq_url,
            MessageBody=body,
            MessageGroupId=group_id,
            MessageDeduplicationId=deduplication_id,
            MessageAttributes=attributes,
        )
        return response["MessageId"]
