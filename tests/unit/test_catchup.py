"""The catch-up walk's rules, on plain data: pages are lists, DynamoDB is a set."""

from __future__ import annotations

import pytest

from bmsuploader.contract.errors import SourceFormatError
from bmsuploader.fetch.catchup import Stop, Walk, page_fully_unseen, take_unseen, walk
from bmsuploader.fetch.parsing import Entry, ParsedPage


def listing(*ids: int) -> list[Entry]:
    """Entries newest first, as an uploader lists them."""
    return [Entry(entry_id=f"{i:05d}", title=f"chart {i}", url=f"http://x/{i}") for i in ids]


def ids(entries: list[Entry]) -> list[str]:
    return [e.entry_id for e in entries]


class Site:
    """Pages of 3, newest first; ``seen`` plays DynamoDB; ``broken`` pages are maintenance pages."""

    def __init__(self, newest: int, seen_up_to: int, *, broken: frozenset[int] = frozenset()) -> None:
        self.all = listing(*range(newest, 0, -1))
        self.seen = {f"{i:05d}" for i in range(1, seen_up_to + 1)}
        self.broken = broken
        self.read: list[int] = []

    def page(self, number: int) -> ParsedPage:
        return ParsedPage(tuple(self.all[(number - 1) * 3 : number * 3]))

    def read_older(self, number: int) -> ParsedPage | None:
        self.read.append(number)
        if number in self.broken:
            raise SourceFormatError("s", "no rows matched")
        return self.page(number)

    def unseen(self, entry_ids: list[str]) -> set[str]:
        return set(entry_ids) - self.seen

    def walk(self, max_pages: int = 5) -> Walk:
        first = self.page(1)
        return walk(
            first,
            self.unseen(ids(list(first.entries))),
            max_pages=max_pages,
            read_older=self.read_older,
            unseen=self.unseen,
        )


def test_no_walk_when_page_one_holds_a_seen_entry() -> None:
    site = Site(newest=10, seen_up_to=8)
    result = site.walk()
    assert ids(result.unseen) == ["00010", "00009"]
    assert result.stop is Stop.SEEN
    assert site.read == []


def test_burst_walks_until_a_page_with_a_seen_entry() -> None:
    site = Site(newest=12, seen_up_to=5)
    result = site.walk()
    assert ids(result.unseen) == [f"{i:05d}" for i in range(12, 5, -1)]
    assert site.read == [2, 3]
    assert result.pages == 3


def test_a_maintenance_page_on_an_older_page_fails_the_walk_instead_of_ending_it() -> None:
    # The defect: a row-less page 2 was read as the end of the listing, so page 1 was
    # sent and marked seen and the uploads on page 2 were lost for good.
    site = Site(newest=12, seen_up_to=5, broken=frozenset({2}))
    with pytest.raises(SourceFormatError):
        site.walk()


def test_a_short_page_ends_the_listing_without_asking_for_the_next() -> None:
    site = Site(newest=5, seen_up_to=0)  # page 1: 5,4,3; page 2: 2,1 (short)
    result = site.walk()
    assert ids(result.unseen) == ["00005", "00004", "00003", "00002", "00001"]
    assert result.stop is Stop.LISTING_ENDED
    assert site.read == [2]


def test_no_next_page_link_ends_the_listing() -> None:
    first = ParsedPage(tuple(listing(3, 2, 1)), has_next=False)
    result = walk(first, {"00003", "00002", "00001"}, max_pages=5, read_older=pytest.fail, unseen=set)
    assert result.stop is Stop.LISTING_ENDED
    assert result.pages == 1


def test_end_of_listing_page_ends_the_walk() -> None:
    first = ParsedPage(tuple(listing(3, 2, 1)))
    result = walk(first, {"00003", "00002", "00001"}, max_pages=5, read_older=lambda n: None, unseen=set)
    assert result.stop is Stop.LISTING_ENDED
    assert ids(result.unseen) == ["00003", "00002", "00001"]


def test_max_pages_stops_the_walk_and_says_so() -> None:
    site = Site(newest=30, seen_up_to=1)
    result = site.walk(max_pages=2)
    assert result.stop is Stop.MAX_PAGES
    assert site.read == [2]


def test_page_fully_unseen() -> None:
    page = listing(3, 2, 1)
    assert page_fully_unseen(page, {"00003", "00002", "00001"})
    assert not page_fully_unseen(page, {"00003", "00002"})
    assert not page_fully_unseen([], set())


def test_take_unseen_skips_ids_already_taken_from_a_newer_page() -> None:
    taken: set[str] = set()
    first = take_unseen(listing(4, 3), {"00004", "00003"}, taken)
    # A new upload pushed 00003 onto page 2 between the two requests.
    second = take_unseen(listing(3, 2, 1), {"00003", "00002"}, taken)
    assert ids(first) == ["00004", "00003"]
    assert ids(second) == ["00002"]
