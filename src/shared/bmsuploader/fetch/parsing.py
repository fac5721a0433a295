"""Fetcher stage, step 3 of 3 (fetch -> decode -> **parse**): decoded page to entries.

Pure functions: text in, :class:`Entry` list out. Site knowledge stays in the
source configuration (XPath selectors, ``id_regex``); this module only knows
the three shapes a source can have: an ``html`` listing, an RSS 2.0 feed and
an Atom feed.

A page that does not look like its configuration raises
:class:`~bmsuploader.contract.errors.SourceFormatError` -- zero rows, a row without a
required field, a feed that is not XML. "Nothing parsed" must never read as
"nothing new": that is how a layout change goes unnoticed for weeks.

Feeds are read by their own rules, as a feed reader shows them:

* RSS: ``guid`` (else ``link``) is the id, ``link`` the URL, ``title`` plain
  text, ``description`` escaped HTML (tags dropped), ``pubDate`` RFC 822.
  HTML's named entities (``&copy;``, ``&nbsp;``), which RSS 0.91's DTD
  declares and many feeds use without one, are read as their characters.
* Atom: ``id`` is the id, ``link`` (``rel="alternate"`` or no ``rel``) the
  URL, ``title`` and ``summary`` (else ``content``) text constructs read by
  their ``type``: ``text`` (the default) as written, ``html`` as escaped
  HTML, ``xhtml`` as inline XHTML; ``published`` (else ``updated``) the date.

Odd bytes are read, not crashed on: text is first made something lxml can
hold (:func:`_readable`), and every failure that one row or item can cause
-- a selector that cannot be evaluated on this page, a link that is not a
URL -- is a :class:`SourceFormatError` naming the row or item and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from html.entities import html5 as _HTML_ENTITIES
from operator import itemgetter
from typing import Any, NamedTuple, NoReturn, cast
from urllib.parse import urljoin

from lxml import etree
from pydantic import ValidationError

from bmsuploader.config.sources import Selectors, Source
from bmsuploader.config.xpath import NAMESPACES, XPathKind, check_xpath, compile_xpath
from bmsuploader.contract.errors import SourceFormatError
from bmsuploader.contract.message import (
    MAX_EXTRA_VALUE_LENGTH,
    MAX_URL_LENGTH,
    EntryMessage,
    stable_entry_id,
)

ATOM_NS = "http://www.w3.org/2005/Atom"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_A = {"a": ATOM_NS}

# Feeds come from the network: no external entities, no DTD fetches, no
# billion-laughs expansion. A broken feed must fail loudly, so no recover=True.
_FEED_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    huge_tree=False,
    remove_blank_text=True,
)
# Pinned to UTF-8: the text is already decoded (see _html_document).
_HTML_PARSER = etree.HTMLParser(encoding="utf-8", no_network=True)
_XML_DECLARATION = re.compile(r"^\ufeff?\s*<\?xml\b[^>]*\?>")
_WHITESPACE = re.compile(r"\s+")
# What lxml cannot hold in a tree: C0 controls but tab, LF and CR; lone
# surrogates; U+FFFE and U+FFFF. A NUL would otherwise become U+FFFD in libxml2.
# (U+FDD0 and U+FDD1, noncharacters, go too: _RowReader uses them to join fields and rows.)
_NOT_XML_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufdd0\ufdd1\ufffe\uffff]")
_LINE_BREAKS = ("br", "p", "div", "li", "tr")
_OPENS_A_LINE = frozenset({"p", "div", "li"})
_XHTML_LINE_BREAKS = tuple(f"{{{XHTML_NS}}}{tag}" for tag in _LINE_BREAKS)
_XHTML_OPENS_A_LINE = frozenset(f"{{{XHTML_NS}}}{tag}" for tag in _OPENS_A_LINE)
# An HTML named entity outside CDATA sections and comments; XML's own five stay as they are.
_ENTITY_OR_SKIP = re.compile(r"<!\[CDATA\[.*?\]\]>|<!--.*?-->|&([A-Za-z][A-Za-z0-9]*);", re.DOTALL)
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})
_STRING_VALUE = etree.XPath("string()", smart_strings=False)
_ATOM_LINKS = etree.XPath("a:link[@rel='alternate' or not(@rel)]/@href", namespaces=_A, smart_strings=False)


class Entry(NamedTuple):
    """One upload as listed on a source page.

    An immutable record; a NamedTuple rather than a frozen dataclass because
    a listing makes hundreds per page and a frozen dataclass takes twice as
    long to build (one ``object.__setattr__`` per field).
    """

    #: the key: the source's id, or its short form (:func:`stable_entry_id`)
    entry_id: str
    title: str
    url: str
    comment: str = ""
    uploaded_at: str | None = None
    filename: str | None = None
    size: str | None = None
    #: the source's id when ``entry_id`` is its short form
    original_id: str | None = None
    #: a JSON or table source's extra fields for the template, as (name, value) pairs
    extra: tuple[tuple[str, str], ...] = ()

    def to_message(self, source: str, fetched_at: datetime) -> EntryMessage:
        """The queue message for this entry.

        Free text is cut to the message schema's limits: one absurdly long
        comment on a listing must not make the whole run fail validation.
        Parsing never yields an entry the schema refuses (ids are shortened,
        long URLs are format errors); should one slip through, it is a
        :class:`SourceFormatError` of the source, not an untyped crash.
        """
        try:
            return EntryMessage(
                source=source,
                entry_id=self.entry_id,
                title=_fit("title", self.title),
                url=self.url,
                comment=_fit("comment", self.comment),
                uploaded_at=_fit_optional("uploaded_at", self.uploaded_at),
                fetched_at=fetched_at,
                filename=_fit_optional("filename", self.filename),
                size=_fit_optional("size", self.size),
                original_entry_id=_fit_optional("original_entry_id", self.original_id),
                extra={name: _cut(value, MAX_EXTRA_VALUE_LENGTH) for name, value in self.extra} or None,
            )
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SourceFormatError(source, f"entry {self.entry_id!r}: {problems}") from exc


@dataclass(frozen=True, slots=True)
class ParsedPage:
    """One page, read: its entries and what reading it noticed."""

    #: in page order (newest first on every source kind), one per id
    entries: tuple[Entry, ...]
    #: the id of every entry dropped because an earlier one on the page had it
    #: (RSS items sharing a guid, a row listed twice); the fetcher logs and counts them
    duplicate_ids: tuple[str, ...] = ()
    #: whether the page links to an older page (``selectors.next_page``); ``None``
    #: when the source does not say how to tell
    has_next: bool | None = None

    @property
    def duplicates(self) -> int:
        return len(self.duplicate_ids)

    @property
    def empty(self) -> bool:
        """A page that lists nothing, and may (``Source.empty_allowed``): a quiet
        feed, or a listing showing its ``end_of_listing`` text. Any other page
        without entries is a :class:`SourceFormatError`, never an empty page."""
        return not self.entries


def parse_page(source: Source, text: str, *, page_url: str) -> ParsedPage:
    """Read one page. ``page_url`` is the URL it was actually served from (after
    redirects); relative links are resolved against it."""
    has_next = None
    if source.kind == "html":
        entries, has_next = _parse_html(source, text, page_url)
    elif source.kind == "rss":
        entries = _parse_rss(source, text, page_url)
    elif source.kind == "atom":
        entries = _parse_atom(source, text, page_url)
    else:
        # Imported here: the JSON readers build this module's Entry.
        from bmsuploader.fetch.json_parsing import parse_charts, parse_json  # noqa: PLC0415

        if source.kind == "json":
            entries = parse_json(source, text, page_url)
        else:  # a saved data JSON of a table, without its header (`bmsuploader parse --page`)
            entries = parse_charts(source, text, page_url, header=None)
    return unique_entries(entries, has_next)


def unique_entries(entries: list[Entry], has_next: bool | None = None) -> ParsedPage:
    """A page of ``entries``, the first of each id kept and the others' ids noted."""
    unique: dict[str, Entry] = {}
    duplicates: list[str] = []
    for entry in entries:
        if entry.entry_id in unique:
            duplicates.append(entry.entry_id)
        else:
            unique[entry.entry_id] = entry
    return ParsedPage(tuple(unique.values()), tuple(duplicates), has_next)


def parse_listing(source: Source, text: str, *, page_url: str) -> list[Entry]:
    """The entries of :func:`parse_page`, in page order, first occurrence of each id kept."""
    return list(parse_page(source, text, page_url=page_url).entries)


# --- html ---------------------------------------------------------------------


def _parse_html(source: Source, text: str, page_url: str) -> tuple[list[Entry], bool | None]:
    selectors = source.selectors
    assert selectors is not None  # Source validation guarantees it for kind "html"
    document = _html_document(source, text)
    has_next = None
    if selectors.next_page is not None:
        has_next = _xpath_text(_evaluate(source, document, selectors.next_page, "next_page", "page")) not in (
            None,
            "",
        )
    reader = _row_reader(selectors)
    rows = reader.read_page(source, document)
    if not rows:
        if source.empty_allowed and source.end_of_listing and re.search(source.end_of_listing, text):
            return [], has_next
        raise SourceFormatError(
            source.name,
            f"no rows matched selectors.row {selectors.row!r} (layout changed, or an error page?)",
        )

    id_pattern = _id_pattern(source.id_regex)
    entries = []
    for number, (raw_id, cell_title, link, comment, uploaded_at, filename, size) in enumerate(rows, start=1):
        # An upload without a comment is normal on these uploaders; the empty
        # cell is there, so name it after its file. A missing cell is an error.
        title = filename if cell_title == "" and filename else cell_title
        where = f"row {number}"
        if not (raw_id and title and link):
            _missing_field(source, where, raw_id, title, link)
        entry_id, original_id = _entry_id(source, id_pattern, raw_id, where)
        entries.append(
            Entry(
                entry_id=entry_id,
                title=title,
                url=_resolve(source, where, page_url, link),
                comment=comment or "",
                uploaded_at=uploaded_at or None,
                filename=filename or None,
                size=size or None,
                original_id=original_id,
            )
        )
    return entries, has_next


def _missing_field(
    source: Source, where: str, raw_id: str | None, title: str | None, link: str | None
) -> NoReturn:
    """The format error for the first required field of a row that is missing."""
    selectors = source.selectors
    assert selectors is not None
    _required(source, where, "entry_id", raw_id, f"selectors.entry_id {selectors.entry_id!r}")
    _required(source, where, "title", title, f"selectors.title {selectors.title!r}")
    _required(source, where, "url", link, f"selectors.url {selectors.url!r}")
    raise SourceFormatError(source.name, f"{where}: a required field is missing")


#: The fields a row yields, in the order :meth:`_RowReader.read` returns them.
_FIELDS = ("entry_id", "title", "url", "comment", "uploaded_at", "filename", "size")
# Join the fields of a row, and the rows of a page, in one call. Noncharacters:
# _readable removes them from every page, so they cannot occur in a value.
_SEPARATOR = "\ufdd0"
_ROW_END = "\ufdd1"
_XSL = "http://www.w3.org/1999/XSL/Transform"

RowFields = tuple[str | None, str | None, str | None, str | None, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class _RowReader:
    """Reads a page's rows with as few calls into libxml2 as the selectors allow.

    One ``concat(string(A), SEP, string(B), ...)`` over every distinct node-set
    or string selector (the preset's ``entry_id`` and ``url`` are one
    expression) gives a row's fields at once, and a compiled XSLT runs it for
    every row of the page in a single call: a call into libxml2 costs more
    than the work it does on one row. ``string()`` of a node-set is the
    string-value of its first node, which is :func:`_xpath_text`'s answer
    whenever that is not empty. An empty value -- a missing cell (``None``), an
    empty one (``""``), or a first node that is blank before a later one with
    text -- is read again the exact way, row by row, as are number and boolean
    selectors and every row when the transform cannot run.
    """

    row: str
    #: every row's ``joined`` in one call, rows ended by ``_ROW_END``
    transform: etree.XSLT | None
    joined: etree.XPath | None
    #: for each part of ``joined``, the indexes (in :data:`_FIELDS`) it answers
    slots: tuple[tuple[int, ...], ...]
    #: picks the fields, in :data:`_FIELDS` order, from the parts of ``joined``
    #: plus a trailing ``None`` (for fields not configured)
    pick: Callable[[list[str | None]], RowFields]
    #: (index, field, expression) of every configured field, for the exact reading
    exact: tuple[tuple[int, str, str], ...]
    #: indexes read the exact way on every row (number and boolean selectors)
    always_exact: frozenset[int]

    def read_page(self, source: Source, document: etree._Element) -> list[RowFields]:
        """Every row's fields, in page order; a typed error when a row cannot be read."""
        fields: list[RowFields | None] | None = None
        if self.transform is not None:
            try:
                output = str(self.transform(document))
            except etree.XSLTError:
                output = None  # read row by row below: the error then names the row and field
            if output is not None:
                records = output.split(_ROW_END)
                records.pop()  # what follows the last row's end
                fields = [self._fields(record) for record in records]
        if fields is not None and fields and None not in fields:
            return fields  # type: ignore[return-value]  # no None in it
        rows = _evaluate(source, document, self.row, "row", "page")
        if not isinstance(rows, list):
            raise SourceFormatError(source.name, f"selectors.row {self.row!r} must select elements")
        if fields is None or len(fields) != len(rows):
            fields = [None] * len(rows)
        exact: list[RowFields] = []
        for number, (known, row) in enumerate(zip(fields, rows, strict=True), start=1):
            if not isinstance(row, etree._Element):
                raise SourceFormatError(source.name, f"selectors.row {self.row!r} must select elements")
            exact.append(known if known is not None else self.read(source, row, number))
        return exact

    def _fields(self, record: str) -> RowFields | None:
        """A row's fields from its part of the transform's output; ``None``: read it exactly."""
        parts: list[str | None] = [" ".join(part.split()) for part in record.split(_SEPARATOR)]
        if len(parts) != len(self.slots) or not all(parts):
            return None
        parts.append(None)
        return self.pick(parts)

    def read(self, source: Source, row: etree._Element, number: int) -> RowFields:
        if self.joined is not None and not self.always_exact:
            # The common case, kept lean: one call, and every value non-empty.
            try:
                joined = cast(str, self.joined(row))  # a string expression: lxml returns a str
                parts: list[str | None] = [" ".join(p.split()) for p in joined.split(_SEPARATOR)]
            except (etree.XPathError, re.error):
                parts = []  # read each field alone below: the error then names the field
            if len(parts) == len(self.slots) and all(parts):
                parts.append(None)
                return self.pick(parts)
        return self._read_exactly(source, row, number)

    def _read_exactly(self, source: Source, row: etree._Element, number: int) -> RowFields:
        values: list[str | None] = [None] * len(_FIELDS)
        again = set(self.always_exact)
        parts: list[str] = []
        if self.joined is not None:
            try:
                parts = str(self.joined(row)).split(_SEPARATOR)
            except (etree.XPathError, re.error):
                parts = []
        if len(parts) == len(self.slots):
            for part, indexes in zip(parts, self.slots, strict=True):
                value = " ".join(part.split())
                for index in indexes:
                    values[index] = value
                    if not value:
                        again.add(index)
        else:
            again.update(index for indexes in self.slots for index in indexes)
        for index, name, expression in self.exact:
            if index in again:
                values[index] = _xpath_text(_evaluate(source, row, expression, name, f"row {number}"))
        return tuple(values)  # type: ignore[return-value]  # length is len(_FIELDS)


@lru_cache(maxsize=256)
def _row_reader(selectors: Selectors) -> _RowReader:
    """The reader for a source's selectors, built once per process (selectors are
    frozen and hashable, so every source with the same selectors shares it)."""
    exact = tuple(
        (index, name, expression)
        for index, name in enumerate(_FIELDS)
        if (expression := getattr(selectors, name)) is not None
    )
    grouped: dict[str, list[int]] = {}
    always_exact: set[int] = set()
    for index, _, expression in exact:
        if check_xpath(expression, "row") in (XPathKind.NODES, XPathKind.STRING):
            grouped.setdefault(expression, []).append(index)
        else:
            always_exact.add(index)
    parts = [e if check_xpath(e, "row") is XPathKind.STRING else f"string({e})" for e in grouped]
    joined = transform = None
    if parts:
        combined = parts[0] if len(parts) == 1 else f"concat({f", '{_SEPARATOR}', ".join(parts)})"
        try:
            joined = compile_xpath(combined)
        except etree.XPathSyntaxError:  # cannot happen for checked parts; read one by one if it does
            always_exact.update(index for indexes in grouped.values() for index in indexes)
            grouped = {}
        else:
            if not always_exact:
                transform = _page_transform(selectors.row, combined)
    slots = tuple(tuple(indexes) for indexes in grouped.values())
    part_of = {index: part for part, indexes in enumerate(slots) for index in indexes}
    return _RowReader(
        row=selectors.row,
        transform=transform,
        joined=joined,
        slots=slots,
        pick=itemgetter(*(part_of.get(index, len(slots)) for index in range(len(_FIELDS)))),
        exact=exact,
        always_exact=frozenset(always_exact),
    )


def _page_transform(row: str, joined: str) -> etree.XSLT | None:
    """An XSLT that writes ``joined`` for every row, each followed by ``_ROW_END``.

    Built as a tree, so no selector needs escaping; evaluated from the root
    element, as the row selector is elsewhere. A row that is not an element
    writes nothing, which sends the page to the exact reading and its error.
    The selectors passed the load-time check, so they call no XSLT function
    (``document()`` is not allowed); access control denies files and network anyway.
    """
    uses_regexp = "re:" in row or "re:" in joined
    namespaces = {"xsl": _XSL, **(NAMESPACES if uses_regexp else {})}
    stylesheet = etree.Element(f"{{{_XSL}}}stylesheet", nsmap=namespaces, version="1.0")
    etree.SubElement(stylesheet, f"{{{_XSL}}}output", method="text", encoding="UTF-8")
    template = etree.SubElement(stylesheet, f"{{{_XSL}}}template", match="/")
    root = etree.SubElement(template, f"{{{_XSL}}}for-each", select="*")
    each_row = etree.SubElement(root, f"{{{_XSL}}}for-each", select=row)
    element = etree.SubElement(each_row, f"{{{_XSL}}}if", test="self::*")
    etree.SubElement(element, f"{{{_XSL}}}value-of", select=joined)
    etree.SubElement(each_row, f"{{{_XSL}}}text").text = _ROW_END
    try:
        deny_all = etree.XSLTAccessControl.DENY_ALL  # type: ignore[attr-defined]  # missing in lxml-stubs
        return etree.XSLT(stylesheet, regexp=uses_regexp, access_control=deny_all)
    except etree.XSLTParseError:  # not expected for checked selectors: read row by row
        return None


def _html_document(source: Source, text: str) -> etree._Element:
    """lxml's HTML tree of a page, line breaks read as spaces."""
    readable = _readable(text)
    if not readable.strip():
        raise SourceFormatError(source.name, "page is empty")
    # Parse UTF-8 bytes with the encoding pinned: the text is already decoded,
    # and a leftover <meta charset=Shift_JIS> must not make libxml2 decode it again.
    try:
        document = etree.fromstring(readable.encode("utf-8"), _HTML_PARSER)
    except etree.XMLSyntaxError as exc:
        raise SourceFormatError(source.name, f"page is not parseable HTML: {exc}") from exc
    if document is None:
        raise SourceFormatError(source.name, "page is empty")
    _space_line_breaks(document)
    return document


def _evaluate(source: Source, context: etree._Element, expression: str, name: str, where: str) -> Any:
    """A selector's result. The config check tried it on a sample page; what that
    could not reach (a type error in a predicate) is a format error here."""
    try:
        return compile_xpath(expression)(context)
    except (etree.XPathError, re.error) as exc:
        raise SourceFormatError(
            source.name, f"{where}: selectors.{name} {expression!r} cannot be evaluated: {exc}"
        ) from exc


def _xpath_text(result: Any) -> str | None:
    """Text of an XPath result: ``None`` if it matched nothing, else collapsed text.

    A list (elements, attributes, text nodes) gives its first non-empty item, so
    ``td[2]`` and ``td[2]/text()`` both work; a number from ``count()`` is its digits.
    """
    items = result if isinstance(result, list) else [result]
    if not items:
        return None
    for item in items:
        if isinstance(item, etree._Element):
            # string() is the XPath string-value: all descendant text, no comments.
            value = _collapse(_string_value(item))
        elif isinstance(item, bool):
            value = "true" if item else ""
        elif isinstance(item, float):
            value = str(int(item)) if item.is_integer() else str(item)
        else:
            value = _collapse(str(item))
        if value:
            return value
    return ""


# --- feeds --------------------------------------------------------------------


def _parse_feed(source: Source, text: str) -> etree._Element:
    # lxml refuses a str that carries an encoding declaration, and the text is
    # already decoded anyway: drop the declaration and hand over UTF-8 bytes.
    body = _XML_DECLARATION.sub("", _readable(text), count=1).lstrip("\ufeff").strip()
    if not body:
        raise SourceFormatError(source.name, "feed is empty")
    if "&" in body:
        body = _ENTITY_OR_SKIP.sub(_character_reference, body)
    try:
        return etree.fromstring(body.encode("utf-8"), parser=_FEED_PARSER)
    except etree.XMLSyntaxError as exc:
        raise SourceFormatError(source.name, f"feed is not well-formed XML: {exc}") from exc


def _character_reference(match: re.Match[str]) -> str:
    """``&copy;`` -> ``&#169;``: the character, in a form XML needs no DTD for."""
    name = match.group(1)
    if name is None or name in _XML_ENTITIES:
        return match.group()
    characters = _HTML_ENTITIES.get(f"{name};")
    if characters is None:
        return match.group()  # not HTML's either: left to the parser (an external DTD's, or an error)
    return "".join(f"&#{ord(c)};" for c in characters)


def _parse_rss(source: Source, text: str, page_url: str) -> list[Entry]:
    root = _parse_feed(source, text)
    if root.tag != "rss":
        raise SourceFormatError(source.name, f"expected an RSS 2.0 <rss> document, got <{root.tag}>")
    id_pattern = _id_pattern(source.id_regex)
    channel = root.find("channel")
    if channel is None:
        raise SourceFormatError(source.name, "feed has no <channel>")
    items = channel.findall("item")
    if not items and not source.empty_allowed:
        raise SourceFormatError(source.name, "feed has no items (allow_empty = false for this source)")
    entries = []
    for number, item in enumerate(items, start=1):
        where = f"item {number}"
        link = _child_text(item, "link")
        raw_id = _required(source, where, "entry_id", _child_text(item, "guid") or link, "no guid or link")
        entry_id, original_id = _entry_id(source, id_pattern, raw_id, where)
        entries.append(
            Entry(
                entry_id=entry_id,
                original_id=original_id,
                title=_required(source, where, "title", _child_text(item, "title"), "<title>"),
                url=_resolve(source, where, page_url, _required(source, where, "url", link, "<link>")),
                comment=_strip_tags(_child_text(item, "description")),
                uploaded_at=_rfc822_to_iso(_child_text(item, "pubDate")),
            )
        )
    return entries


def _parse_atom(source: Source, text: str, page_url: str) -> list[Entry]:
    root = _parse_feed(source, text)
    if root.tag != f"{{{ATOM_NS}}}feed":
        raise SourceFormatError(source.name, f"expected an Atom <feed> document, got <{root.tag}>")
    id_pattern = _id_pattern(source.id_regex)
    items = root.findall("a:entry", _A)
    if not items and not source.empty_allowed:
        raise SourceFormatError(
            source.name, "feed has no items (<entry>; allow_empty = false for this source)"
        )
    entries = []
    for number, item in enumerate(items, start=1):
        where = f"entry {number}"
        raw_id = _required(source, where, "entry_id", _child_text(item, "a:id"), "<id>")
        title = _required(source, where, "title", _atom_text(item, "a:title"), "<title>")
        hrefs = _ATOM_LINKS(item)
        link = _collapse(str(hrefs[0])) if isinstance(hrefs, list) and hrefs else ""
        when = _child_text(item, "a:published") or _child_text(item, "a:updated")
        entry_id, original_id = _entry_id(source, id_pattern, raw_id, where)
        entries.append(
            Entry(
                entry_id=entry_id,
                original_id=original_id,
                title=title,
                url=_resolve(
                    source, where, page_url, _required(source, where, "url", link, "<link rel='alternate'>")
                ),
                comment=_atom_text(item, "a:summary") or _atom_text(item, "a:content"),
                uploaded_at=_iso_or_raw(when),
            )
        )
    return entries


def _required(source: Source, where: str, name: str, value: str | None, origin: str) -> str:
    """A required field's value, or the format error that names the row, field and origin."""
    if not value:
        raise SourceFormatError(source.name, f"{where}: {name} is missing ({origin})")
    return value


def _resolve(source: Source, where: str, page_url: str, link: str) -> str:
    """``link`` resolved against the page's URL; a link that is not a URL is a format error."""
    try:
        url = _urljoin(page_url, link)
    except ValueError as exc:  # e.g. "http://[::1": Invalid IPv6 URL
        raise SourceFormatError(
            source.name, f"{where}: url {link!r} (on {page_url!r}) is not a URL: {exc}"
        ) from exc
    if len(url) > MAX_URL_LENGTH:
        # Cutting it would post a broken link; no download link is this long.
        raise SourceFormatError(
            source.name,
            f"{where}: url is {len(url)} characters, over the limit of {MAX_URL_LENGTH} "
            f"(not a download link the bot can announce): {url[:80]!r}...",
        )
    return url


def _urljoin(base: str, link: str) -> str:
    """:func:`urllib.parse.urljoin`, with each directory resolved once per page.

    The rows of a listing link into one or two directories (``./src/up00123.zip``,
    ``upload.cgi?get=00123``), and urljoin costs as much as reading a row. When the
    link's last path segment is a plain name (not ``.``/``..``, no ``:``) after a
    directory part that is not a bare authority, joining the directory and
    appending the name and the query is the same URL (RFC 3986 5.2: the last
    segment of a merged path is kept as it is, and query and fragment come from
    the link); anything else goes to urljoin whole.
    """
    path_end = len(link)
    for mark in "?#":
        if 0 <= (found := link.find(mark)) < path_end:
            path_end = found
    directory, slash, name = link[:path_end].rpartition("/")
    query, hash_mark, fragment = link[path_end:].partition("#")
    if (
        not name
        or name in (".", "..")
        or ":" in name
        or directory.endswith("/")
        or query == "?"  # urljoin drops an empty query or fragment with its mark
        or (hash_mark and not fragment)
    ):
        return urljoin(base, link)
    return _join_directory(base, directory + slash if slash else "./") + name + link[path_end:]


@lru_cache(maxsize=1024)
def _join_directory(base: str, directory: str) -> str:
    return urljoin(base, directory)


def _atom_text(parent: etree._Element, path: str) -> str:
    """An Atom text construct (RFC 4287 3.1; ``content``, 4.1.3), read by its ``type``."""
    element = parent.find(path, _A)
    if element is None or element.get("src") is not None:  # absent, or content out of line
        return ""
    kind = (element.get("type") or "text").strip().lower()
    if kind in ("html", "text/html"):
        return _strip_tags(_string_value(element))
    if kind in ("xhtml", "application/xhtml+xml"):
        div = element.find(f"{{{XHTML_NS}}}div")
        node = element if div is None else div
        _space_line_breaks(node, _XHTML_LINE_BREAKS, _XHTML_OPENS_A_LINE)
        return _collapse(_string_value(node))
    if kind == "text" or kind.startswith("text/"):
        return _collapse(_string_value(element))
    return ""  # another media type (e.g. base64 data): not text to announce


def _child_text(parent: etree._Element, path: str) -> str:
    child = parent.find(path, _A)
    return "" if child is None else _collapse(_string_value(child))


def _strip_tags(markup: str) -> str:
    """Plain text of an HTML fragment (RSS descriptions are escaped HTML).

    Parsed as a whole document with the plain HTML parser: ``lxml.html``'s
    fragment functions assert on markup such as ``<!DOCTYPE><SCRIPT`` ("too
    many bodies"). Script and style bodies are code, not text.
    """
    if "<" not in markup and "&" not in markup:
        return _collapse(markup)
    try:
        document = etree.fromstring(markup.encode("utf-8"), _HTML_PARSER)
    except etree.XMLSyntaxError:
        return _collapse(markup)
    if document is None:
        return ""
    etree.strip_elements(document, "script", "style", with_tail=False)
    _space_line_breaks(document)
    return _collapse(_string_value(document))


def _space_line_breaks(
    root: etree._Element,
    tags: tuple[str, ...] = _LINE_BREAKS,
    opening: frozenset[str] = _OPENS_A_LINE,
) -> None:
    """Make ``曲名<br>追加音源`` and ``曲名<p>追加音源</p>`` read "曲名 追加音源", not "曲名追加音源".

    A space after each line break or block, and at the start of a paragraph,
    division or list item. (Safe to set: the text went through :func:`_readable`.)
    """
    for element in root.iter(*tags):
        if element.tag in opening:
            element.text = " " + (element.text or "")
        element.tail = " " + (element.tail or "")


def _rfc822_to_iso(value: str) -> str | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError, IndexError):
        return value


def _iso_or_raw(value: str) -> str | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return value


# --- shared -------------------------------------------------------------------


def _entry_id(
    source: Source, id_pattern: re.Pattern[str] | None, value: str, where: str
) -> tuple[str, str | None]:
    """The entry's key and, when the key is a short form, the source's own id."""
    own = _apply_id_regex(source, id_pattern, value, where)
    key = stable_entry_id(own)
    return key, (None if key == own else own)


@lru_cache(maxsize=256)
def _id_pattern(id_regex: str | None) -> re.Pattern[str] | None:
    return None if id_regex is None else re.compile(id_regex)


def _apply_id_regex(source: Source, id_pattern: re.Pattern[str] | None, value: str, where: str) -> str:
    # No id_regex: the value is the id. That is right for a feed's guid/id; a
    # digits-only default would turn "tag:example.com,2005:123" into "2005"
    # and "http://host:8080/..." into "8080" for every item.
    if id_pattern is None:
        return value
    match = id_pattern.search(value)
    if match is None:
        raise SourceFormatError(
            source.name,
            f"{where}: entry_id is missing: id_regex {source.id_regex!r} does not match {value!r}",
        )
    entry_id = match.group(1) if match.re.groups else match.group(0)
    if not entry_id:
        raise SourceFormatError(
            source.name, f"{where}: entry_id is missing: id_regex matched an empty string"
        )
    return entry_id


def _string_value(element: etree._Element) -> str:
    """XPath's string-value: all descendant text, no comments."""
    return str(_STRING_VALUE(element))


def _readable(text: str) -> str:
    """``text`` without what no reader sees and lxml cannot hold (see ``_NOT_XML_TEXT``)."""
    return _NOT_XML_TEXT.sub("", text)


def _collapse(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip()


def _max_length(field_name: str) -> int:
    for constraint in EntryMessage.model_fields[field_name].metadata:
        limit = getattr(constraint, "max_length", None)
        if isinstance(limit, int):
            return limit
    raise AssertionError(f"EntryMessage.{field_name} has no max_length")


def _fit(field_name: str, value: str) -> str:
    return _cut(value, _max_length(field_name))


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _fit_optional(field_name: str, value: str | None) -> str | None:
    return None if value is None else _fit(field_name, value)
