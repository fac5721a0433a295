"""The message between the fetcher and the poster: defined once, versioned.

The fetcher builds an :class:`EntryMessage` for each new upload and sends
``to_json()`` as the SQS body; the poster calls :func:`parse_message` on the
body. Both sides validate against this one model, so a change to the contract
is a change to this file and to ``SCHEMA_VERSION``.

Compatibility rule: a consumer rejects a ``schema_version`` it does not know
(the message is poison and goes to the DLQ, where an operator can replay it
after upgrading), and ignores no fields silently (``extra="forbid"``).

Additions within version 1 are optional fields that :meth:`EntryMessage.to_json`
leaves out while they are unset, so a message that does not need one is
byte-for-byte what an earlier v1 fetcher sent, and any v1 poster reads it:

* ``original_entry_id`` -- set only when the entry's own id was too long to
  be a key (see :func:`stable_entry_id`). Such entries used to fail their
  source on every run and were never sent, so no existing message has it;
  a message that carries it needs a poster of this version (both functions
  ship in the same layer, in one deploy).
* ``extra`` -- the fields a ``json`` or ``bmstable`` source selects beyond the
  standard ones (``level``, ``symbol``, ``artist``, ``url_diff``...), for the
  template. At most 16, names of at most 32 characters, values of at most 500.
  Only entries of those new kinds carry it, so no message in flight at the
  deploy has it; an older v1 poster would refuse one (``extra="forbid"``), and
  both functions ship in one deploy.
* ``destination`` -- the destination (network account) the message is for, by
  name (:mod:`bmsuploader.config.destinations`). Unset means the destination
  named ``x``: a message for X is byte-for-byte a single-X message, with the same
  group, deduplication id and idempotency key, so an upgrade neither reorders nor
  re-posts what is in flight. A message with it set needs a poster of this version
  (both functions ship in one deploy).

Keys: the FIFO group is the source, or ``<source>~<destination>``; the
deduplication id and the idempotency key include the destination when it is set.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bmsuploader.contract.errors import PoisonMessageError

SCHEMA_VERSION: Literal[1] = 1

#: SQS limit for MessageDeduplicationId (and MessageGroupId).
MAX_SQS_ID_LENGTH = 128
#: An entry id is a key: in the message, in the poster's idempotency record and in
#: the seen-entry item, whose sort key "ENTRY#<id>" DynamoDB caps at 1,024 bytes.
MAX_ENTRY_ID_LENGTH = 256
MAX_ENTRY_ID_BYTES = 1000
#: An entry's link. Longer is not a download link (browsers and servers give up
#: around 2,000-8,000); the fetcher reports such an entry as a format error.
MAX_URL_LENGTH = 2000
#: Bounds of ``EntryMessage.extra``: a few short fields, never a second comment.
MAX_EXTRA_FIELDS = 16
MAX_EXTRA_VALUE_LENGTH = 500
_SHORT_ID_PREFIX = 120


class EntryMessage(BaseModel):
    """One new upload, as announced by the fetcher."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    source: str = Field(min_length=1, max_length=64)
    entry_id: str = Field(min_length=1, max_length=MAX_ENTRY_ID_LENGTH)
    title: str = Field(min_length=1, max_length=2000)
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    comment: str = Field(default="", max_length=4000)
    uploaded_at: str | None = Field(default=None, max_length=100)
    fetched_at: datetime
    # Optional listing details some uploaders show; the template may use them.
    filename: str | None = Field(default=None, max_length=500)
    size: str | None = Field(default=None, max_length=100)
    #: The id as the source wrote it, when ``entry_id`` is its short form (see the
    #: module docstring for compatibility). Informational: the key is ``entry_id``.
    original_entry_id: str | None = Field(default=None, max_length=4000)
    #: A JSON or table source's extra fields, by name (see the module docstring).
    extra: (
        dict[
            Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")],
            Annotated[str, Field(max_length=MAX_EXTRA_VALUE_LENGTH)],
        ]
        | None
    ) = Field(default=None, max_length=MAX_EXTRA_FIELDS)
    #: The destination by name; unset = the one named ``x`` (see the module docstring).
    destination: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")

    @property
    def destination_name(self) -> str:
        return self.destination or "x"

    @property
    def group_id(self) -> str:
        """The FIFO MessageGroupId: order is kept per (destination, source)."""
        return group_id(self.source, self.destination)

    @property
    def deduplication_id(self) -> str:
        return deduplication_id(self.source, self.entry_id, self.destination)

    def for_destination(self, destination: str | None) -> EntryMessage:
        """The same entry, addressed to another destination."""
        return self.model_copy(update={"destination": destination})

    def to_json(self) -> str:
        # Unset additions are left out, so older v1 posters read the message.
        unset = {
            name for name in ("original_entry_id", "extra", "destination") if getattr(self, name) is None
        }
        return self.model_dump_json(exclude=unset or None)


#: Between source and destination in a group id: in SQS's group-id character set,
#: and in neither a source name nor a destination name, so the split is unambiguous.
GROUP_SEPARATOR = "~"


def group_id(source: str, destination: str | None) -> str:
    return source if destination is None else f"{source}{GROUP_SEPARATOR}{destination}"


def stable_entry_id(raw: str) -> str:
    """The id an entry is known by: ``raw`` itself, or its short form when ``raw``
    is too long to be a key (over 256 characters or 1,000 UTF-8 bytes).

    The short form is the first 120 characters (so logs stay readable), then
    ``…sha256:`` and the SHA-256 of the whole id: the same every run, so the entry
    is deduplicated like any other, and distinct for ids that differ only at the
    end. Ids within the limits are unchanged, so entries already seen stay seen.
    """
    encoded = raw.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_ENTRY_ID_LENGTH and len(encoded) <= MAX_ENTRY_ID_BYTES:
        return raw
    return f"{raw[:_SHORT_ID_PREFIX]}…sha256:{hashlib.sha256(encoded).hexdigest()}"


def deduplication_id(source: str, entry_id: str, destination: str | None = None) -> str:
    """SQS MessageDeduplicationId for (source, entry id[, destination]).

    A SHA-256 hex digest: always 64 characters (the limit is 128) and only
    characters SQS accepts, whatever the entry id contains.
    """
    tail = "" if destination is None else f"\x00{destination}"
    digest = hashlib.sha256(f"{source}\x00{entry_id}{tail}".encode()).hexdigest()
    assert len(digest) <= MAX_SQS_ID_LENGTH
    return digest


def backlog_deduplication_id(source: str, entry_id: str, parked_at: str) -> str:
    """Dedup id for an entry coming back from the backlog.

    It must differ from the first send's id (SQS would drop a repeat within 5
    minutes, and the backlog item is deleted once sent), and from any other
    time the same entry was parked.
    """
    return hashlib.sha256(f"{source}\x00{entry_id}\x00backlog\x00{parked_at}".encode()).hexdigest()


def redrive_deduplication_id(group_id: str, dead_letter_id: str) -> str:
    """Dedup id for a message moved back from the dead-letter queue (``bmsuploader redrive``).

    Fresh -- the first send's id may still be inside SQS's 5-minute window --
    and derived from the dead-letter message's own id, so a redrive that is
    interrupted after sending and run again is dropped by SQS as a repeat.
    """
    return hashlib.sha256(f"{group_id}\x00redrive\x00{dead_letter_id}".encode()).hexdigest()


def message_identity(body: str) -> tuple[str | None, str | None]:
    """(source, entry id) of a body, read leniently: a body that fails the schema may still carry them."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    source, entry_id = data.get("source"), data.get("entry_id")
    return (source if isinstance(source, str) else None, entry_id if isinstance(entry_id, str) else None)


def parse_message(body: str) -> EntryMessage:
    """Validate an SQS body. Anything unusable raises :class:`PoisonMessageError`."""
    try:
        return EntryMessage.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}" for err in exc.errors()
        )
        raise PoisonMessageError(f"message does not match schema v{SCHEMA_VERSION}: {problems}") from exc
