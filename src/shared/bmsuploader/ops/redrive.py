"""``bmsuploader redrive``: dead-lettered entries back to the queue, once their cause is fixed.

For each message on the dead-letter queue (oldest first per source) it decides:

==========================================  ========  ====================================
the message                                 action    why
==========================================  ========  ====================================
its entry was posted meanwhile              drop      the idempotency record is COMPLETED:
(idempotency record COMPLETED)                        sending it again could only post twice
does not match the message schema, or       keep      it would come straight back here;
renders to no valid post with the current             fix sources.toml (or upgrade) first
sources file
not chosen (``--message-id``)               keep      left as it was
chosen with ``--discard``                   drop      the operator found the post already
                                                      there (a network that cannot check)
marked "check first" (may already be        keep      only the operator can tell (a Discord
posted), not chosen by ``--message-id``               webhook cannot be asked): it goes back
                                                      when named, after a look at the channel
anything else                               redrive   sent to the queue, then deleted here
==========================================  ========  ====================================

A dry run (the default) only reports; ``--yes`` acts. Redriven messages keep
their order within their source and get a fresh deduplication id
(:func:`~bmsuploader.contract.message.redrive_deduplication_id`): the first
send's id may still be inside SQS's 5-minute window. A message is deleted from
the dead-letter queue only after the queue accepted its copy, so an interrupted
redrive loses nothing, and running it again is dropped by SQS as a repeat. A redriven
message's "outcome unknown" mark (:class:`~bmsuploader.aws.idempotency.Attempts`) is
cleared: the operator has looked, so a later transient failure must not send it back here
as "may already be posted".

SQS FIFO hands out at most 10 messages of a source at a time while others are
held (:class:`~bmsuploader.aws.queue.DeadLetters`), so a look shows the oldest
10 per source; ``--yes`` works through the rest in passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bmsuploader.aws.idempotency import PostRecord, PostRecords
from bmsuploader.aws.queue import DeadLetter, DeadLetters, EntryQueue, Outgoing
from bmsuploader.config.sources import SourcesConfig
from bmsuploader.contract.errors import BmsUploaderError
from bmsuploader.contract.message import (
    EntryMessage,
    message_identity,
    parse_message,
    redrive_deduplication_id,
)
from bmsuploader.ops.display import when
from bmsuploader.post.cycle import destination_of, render_for
from bmsuploader.post.destinations import rules_for
from bmsuploader.post.rendering import RenderedPost
from bmsuploader.post.rules import PostRules

#: Seconds a looked-at message stays hidden: long enough to send and delete it.
HOLD_SECONDS = 60
#: Passes of ``--yes`` through the dead-letter queue (each handles up to 10 per source).
MAX_PASSES = 100

REDRIVE, DROP, KEEP = "redrive", "drop", "keep"


@dataclass(frozen=True)
class Candidate:
    """One dead-lettered message and what redrive does with it."""

    letter: DeadLetter
    message: EntryMessage | None
    #: who the message is about, even when it no longer parses
    source: str | None
    entry_id: str | None
    action: str
    why: str
    record: PostRecord | None = None
    post: RenderedPost | None = None
    #: the limit and unit ``post`` was measured by (its destination's network)
    rules: PostRules | None = None


def decide(  # noqa: PLR0911 - one answer per row of the table above
    letter: DeadLetter,
    records: PostRecords,
    sources: SourcesConfig | None,
    chosen: set[str] | None,
    *,
    discard: bool = False,
) -> Candidate:
    source, entry_id = message_identity(letter.body)
    if chosen is not None and letter.message_id not in chosen:
        return Candidate(letter, None, source, entry_id, KEEP, "not chosen")
    if discard:
        return Candidate(letter, None, source, entry_id, DROP, "discarded on request (--discard)")
    try:
        message = parse_message(letter.body)
    except BmsUploaderError as exc:
        return Candidate(letter, None, source, entry_id, KEEP, f"still poison: {exc}")
    record = records.get(message.source, message.entry_id, message.destination)
    if record is not None and record.status == "COMPLETED":
        outcome = (record.data or {}).get("outcome", "posted")
        tweet = (record.data or {}).get("tweet_id")
        why = (
            f"already {outcome}"
            + (f" (tweet {tweet})" if tweet else "")
            + ": sending it again could only post twice"
        )
        return Candidate(letter, message, message.source, message.entry_id, DROP, why, record)
    if letter.check_first and chosen is None:
        why = (
            f"may already be posted on {message.destination_name}: look there, then "
            f"`--message-id {letter.message_id} --yes` posts it, or add `--discard` if it is there"
        )
        return Candidate(letter, message, message.source, message.entry_id, KEEP, why, record)
    try:
        destination = destination_of(sources, message)
        post = render_for(sources, message, destination)
    except BmsUploaderError as exc:
        return Candidate(
            letter, message, message.source, message.entry_id, KEEP, f"still does not render: {exc}"
        )
    rules = rules_for(destination.kind)
    why = (
        "the poster will post it"
        if record is None
        else f"its record is {record.status}; the poster retries it"
    )
    return Candidate(letter, message, message.source, message.entry_id, REDRIVE, why, record, post, rules)


@dataclass
class Outcome:
    redriven: list[Candidate]
    dropped: list[Candidate]
    kept: list[Candidate]
    #: (candidate, error): a send or delete AWS refused; the message stays on the dead-letter queue
    failed: list[tuple[Candidate, str]]


def execute(
    candidates: Sequence[Candidate],
    dead_letters: DeadLetters,
    queue: EntryQueue,
    forget: Callable[[EntryMessage], None] | None = None,
) -> Outcome:
    """Act on one look's decisions: send, then delete; drop; release the rest."""
    outcome = Outcome([], [], [], [])
    to_delete: list[Candidate] = []
    stuck: list[Candidate] = []
    # Each group's order as the look handed it out; a refused send stops everything after
    # it (send_in_order), so nothing overtakes what is still waiting.
    redrives = [c for c in candidates if c.action == REDRIVE]
    messages = [
        Outgoing(
            entry_id=c.entry_id or "",
            body=c.letter.body,
            group_id=c.letter.group_id,
            deduplication_id=redrive_deduplication_id(c.letter.group_id, c.letter.message_id),
        )
        for c in redrives
    ]
    candidate_of = {id(m): c for m, c in zip(messages, redrives, strict=True)}
    unsent = {id(c) for c in redrives}
    for result in queue.send_in_order(messages):
        sent = [candidate_of[id(m)] for m in result.sent]
        unsent.difference_update(id(c) for c in sent)
        to_delete.extend(sent)
        outcome.redriven.extend(sent)
        for c in sent:
            if forget is not None and c.message is not None:
                try:
                    forget(c.message)
                except Exception as exc:  # noqa: BLE001 - reported, the message is sent either way
                    outcome.failed.append(
                        (
                            c,
                            f"sent, but its outcome-unknown mark could not be cleared ({exc}): "
                            "should it fail once more it comes back here",
                        )
                    )
        if result.failed:
            left = [c for c in redrives if id(c) in unsent]
            outcome.failed.extend((c, f"not sent: {result.failed[0][1]}") for c in left)
            stuck.extend(left)
    drops = [c for c in candidates if c.action == DROP]
    outcome.dropped.extend(drops)
    to_delete.extend(drops)
    refused = set(dead_letters.delete([c.letter for c in to_delete]))
    for c in to_delete:
        if c.letter.message_id in refused:
            outcome.failed.append(
                (c, "sent, but the dead-letter copy could not be deleted: run redrive again")
            )
    outcome.kept.extend(c for c in candidates if c.action == KEEP)
    dead_letters.release([c.letter for c in [*outcome.kept, *stuck]])
    return outcome


def redrive(
    dead_letters: DeadLetters,
    decide_one: Callable[[DeadLetter], Candidate],
    queue: EntryQueue | None,
    *,
    chosen: set[str] | None = None,
    forget: Callable[[EntryMessage], None] | None = None,
) -> tuple[list[Candidate], Outcome | None]:
    """Look (``queue`` None: a dry run) or act, pass after pass, until nothing more moves.

    Returns every candidate seen (first look for a dry run) and, when acting, the outcome.
    """
    if queue is None:
        letters = _look(dead_letters)
        candidates = [decide_one(letter) for letter in letters]
        dead_letters.release(letters)
        return candidates, None
    seen: dict[str, Candidate] = {}
    total = Outcome([], [], [], [])
    for _ in range(MAX_PASSES):
        letters = _look(dead_letters)
        candidates = [decide_one(letter) for letter in letters]
        seen.update((c.letter.message_id, c) for c in candidates)
        outcome = execute(candidates, dead_letters, queue, forget)
        total.redriven += outcome.redriven
        total.dropped += outcome.dropped
        total.failed += outcome.failed
        total.kept = outcome.kept  # what is left, as of the last look
        acted = outcome.redriven or outcome.dropped
        if not acted or outcome.failed or (chosen is not None and chosen <= _done(total)):
            break
    return list(seen.values()), total


def _look(dead_letters: DeadLetters) -> list[DeadLetter]:
    waiting = dead_letters.depth().waiting
    return dead_letters.peek(hold_seconds=HOLD_SECONDS, expected=waiting) if waiting else []


def _done(outcome: Outcome) -> set[str]:
    return {c.letter.message_id for c in [*outcome.redriven, *outcome.dropped]}


def to_json(candidate: Candidate, *, preview: bool) -> dict[str, Any]:
    letter = candidate.letter
    line: dict[str, Any] = {
        "message_id": letter.message_id,
        "source": candidate.source,
        "entry_id": candidate.entry_id,
        "reason": letter.reason,
        "in_dead_letter_queue_since": letter.sent_at.isoformat() if letter.sent_at else None,
        "receive_count": letter.receive_count,
        "check_first": letter.check_first,
        "action": candidate.action,
        "why": candidate.why,
    }
    if preview and candidate.post is not None:
        line["text"] = candidate.post.text
        line["weighted_length"] = candidate.post.weighted_length
        if candidate.rules is not None:
            line["limit"] = candidate.rules.limit
    return line


def render(
    candidates: Sequence[Candidate],
    outcome: Outcome | None,
    *,
    preview: bool,
    missing: Sequence[str],
    held: int = 0,
) -> str:
    """For people. ``held``: messages another reader (explain, another redrive) was holding."""
    now = datetime.now(UTC)
    if not candidates and not missing:
        if held:
            return (
                f"the dead-letter queue shows nothing now, but {held} message(s) are held by another "
                "reader (explain hides them for seconds, redrive for a minute): run it again shortly"
            )
        return "the dead-letter queue is empty"
    lines = [f"dead-letter queue: {len(candidates)} message(s), oldest first per source"]
    for number, c in enumerate(candidates, start=1):
        who = f"{c.source or '?'} / {c.entry_id or '?'}"
        lines.append(f"{number:>3}. {who}   message {c.letter.message_id}")
        lines.append(
            f"     there since {when(c.letter.sent_at, now)}, received {c.letter.receive_count} time(s)"
        )
        reason = c.letter.reason or "none recorded: SQS moved it after maxReceiveCount receives"
        lines.append(f"     reason: {reason}")
        lines.append(f"     -> {c.action}: {c.why}")
        if preview and c.post is not None:
            measured = f"{c.post.weighted_length}/{c.rules.limit} {c.rules.unit}" if c.rules else "?"
            lines.append(f"     renders now ({measured}): {c.post.text}")
    for message_id in missing:
        lines.append(
            f"  --message-id {message_id}: not among the messages SQS handed out (already gone, or behind "
            "10 older messages of its source: redrive those first)"
        )
    lines.append("")
    if outcome is None:
        moving = sum(c.action == REDRIVE for c in candidates)
        dropping = sum(c.action == DROP for c in candidates)
        lines.append(
            f"dry run: nothing changed. --yes would send {moving} back to the queue and drop {dropping} "
            "already posted (FIFO shows at most 10 per source at a time; --yes works through the rest)"
        )
    else:
        lines.append(
            f"sent {len(outcome.redriven)} back to the queue, dropped {len(outcome.dropped)} already posted, "
            f"kept {len(outcome.kept)} in the dead-letter queue"
        )
        lines.extend(f"  failed: {c.letter.message_id}: {error}" for c, error in outcome.failed)
    return "\n".join(lines)
