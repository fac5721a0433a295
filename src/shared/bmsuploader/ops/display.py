"""How the operator commands write times, durations and money for people (``--json`` keeps ISO)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from bmsuploader.contract.settings import MICRO


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def local(moment: datetime) -> str:
    """In this machine's time zone, to the minute."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def when(moment: str | datetime | None, now: datetime) -> str:
    """Local time and how long ago: ``2026-11-28 21:00 (3 h ago)``; ``never`` for None."""
    if moment is None:
        return "never"
    at = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    local_time = local(at)
    delta = (now - at).total_seconds()
    return f"{local_time} ({duration(delta)} ago)" if delta >= 0 else f"{local_time} (in {duration(-delta)})"


def usd(micro: int) -> str:
    return f"USD {Decimal(micro) / MICRO:.3f}"
