"""The SQS FIFO edge: the fetcher sends entries, the poster delays and
dead-letters them, the operator commands count and redrive them.

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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
#: Message attribute of a message the poster dead-lettered: why.
REASON_ATTRIBUTE = "reason"
#: set on a dead letter that may already be posted (a network that cannot be asked)
CHECK_FIRST_ATTRIBUTE = "check_first"


@dataclass(frozen=True)
class Outgoing:
    """One message to send: body, group (source, or source~destination), dedup id, and where it came from."""

    entry_id: str
    body: str
    group_id: str
    deduplication_id: str
    backlog_order: str | None = None

    @classmethod
    def of(cls, message: EntryMessage) -> Outgoing:
        return cls(message.entry_id, message.to_json(), message.group_id, message.deduplication_id)


@dataclass
class SendResult:
    """One batch: the messages SQS took, and those it refused, with its reason."""

    sent: list[Outgoing] = field(default_factory=list)
    failed: list[tuple[Outgoing, str]] = field(default_factory=list)


class EntryQueue:
    """The fetcher's side of the queue."""

    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        self.queue_url = queue_url
        self.client: SQSClient = client or clients.sqs()

    def send_batch(self, messages: Sequence[EntryMessage]) -> SendResult:
        """Send entries in order (:meth:`send_in_order`); what was sent and what was not."""
        total = SendResult()
        outgoing = [Outgoing.of(message) for message in messages]
        for result in self.send_in_order(outgoing):
            total.sent.extend(result.sent)
            total.failed.extend(result.failed)
        if total.failed:
            done = {id(m) for m in total.sent} | {id(m) for m, _ in total.failed}
            total.failed.extend(
                (m, "not sent: an earlier send failed") for m in outgoing if id(m) not in done
            )
        return total

    def send_in_order(self, messages: Sequence[Outgoing]) -> Iterator[SendResult]:
        """Send ``messages`` (oldest first) so that each group keeps its order whatever SQS does.

        SendMessageBatch reports each entry on its own, and nothing documents that a
        failed entry fails the later entries of its group. So a batch holds at most one
        message of a group, and a message goes only after every earlier message of its
        group was sent: a failure can never leave a later message of its group on the
        queue ahead of it. Groups interleave, so a run with new entries in several
        sources (or for several destinations) still sends 10 at a time.

        Yields each batch's result. Stops after the first batch with a failure: its
        other messages were sent; the failed one and everything not yet sent wait
        (the caller leaves them for the next run, in order).
        """
        pending = list(messages)
        while pending:
            batch: list[Outgoing] = []
            rest: list[Outgoing] = []
            taken: set[str] = set()
            # A message waits when its group is in the batch already or the batch is full; a
            # full batch stays full, so no later message of a waiting group can overtake it.
            for message in pending:
                if len(batch) < SEND_BATCH_LIMIT and message.group_id not in taken:
                    batch.append(message)
                    taken.add(message.group_id)
                else:
                    rest.append(message)
            result = self.send(batch)
            yield result
            if result.failed:
                return
            pending = rest

    def send(self, messages: Sequence[Outgoing]) -> SendResult:
        """Send up to 10 messages of distinct groups with one SendMessageBatch.

        Each message is reported on its own (see :meth:`send_in_order`, which every
        caller uses so that a group's order holds).
        """
        if len(messages) > SEND_BATCH_LIMIT:
            raise ValueError(f"at most {SEND_BATCH_LIMIT} messages per batch")
        if len({m.group_id for m in messages}) != len(messages):
            raise ValueError("at most one message per group in a batch (see send_in_order)")
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

    def dead_letter(
        self, *, body: str, group_id: str, deduplication_id: str, reason: str, check_first: bool = False
    ) -> str:
        """Copy a poison message to the DLQ with its reason; returns the DLQ message id.

        The caller then lets the original succeed, so it is deleted and its
        group carries on. If this send fails it raises, and the original stays
        on the queue: nothing is lost. ``check_first``: it may already be posted
        (:attr:`~bmsuploader.contract.errors.BmsUploaderError.check_first`); the mark is an
        attribute of its own, so tools never have to read the reason's wording.
        """
        attributes: dict[str, Any] = {
            REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000] or "unknown"},
        }
        if check_first:
            attributes[CHECK_FIRST_ATTRIBUTE] = {"DataType": "String", "StringValue": "may already be posted"}
        response = self.client.send_message(
            QueueUrl=self.dlq_url,
            MessageBody=body,
            MessageGroupId=group_id,
            MessageDeduplicationId=deduplication_id,
            MessageAttributes=attributes,
        )
        return response["MessageId"]


# --- what the operator commands read ----------------------------------------------


@dataclass(frozen=True)
class QueueDepth:
    """SQS's approximate counts (GetQueueAttributes; they lag by up to a minute)."""

    #: visible: waiting for the poster
    waiting: int
    #: received and not yet deleted: being posted, or parked by the poster (rate limit, auth, retry)
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.waiting + self.in_flight + self.delayed


def queue_depth(client: SQSClient, queue_url: str) -> QueueDepth:
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return QueueDepth(
        waiting=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


@dataclass(frozen=True)
class DeadLetter:
    """A message on the dead-letter queue, as received (held invisible for a while)."""

    message_id: str
    receipt_handle: str
    body: str
    group_id: str
    #: the poster's reason; None when SQS moved it after maxReceiveCount receives
    reason: str | None
    sent_at: datetime | None
    receive_count: int
    #: it may already be posted: redriven only when the operator names it
    check_first: bool = False


#: Most messages one look at the dead-letter queue collects.
PEEK_LIMIT = 1000


class DeadLetters:
    """The dead-letter queue as the operator commands read and empty it.

    Reading a FIFO queue means receiving: each received message is invisible
    for ``hold_seconds``, and while any message of a group is, SQS hands out no
    later message of that group. So one look returns at most 10 messages per
    source (the oldest), and :meth:`release` makes them visible again at once.
    Nothing consumes this queue but ``bmsuploader redrive``; the main queue is
    never received from here, as that would hold its group back from the poster.
    """

    def __init__(self, dlq_url: str, client: SQSClient | None = None) -> None:
        self.dlq_url = dlq_url
        self.client: SQSClient = client or clients.sqs()

    def peek(
        self, *, hold_seconds: int, expected: int | None = None, wait_seconds: int = 1
    ) -> list[DeadLetter]:
        """Every message SQS hands out now, oldest first per group, each hidden for ``hold_seconds``.

        Long polls (``wait_seconds``), so that an answer with nothing new means nothing is
        left to hand out, not a short poll's sampling miss; having ``expected`` messages
        (the queue's count) ends the look without that last wait. A hold shorter than the
        look is fine: a message handed out twice is counted once.
        """
        letters: dict[str, DeadLetter] = {}
        while len(letters) < min(expected or PEEK_LIMIT, PEEK_LIMIT):
            response = self.client.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=SEND_BATCH_LIMIT,
                VisibilityTimeout=hold_seconds,
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=[REASON_ATTRIBUTE, CHECK_FIRST_ATTRIBUTE],
            )
            new = [m for m in response.get("Messages", []) if m["MessageId"] not in letters]
            if not new:
                break
            letters.update((m["MessageId"], _dead_letter(m)) for m in new)
        return list(letters.values())

    def depth(self) -> QueueDepth:
        return queue_depth(self.client, self.dlq_url)

    def release(self, letters: Sequence[DeadLetter]) -> None:
        """Make messages received by :meth:`peek` visible again now."""
        for chunk in batched(letters, SEND_BATCH_LIMIT, strict=False):
            self.client.change_message_visibility_batch(
                QueueUrl=self.dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                    for i, letter in enumerate(chunk)
                ],
            )

    def delete(self, letters: Sequence[DeadLetter]) -> list[str]:
        """Delete messages received by :meth:`peek`; returns the ids SQS refused."""
        failed: list[str] = []
        for chunk in batched(letters, SEND_BATCH_LIMIT, strict=False):
            response = self.client.delete_message_batch(
                QueueUrl=self.dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": letter.receipt_handle} for i, letter in enumerate(chunk)
                ],
            )
            failed.extend(chunk[int(f["Id"])].message_id for f in response.get("Failed", []))
        return failed


def _dead_letter(message: Any) -> DeadLetter:
    attributes = message.get("Attributes", {})
    marks = message.get("MessageAttributes", {})
    reason = marks.get(REASON_ATTRIBUTE, {}).get("StringValue")
    sent = attributes.get("SentTimestamp")
    return DeadLetter(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        body=message["Body"],
        group_id=attributes.get("MessageGroupId", ""),
        reason=reason,
        sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
        receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
        check_first=CHECK_FIRST_ATTRIBUTE in marks,
    )
