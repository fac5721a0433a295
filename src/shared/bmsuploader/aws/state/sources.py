"""Per-source state: page validators, the baseline flag, success and failure counters.

pk = "SOURCE#<name>"   sk = "STATE"   etag, last_modified, validators_for, baseline_done, ...

``last_new_at`` serves the operator rather than the fetch: the last run that
found an unseen entry. A source without one for ``SilentSourceHours`` is
reported silent (:meth:`SourceState.silent`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bmsuploader.aws.state.budget import CONTROL_KEY, PosterControl, control_from_item
from bmsuploader.aws.state.table import StateTable, n, s, source_pk

#: Page 1's ids are kept with a source's state up to this many bytes: a listing's 20-50 short
#: ids fit, and the item (about 400 bytes without them) stays within one write unit (1 KB),
#: which every run spends on every source. Longer ones (a difficulty table's thousands of md5
#: ids) keep only ``listing_key``.
LISTED_IDS_MAX_BYTES = 512


@dataclass(frozen=True)
class Validators:
    """HTTP cache validators of a page, stored with the source's state."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class SourceState:
    """What the fetcher remembers about one source between runs."""

    validators: Validators = field(default_factory=Validators)
    #: the page fingerprint (URL + parsing config) the validators belong to
    validators_for: str | None = None
    #: digest of page 1's entry ids when every one of them was known seen: the same
    #: ids next time means nothing new, without asking DynamoDB
    listing_key: str | None = None
    #: those ids themselves, when they fit in :data:`LISTED_IDS_MAX_BYTES`: every one is
    #: seen, so after a change of page 1 only the ids not among them are asked about
    listed_ids: frozenset[str] = frozenset()
    baseline_done: bool = False
    #: validators of the URLs a page links to, keyed by URL, in chain order (a difficulty
    #: table's header and data files: see bmsuploader.fetch.tables); empty for other kinds
    linked: tuple[tuple[str, Validators], ...] = ()
    last_success_at: str | None = None
    last_attempt_at: str | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    #: the last run that found an unseen entry (or the first run the source was watched)
    last_new_at: str | None = None

    def succeeded(
        self,
        now: datetime,
        validators: Validators,
        validators_for: str,
        listing_key: str | None,
        linked: tuple[tuple[str, Validators], ...] = (),
        *,
        listed_ids: Iterable[str] = (),
        found_new: bool = False,
    ) -> SourceState:
        """After a run. Pass empty validators and no listing key (nor ``listed_ids``, page 1's
        ids) when something was left waiting: they vouch that every listed id is seen.

        ``found_new``: the run met unseen entries. A source with no ``last_new_at`` yet
        starts its silence clock now, so an upgrade never reports a source silent at once.
        """
        return replace(
            self,
            last_new_at=now.isoformat() if found_new or not self.last_new_at else self.last_new_at,
            validators=validators,
            linked=linked,
            validators_for=validators_for if validators.etag or validators.last_modified or linked else None,
            listing_key=listing_key,
            listed_ids=_bounded(listed_ids),
            baseline_done=True,
            last_success_at=now.isoformat(),
            last_attempt_at=now.isoformat(),
            consecutive_failures=0,
            last_error=None,
        )

    def silent(self, now: datetime, after_hours: float) -> bool:
        """No unseen entry for ``after_hours`` (0 = never silent): the page may have changed
        in a way the selectors still match, or the uploader moved or stopped."""
        if not after_hours or not self.last_new_at:
            return False
        return now - datetime.fromisoformat(self.last_new_at) >= timedelta(hours=after_hours)

    def failed(self, now: datetime, error: str) -> SourceState:
        return replace(
            self,
            last_attempt_at=now.isoformat(),
            consecutive_failures=self.consecutive_failures + 1,
            last_error=error[:1000],
        )


def _bounded(ids: Iterable[str]) -> frozenset[str]:
    """``ids``, or none when they would make the state item large (:data:`LISTED_IDS_MAX_BYTES`)."""
    kept = frozenset(ids)
    return kept if sum(len(i.encode()) for i in kept) <= LISTED_IDS_MAX_BYTES else frozenset()


class SourceStates(StateTable):
    def put(self, source: str, state: SourceState) -> None:
        """Write one source's state now (the first-run baseline: it must not wait for the run's end)."""
        self.client.put_item(TableName=self.table_name, Item=self.item(source, state))

    def item(self, source: str, state: SourceState) -> dict[str, Any]:
        """The whole state item. The fetcher owns every attribute of it, so a put never
        loses anything, and many go in one BatchWriteItem."""
        values: dict[str, Any] = {
            "pk": s(source_pk(source)),
            "sk": s("STATE"),
            "baseline_done": {"BOOL": state.baseline_done},
            "consecutive_failures": n(state.consecutive_failures),
        }
        optional = {
            "etag": state.validators.etag,
            "last_modified": state.validators.last_modified,
            "validators_for": state.validators_for,
            "listing_key": state.listing_key,
            "linked": json.dumps([[url, v.etag, v.last_modified] for url, v in state.linked])
            if state.linked
            else None,
            "last_success_at": state.last_success_at,
            "last_attempt_at": state.last_attempt_at,
            "last_error": state.last_error,
            "last_new_at": state.last_new_at,
        }
        values.update({key: s(value) for key, value in optional.items() if value})
        if state.listed_ids:  # a string set cannot be empty
            values["listed_ids"] = {"SS": sorted(state.listed_ids)}
        return values

    def run_state(self, names: Sequence[str], month: str) -> tuple[dict[str, SourceState], PosterControl]:
        """Every source's state and the poster's control item, in one BatchGetItem."""
        keys = [{"pk": s(source_pk(name)), "sk": s("STATE")} for name in names]
        keys.append(CONTROL_KEY)
        states: dict[str, SourceState] = {}
        control = PosterControl(month=month)
        for item in self._batch_get(keys):
            if item["pk"]["S"] == "POSTER":
                control = control_from_item(item, month)
            else:
                states[item["pk"]["S"].removeprefix("SOURCE#")] = _state_from_item(item)
        return states, control


def _state_from_item(item: dict[str, Any]) -> SourceState:
    def text(key: str) -> str | None:
        value = item.get(key, {}).get("S")
        return str(value) if value is not None else None

    return SourceState(
        validators=Validators(etag=text("etag"), last_modified=text("last_modified")),
        validators_for=text("validators_for"),
        listing_key=text("listing_key"),
        listed_ids=frozenset(item.get("listed_ids", {}).get("SS", ())),
        linked=tuple(
            (url, Validators(etag=etag, last_modified=modified))
            for url, etag, modified in json.loads(text("linked") or "[]")
        ),
        baseline_done=bool(item.get("baseline_done", {}).get("BOOL", False)),
        last_success_at=text("last_success_at"),
        last_attempt_at=text("last_attempt_at"),
        consecutive_failures=int(item.get("consecutive_failures", {}).get("N", "0")),
        last_error=text("last_error"),
        last_new_at=text("last_new_at"),
    )
