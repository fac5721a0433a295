"""Fetcher stage, parse step for JSON sources: a ``json`` document or a difficulty table.

Pure functions, like :mod:`bmsuploader.fetch.parsing`, and the same contract: a
document with no rows, or a row without a required field, is a
:class:`~bmsuploader.contract.errors.SourceFormatError`, never "nothing new".

Difficulty tables ("bmstable", the format of every 難易度表): an HTML page whose
``<meta name="bmstable" content="header.json">`` names the header; the header
JSON gives ``name``, ``symbol`` and ``data_url`` (relative to the header); the
data JSON is an array of charts (or ``{"charts": [...]}``), each with ``md5``
(or ``sha256``) and ``level``. As in the format's reference parser, a chart
without a level or without a hash is skipped, not an error.

Order: entries come out newest first, as from every other source. A table is
sorted by level, not date, so its last chart counts as its newest: within one
run new charts are announced in the table's order (see README, "Difficulty
tables").
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

from bmsuploader.config.jmespath import JMESPathFailure, search
from bmsuploader.config.sources import JsonSelectors, Source
from bmsuploader.contract.errors import SourceFormatError
from bmsuploader.fetch.parsing import Entry, _collapse, _entry_id, _id_pattern, _resolve

_META = re.compile(r"<meta\b([^>]*)>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"""([A-Za-z_:][-\w:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")


@dataclass(frozen=True, slots=True)
class TableHeader:
    name: str
    symbol: str
    #: absolute: resolved against the header's own (final) URL
    data_url: str


def load_json(source: Source, text: str, what: str) -> Any:
    """A JSON document; a BOM, CR/LF and surrounding blanks are fine."""
    body = text.lstrip("\ufeff").strip()
    if not body:
        raise SourceFormatError(source.name, f"{what} is empty")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise SourceFormatError(source.name, f"{what} is not JSON: {exc}") from exc


# --- json kind ---------------------------------------------------------------------


def parse_json(source: Source, text: str, page_url: str) -> list[Entry]:
    selectors = source.json_selectors
    assert selectors is not None  # Source validation guarantees it for kind "json"
    document = load_json(source, text, "document")
    rows = _select(source, selectors.rows, document, "rows", "document")
    if not isinstance(rows, list):
        raise SourceFormatError(
            source.name, f"json_selectors.rows {selectors.rows!r} gave {_kind(rows)}, not a list of rows"
        )
    if not rows and not source.empty_allowed:
        raise SourceFormatError(
            source.name, f"json_selectors.rows {selectors.rows!r} gave no rows (an error document?)"
        )
    id_pattern = _id_pattern(source.id_regex)
    entries = []
    for number, row in enumerate(rows, start=1):
        where = f"row {number}"

        def field(name: str, expression: str | None, row: Any = row, where: str = where) -> str | None:
            if expression is None:
                return None
            return _text(source, where, name, _select(source, expression, row, name, where))

        def required(name: str, expression: str, row: Any = row, where: str = where) -> str:
            value = field(name, expression, row, where)
            if not value:
                raise SourceFormatError(
                    source.name, f"{where}: {name} is missing (json_selectors.{name} {expression!r})"
                )
            return value

        entry_id, original_id = _entry_id(source, id_pattern, required("entry_id", selectors.entry_id), where)
        extra = tuple((name, value) for name, expr in selectors.extra.items() if (value := field(name, expr)))
        entries.append(
            Entry(
                entry_id=entry_id,
                original_id=original_id,
                title=required("title", selectors.title),
                url=_resolve(source, where, page_url, required("url", selectors.url)),
                comment=field("comment", selectors.comment) or "",
                uploaded_at=field("uploaded_at", selectors.uploaded_at) or None,
                filename=field("filename", selectors.filename) or None,
                size=field("size", selectors.size) or None,
                extra=extra,
            )
        )
    return _newest_first(entries, selectors)


def _newest_first(entries: list[Entry], selectors: JsonSelectors) -> list[Entry]:
    return entries if selectors.newest == "first" else entries[::-1]


def _select(source: Source, expression: str, value: Any, name: str, where: str) -> Any:
    try:
        return search(expression, value)
    except JMESPathFailure as exc:
        raise SourceFormatError(source.name, f"{where}: json_selectors.{name}: {exc}") from exc


def _text(source: Source, where: str, name: str, value: Any) -> str | None:
    """A selected value as text: a string (blanks collapsed) or a number; null is absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SourceFormatError(source.name, f"{where}: {name} is a boolean, not text")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str):
        return _collapse(value)
    raise SourceFormatError(source.name, f"{where}: {name} is {_kind(value)}, not text or a number")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


# --- difficulty tables ---------------------------------------------------------------


def header_url(source: Source, text: str, page_url: str) -> str | None:
    """The header URL named by a table page's ``<meta name="bmstable">`` (attributes in any
    order), or ``None`` when the document is JSON: the header itself."""
    if text.lstrip("\ufeff \t\r\n").startswith("{"):
        return None
    for match in _META.finditer(text):
        attributes = {
            name.lower(): html.unescape("".join(values)).strip()  # one of the three quotings matched
            for name, *values in _ATTRIBUTE.findall(match.group(1))
        }
        if attributes.get("name", "").lower() == "bmstable" and attributes.get("content"):
            return _resolve(source, "table page", page_url, attributes["content"])
    raise SourceFormatError(
        source.name, 'table page has no <meta name="bmstable" content="..."> (not a difficulty table?)'
    )


def parse_header(source: Source, text: str, header_url: str) -> TableHeader:
    document = load_json(source, text, "table header")
    if not isinstance(document, dict):
        raise SourceFormatError(source.name, f"table header is {_kind(document)}, not an object")
    values: dict[str, str] = {}
    for name in ("name", "symbol", "data_url"):
        value = document.get(name)
        if name == "data_url" and isinstance(value, list) and value:
            value = value[0]  # one reference parser accepts several: the first is the table's own
        if not isinstance(value, str) or (name != "symbol" and not value.strip()):
            raise SourceFormatError(source.name, f"table header: {name} is missing (a string is required)")
        values[name] = value.strip()
    return TableHeader(
        name=values["name"],
        symbol=values["symbol"],
        data_url=_resolve(source, "table header", header_url, values["data_url"]),
    )


def parse_charts(source: Source, text: str, data_url: str, *, header: TableHeader | None) -> list[Entry]:
    """A table's charts, newest (last in the table) first. ``header`` None: a saved data file read
    alone, without the table's name and symbol."""
    document = load_json(source, text, "table data")
    charts = document.get("charts") if isinstance(document, dict) else document
    if not isinstance(charts, list):
        raise SourceFormatError(
            source.name, f"table data is {_kind(document)}, not a list of charts (or {{'charts': [...]}})"
        )
    table_fields = (("symbol", header.symbol), ("table", header.name)) if header is not None else ()
    entries = []
    for chart in charts:
        if not isinstance(chart, dict):
            continue
        level = _plain(chart.get("level"))
        key = _plain(chart.get("md5")) or _plain(chart.get("sha256"))
        if not (level and key):
            continue  # the reference parser's rule: a chart needs a level and a hash
        title = _plain(chart.get("title")) or _plain(chart.get("name_diff")) or key
        link = _plain(chart.get("url_diff")) or _plain(chart.get("url"))
        where = f"chart {key}"
        extra = [("level", level), *table_fields]
        if artist := _plain(chart.get("artist")):
            extra.append(("artist", artist))
        if url_diff := _plain(chart.get("url_diff")):
            extra.append(("url_diff", _resolve(source, where, data_url, url_diff)))
        entries.append(
            Entry(
                entry_id=key,
                title=title,
                # No link of its own: the post links to the table.
                url=_resolve(source, where, data_url, link) if link else source.url,
                comment=_plain(chart.get("comment")),
                extra=tuple(extra),
            )
        )
    if not entries and not source.empty_allowed:
        raise SourceFormatError(
            source.name,
            f"table data lists no chart with a level and an md5 or sha256 ({len(charts)} item(s) read)",
        )
    return entries[::-1]


def _plain(value: Any) -> str:
    """A chart field as text: strings collapsed, numbers as written (level 12, 12.5)."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return _collapse(value) if isinstance(value, str) else ""
