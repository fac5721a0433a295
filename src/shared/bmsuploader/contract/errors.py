"""Typed errors, and the one place that decides what each failure means.

Every failure the pipeline can meet is one of these classes. The decision the
poster acts on -- retry later, park, set aside, or dead-letter one message --
is a property of the class; :func:`bmsuploader.post.cycle.decide` turns any
exception into that decision, and its docstring is the failure table.
"""

from __future__ import annotations

from enum import StrEnum

from bmsuploader.contract.outcomes import Outcome


class Disposition(StrEnum):
    """What the poster does with a message whose processing raised."""

    RETRY = "retry"  # transient: come back later with a growing delay
    PARK = "park"  # systemic (auth, rate limit, budget): hold the queue, burn nothing
    DEAD_LETTER = "dead_letter"  # this message can never succeed: move it to the DLQ
    SET_ASIDE = "set_aside"  # may not go out this month: park it in the DynamoDB backlog


class BmsUploaderError(Exception):
    """Base class. ``str(err)`` is written to be read alone in a log line."""

    disposition: Disposition = Disposition.RETRY
    #: a dead letter of this kind may already be posted: ``bmsuploader redrive`` sends it back
    #: only when the operator names it, after looking at the network (it is marked so)
    check_first: bool = False


# --- configuration -------------------------------------------------------


class ConfigError(BmsUploaderError):
    """The sources file or the environment is invalid. Raised at load time."""

    disposition = Disposition.PARK


# --- fetcher side -------------------------------------------------------------


class SourceError(BmsUploaderError):
    """A source could not be read this run. Other sources still go ahead."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"source {source!r}: {message}")
        self.source = source


class FetchError(SourceError):
    """Network error, timeout or HTTP error after the client's retries."""


class SourceFormatError(SourceError):
    """The page was fetched but does not look like the configured format.

    Zero rows, or rows missing a required field. Never read as "nothing new":
    a layout change must be loud.
    """


# --- poster side --------------------------------------------------------------


class PoisonMessageError(BmsUploaderError):
    """The message itself is unusable (bad JSON, unknown schema version)."""

    disposition = Disposition.DEAD_LETTER


class PublishError(BmsUploaderError):
    """Base for failures reported by the publisher (X)."""

    #: seconds the message should stay invisible before its next attempt;
    #: ``None`` lets the poster pick a growing backoff.
    delay_seconds: int | None = None
    outcome: Outcome = Outcome.RETRY


class TransientPublishError(PublishError):
    """5xx, timeouts, connection errors: try again later."""

    disposition = Disposition.RETRY
    outcome = Outcome.RETRY


class UnknownOutcomeError(TransientPublishError):
    """The request may have reached the network and been accepted (a timeout after
    sending, a connection dropped before the answer). Retried like any transient
    failure, but the poster remembers that the post may exist: the next attempt asks
    the network first where it can (see :mod:`bmsuploader.post.cycle`)."""


class RateLimitedError(PublishError):
    """429: wait until ``x-rate-limit-reset``. Never sleep inside Lambda."""

    disposition = Disposition.PARK
    outcome = Outcome.RATE_LIMITED

    def __init__(self, message: str, delay_seconds: int) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class AuthError(PublishError):
    """401 or a permission 403: the operator must act; messages must not burn."""

    disposition = Disposition.PARK
    outcome = Outcome.AUTH_FAILED


class BudgetExceededError(PublishError):
    """The monthly post budget is used up (or older entries wait in the backlog).

    The message is set aside in the backlog rather than left on the queue:
    SQS keeps a message 14 days at most, the budget may hold it for a month.
    """

    disposition = Disposition.SET_ASIDE
    outcome = Outcome.BUDGET_BLOCKED


class MaybePostedError(PublishError):
    """An earlier attempt may have posted this entry, and the network offers no way to
    check (a Discord webhook cannot list its messages). Posting again could post twice;
    so the message goes to the dead-letter queue with this reason, where the operator
    looks at the channel and redrives it only if the post is missing."""

    disposition = Disposition.DEAD_LETTER
    outcome = Outcome.POISONED
    check_first = True


class PermanentPublishError(PublishError):
    """400 for this one post: X will never accept it. Dead-letter it."""

    disposition = Disposition.DEAD_LETTER
    outcome = Outcome.POISONED
