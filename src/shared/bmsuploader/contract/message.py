"""The message between the fetcher and the poster: defined once, versioned.

The fetcher builds an :class:`EntryMessage` for each new upload and sends
``to_json()`` as the SQS body; the poster calls :func:`parse_message` on the
body. Both sides validate against this one model, so a change to the contract
is a change to this file and to ``SCHEMA_VERSION``.

Compatibility rule: a consumer rejects a ``schema_version`` it does not know
(the message is poison and goes to the DLQ, where an operator can replay it
after upgrading), and ignores no fields silently (``extra="forbid"``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bmsuploader.contract.errors import PoisonMessageError

SCHEMA_VERSION: Literal[1] = 1

#: SQS limit for MessageDeduplicationId (and MessageGroupId).
MAX_SQS_ID_LENGTH = 128


class EntryMessage(BaseModel):
    """One new upload, as announced by the fetcher."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    source: str = Field(min_length=1, max_length=64)
    entry_id: str = Field(min_length=1, max_length=256)
    title: str = Field(min_length=1, max_length=2000)
    url: str = Field(min_length=1, max_length=2000)
    comment: str = Field(default="", max_length=4000)
    uploaded_at: str | None = Field(default=None, max_length=100)
    fetched_at: datetime
    # Optional listing details some uploaders show; the template may use them.
    filename: str | None = Field(default=None, max_length=500)
    size: str | None = Field(default=None, max_length=100)

    @property
    def deduplication_id(self) -> str:
        return deduplication_id(self.source, self.entry_id)

    def to_json(self) -> str:
        return self.model_dump_json()


def deduplication_id(source: str, entry_id: str) -> str:
    """SQS MessageDeduplicationId for (source, entry id).

    A SHA-256 hex digest: always 64 characters (the limit is 128) and only
    characters SQS accepts, whatever the entry id contains.
    """
    digest = hashlib.sha256(f"{source}\x00{entry_id}".encode()).hexdigest()
    assert len(digest) <= MAX_SQS_ID_LENGTH
    return digest


def backlog_deduplication_id(source: str, entry_id: str, parked_at: str) -> str:
    """Dedup id for an entry coming back from the backlog.

    It must differ from the first send's id (SQS would drop a repeat within 5
    minutes, and the backlog item is deleted once sent), and from any other
    time the same entry was parked.
    """
    return hashlib.sha256(f"{source}\x00{entry_id}\x00backlog\x00{parked_at}".encode()).hexdigest()


def parse_message(body: str) -> EntryMessage:
    """Validate an SQS body. Anything unusable raises :class:`PoisonMessageError`."""
    try:
        return EntryMessage.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}" for err in exc.errors()
        )
        raise PoisonMessageError(f"message does not match schema v{SCHEMA_VERSION}: {problems}") from exc
