"""The catch-up walk: after a burst, older listing pages may hold more unseen uploads.

A listing shows only its newest N entries. When every entry on page 1 is
unseen, the uploads just before them may be on page 2 (or further), and
they must be announced too -- before the newer ones, to keep upload order.
Every rule of the walk lives here; :mod:`bmsuploader.fetch.cycle` supplies
the I/O (fetch and parse a page, ask DynamoDB which ids are unseen).

1. **Walk on while a page is wholly unseen.** A page with at least one seen
   entry reaches back into what earlier runs announced: nothing older is new.
2. **Stop without fetching when the listing provably ended**: the page was
   short (fewer entries than page 1), or the source names a next-page link
   (``selectors.next_page``) and the page has none.
3. **A row-less older page is a format error, not the end**, unless the
   source's ``end_of_listing`` pattern is on it. Old CGI uploaders answer
   200 with a maintenance or "busy" page all the time; reading that as the
   end would mark the newer entries seen and strand the older unseen ones
   behind them for good. So the whole source fails this run: nothing is sent
   or marked seen, and the next run walks again.
4. **``max_pages`` is the operator's bound.** Reached while pages are still
   wholly unseen, the walk stops there: what it found is announced and the
   run logs an error and counts ``CatchUpLimit`` -- older uploads beyond it
   are not known. Raise ``max_pages`` for uploaders with big bursts.

A listing shifts while it is walked (a new upload pushes an entry from page
1 to page 2 between two requests), so an id seen on a newer page is skipped
on an older one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bmsuploader.fetch.parsing import Entry, ParsedPage


class Stop(StrEnum):
    """Why the walk stopped."""

    SEEN = "seen"  # a page holds a seen entry: everything older was announced before
    LISTING_ENDED = "listing_ended"  # short page, no next-page link, or the end_of_listing text
    MAX_PAGES = "max_pages"  # the operator's bound; older uploads beyond it are unknown


@dataclass(frozen=True)
class Walk:
    #: unseen entries, newest first
    unseen: list[Entry]
    #: pages read, page 1 included
    pages: int
    stop: Stop


#: reads older page ``n`` (2, 3, ...); ``None`` means the page says the listing ended
ReadOlder = Callable[[int], ParsedPage | None]
#: the ids among those given that DynamoDB has not seen
Unseen = Callable[[list[str]], set[str]]


def page_fully_unseen(page: Sequence[Entry], unseen_ids: set[str]) -> bool:
    """True when every entry on a page is unseen, so an older page may hold more."""
    return bool(page) and all(entry.entry_id in unseen_ids for entry in page)


def take_unseen(page: Sequence[Entry], unseen_ids: set[str], already: set[str]) -> list[Entry]:
    """The unseen entries of a page in page order, skipping ids taken from a newer page."""
    taken: list[Entry] = []
    for entry in page:
        if entry.entry_id in unseen_ids and entry.entry_id not in already:
            taken.append(entry)
            already.add(entry.entry_id)
    return taken


def listing_ended(page: ParsedPage, page_size: int) -> bool:
    """Rule 2: a short page, or a page without a next-page link, is the last one."""
    return len(page.entries) < page_size or page.has_next is False


def walk(
    first: ParsedPage, first_unseen: set[str], *, max_pages: int, read_older: ReadOlder, unseen: Unseen
) -> Walk:
    """Collect the unseen entries of page 1 and of as many older pages as the rules say.

    ``read_older`` raises :class:`~bmsuploader.contract.errors.SourceError` for
    a page that cannot be read or has no rows (rule 3); the caller fails the
    source and nothing of this run is sent.
    """
    taken: set[str] = set()
    collected = take_unseen(first.entries, first_unseen, taken)
    page, page_unseen, number = first, first_unseen, 1
    page_size = len(first.entries)
    while page_fully_unseen(page.entries, page_unseen):
        if listing_ended(page, page_size):
            return Walk(collected, number, Stop.LISTING_ENDED)
        if number >= max_pages:
            return Walk(collected, number, Stop.MAX_PAGES)
        number += 1
        older = read_older(number)
        if older is None:
            return Walk(collected, number, Stop.LISTING_ENDED)
        page = older
        page_unseen = unseen([e.entry_id for e in page.entries])
        collected.extend(take_unseen(page.entries, page_unseen, taken))
    return Walk(collected, number, Stop.SEEN)
