"""The one clock both functions read.

Production reads the system clock. The fault test (``make chaos``) replaces the
source with a virtual clock through :func:`use`, so leases, budgets and
backlog stamps follow simulated time without sleeping. Nothing else calls
``datetime.now`` in the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


def _system() -> datetime:
    return datetime.now(UTC)


_source: Callable[[], datetime] = _system


def now() -> datetime:
    """The current time (timezone-aware, UTC)."""
    return _source()


def epoch() -> float:
    """The current time in seconds since the epoch: what a rate limit's reset is compared with."""
    return _source().timestamp()


def use(source: Callable[[], datetime] | None) -> None:
    """Read time from ``source`` from now on; ``None`` restores the system clock."""
    global _source  # noqa: PLW0603 - the one process-wide clock, swapped only by the fault test
    _source = source or _system
