"""Fetcher stage for difficulty tables: page -> header -> data, each with conditional GET.

A ``bmstable`` source's ``url`` is the table's HTML page (or its header JSON).
Reading it takes up to three GETs; each carries the validators stored for
*that* URL (the state keeps them in order, as the chain: header, data), so an
unchanged table costs three 304s and no parsing. A data file that changed
under an unchanged header needs the header's name and symbol: the header is
then fetched again without validators (it is small; the data is what can be
megabytes). A ``data_url`` that redirects (Google Apps Script) is followed by
the client; relative URLs resolve against the final URL of what named them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from bmsuploader.aws.state import Validators
from bmsuploader.config.sources import Source
from bmsuploader.fetch.fetching import Page, PageFetcher
from bmsuploader.fetch.json_parsing import TableHeader, header_url, parse_charts, parse_header
from bmsuploader.fetch.parsing import ParsedPage, unique_entries

#: The URLs after the table's own page and their validators, in chain order: [header,] data.
Linked = tuple[tuple[str, Validators], ...]


@dataclass(frozen=True)
class TableRead:
    #: the data file as page 1: its text and URL, the table page's validators;
    #: ``not_modified`` when the data file answered 304
    page: Page
    #: the charts, newest (last in the table) first; None when not modified
    parsed: ParsedPage | None
    linked: Linked
    requests: int


def read_table(
    pages: PageFetcher,
    source: Source,
    *,
    validators: Validators | None,
    linked: Linked,
    budget: Callable[[], float | None] = lambda: None,
) -> TableRead:
    requests = 0
    stored = dict(linked)

    def get(url: str, known: Validators | None, encoding: str | None) -> Page:
        nonlocal requests
        requests += 1
        return pages.fetch(
            url, source=source.name, validators=known, encoding=encoding, budget_seconds=budget()
        )

    first = get(source.url, validators if linked else None, source.encoding)
    if first.not_modified and not linked:
        first = get(source.url, None, source.encoding)  # nothing stored to follow
    chain: list[tuple[str, Validators]] = []
    header_page: Page | None = None
    if first.not_modified:
        header_location = linked[0][0] if len(linked) == 2 else None
    else:
        header_location = header_url(source, first.text, first.url)
        if header_location is None:
            header_page = first  # the URL is the header itself
    if header_location is not None:
        header_page = get(header_location, stored.get(header_location), "utf-8")
        chain.append((header_location, header_page.validators))
    header: TableHeader | None = None
    if header_page is not None and not header_page.not_modified:
        header = parse_header(source, header_page.text, header_page.url)
    data_location = header.data_url if header is not None else linked[-1][0]
    data = get(data_location, stored.get(data_location), "utf-8")
    chain.append((data_location, data.validators))
    page = replace(data, validators=first.validators)
    if data.not_modified:
        return TableRead(page, None, tuple(chain), requests)
    if header is None:
        # The data changed under an unchanged header: its name and symbol are needed.
        again = get(header_location or source.url, None, "utf-8" if header_location else source.encoding)
        header = parse_header(source, again.text, again.url)
    charts = parse_charts(source, data.text, data.url, header=header)
    return TableRead(page, unique_entries(charts), tuple(chain), requests)
