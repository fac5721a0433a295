"""JSON sources and difficulty tables: config, parsing, the message's extra fields, rendering."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from bmsuploader.config.sources import parse_sources
from bmsuploader.contract.errors import ConfigError, SourceFormatError
from bmsuploader.contract.message import EntryMessage, parse_message
from bmsuploader.fetch.json_parsing import TableHeader, header_url, parse_charts, parse_header
from bmsuploader.fetch.parsing import parse_page
from bmsuploader.post.rendering import render_post

NOW = datetime(2026, 11, 29, tzinfo=UTC)
BOM = "\ufeff"


def source(**fields: Any) -> Any:
    raw = {"name": "s", "url": "https://example.com/api/list.json", **fields}
    return parse_sources({"source": [raw]}).sources[0]


def json_source(**fields: Any) -> Any:
    selectors = {"rows": "items", "entry_id": "id", "title": "name", "url": "link"}
    selectors.update(fields.pop("json_selectors", {}))
    return source(kind="json", json_selectors=selectors, **fields)


TABLE = source(preset="bmstable", url="https://table.example/sl/")
HEADER = TableHeader(name="Satellite", symbol="sl", data_url="https://table.example/sl/data.json")


# --- json kind -------------------------------------------------------------------------


def test_json_rows_give_entries_with_extra_fields_and_relative_links_resolved() -> None:
    src = json_source(json_selectors={"extra": {"level": "lv", "artist": "by"}}, template="{level} {title}")
    text = BOM + json.dumps({"items": [{"id": 7, "name": " A  B ", "link": "d/7.zip", "lv": 12, "by": "x"}]})
    text = text.replace(",", ",\r\n")

    (entry,) = parse_page(src, text, page_url="https://example.com/api/list.json").entries

    assert (entry.entry_id, entry.title, entry.url) == ("7", "A B", "https://example.com/api/d/7.zip")
    assert dict(entry.extra) == {"level": "12", "artist": "x"}


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"items": []}, "gave no rows"),
        ({"other": []}, "not a list of rows"),
        ({"items": [{"id": "1", "name": "t"}]}, "row 1: url is missing"),
        ({"items": [{"id": "1", "name": {"x": 1}, "link": "u"}]}, "row 1: title is an object"),
    ],
)
def test_a_json_document_that_does_not_match_is_a_format_error(document: Any, problem: str) -> None:
    with pytest.raises(SourceFormatError, match=problem):
        parse_page(json_source(), json.dumps(document), page_url="https://example.com/")


def test_not_json_is_a_format_error() -> None:
    with pytest.raises(SourceFormatError, match="not JSON"):
        parse_page(json_source(), "<html>maintenance</html>", page_url="https://example.com/")


def test_a_file_appended_to_lists_its_newest_row_last() -> None:
    rows = {"items": [{"id": str(i), "name": "t", "link": "u"} for i in range(3)]}
    src = json_source(json_selectors={"newest": "last"})

    entries = parse_page(src, json.dumps(rows), page_url="https://example.com/").entries

    assert [e.entry_id for e in entries] == ["2", "1", "0"]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"json_selectors": {"rows": "items[", "entry_id": "id", "title": "t", "url": "u"}},
         "invalid JMESPath"),
        ({"kind": "json"}, "needs \\[json_selectors\\]"),
        ({"kind": "json", "json_selectors": {"rows": "@", "entry_id": "a", "title": "b", "url": "c"},
          "template": "{level}"}, "unknown placeholder"),
        ({"kind": "rss", "template": "{level}"}, "unknown placeholder"),
    ],
)  # fmt: skip
def test_json_config_mistakes_are_config_errors(fields: dict[str, Any], problem: str) -> None:
    fields.setdefault("kind", "json")
    with pytest.raises(ConfigError, match=problem):
        source(**fields)


def test_presets_load() -> None:
    for preset in ("bmstable", "stella-uploader", "bmssearch-new"):
        assert source(preset=preset).name == "s"


# --- difficulty tables -------------------------------------------------------------------


@pytest.mark.parametrize(
    "meta",
    [
        '<meta name="bmstable" content="header.json">',
        "<META CONTENT='header.json' NAME='bmstable' />",
        '<meta\r\n content=header.json\r\n name="bmstable">',
    ],
)
def test_the_meta_tag_is_found_with_its_attributes_in_any_order(meta: str) -> None:
    page = f'<html><head><meta name="bmstable-alt" content="alt.json">{meta}</head></html>'
    assert (
        header_url(TABLE, page, "https://table.example/sl/index.html")
        == "https://table.example/sl/header.json"
    )


def test_a_header_json_url_is_the_header_itself_and_a_page_without_the_tag_is_a_format_error() -> None:
    assert header_url(TABLE, BOM + '\r\n{"name": "x"}', "https://table.example/h.json") is None
    with pytest.raises(SourceFormatError, match="bmstable"):
        header_url(TABLE, "<html><p>maintenance</p></html>", "https://table.example/")


def test_the_header_resolves_a_relative_data_url_against_its_own_url() -> None:
    text = BOM + '{"name": "Satellite",\r\n "symbol": "sl", "data_url": "../data/score.json"}\r\n'
    header = parse_header(TABLE, text, "https://table.example/sl/header.json")
    assert header == TableHeader("Satellite", "sl", "https://table.example/data/score.json")


@pytest.mark.parametrize("missing", ["name", "symbol", "data_url"])
def test_a_header_without_a_required_field_is_a_format_error(missing: str) -> None:
    header = {"name": "n", "symbol": "s", "data_url": "d.json"}
    del header[missing]
    with pytest.raises(SourceFormatError, match=f"{missing} is missing"):
        parse_header(TABLE, json.dumps(header), "https://table.example/h.json")


def test_charts_in_a_wrapper_with_numeric_levels_bom_and_crlf() -> None:
    charts = [
        {"md5": "a" * 32, "level": 3, "title": "One", "artist": "X", "url": "song", "url_diff": "diff/1.zip"},
        {"md5": "b" * 32, "level": "12.5", "title": "Two", "url": "https://song.example/2"},
        {"sha256": "c" * 64, "level": 1.0},
        {"md5": "d" * 32},  # no level: skipped, as the reference parser does
        {"level": "5"},  # no hash: skipped
    ]
    text = BOM + json.dumps({"charts": charts}, indent=1).replace("\n", "\r\n")

    entries = parse_charts(TABLE, text, HEADER.data_url, header=HEADER)

    assert [e.entry_id for e in entries] == ["c" * 64, "b" * 32, "a" * 32]  # the table's last first
    third, second, first = entries
    assert first.url == "https://table.example/sl/diff/1.zip"
    assert dict(first.extra) == {
        "level": "3",
        "symbol": "sl",
        "table": "Satellite",
        "artist": "X",
        "url_diff": "https://table.example/sl/diff/1.zip",
    }
    assert (second.url, dict(second.extra)["level"]) == ("https://song.example/2", "12.5")
    assert (third.title, third.url, dict(third.extra)["level"]) == ("c" * 64, TABLE.url, "1")


@pytest.mark.parametrize("document", ["[]", '{"charts": [{"md5": "x"}]}', '{"name": "x"}', "[1, 2]"])
def test_a_table_without_a_usable_chart_is_a_format_error(document: str) -> None:
    with pytest.raises(SourceFormatError, match="table data"):
        parse_charts(TABLE, document, HEADER.data_url, header=HEADER)


def test_a_saved_data_file_parses_without_its_header() -> None:
    text = json.dumps([{"md5": "a" * 32, "level": "1", "title": "t"}])
    (entry,) = parse_page(TABLE, text, page_url=TABLE.url).entries
    assert dict(entry.extra) == {"level": "1"}


def test_a_5000_chart_table_parses_in_well_under_a_second() -> None:
    charts = [
        {"md5": f"{i:032x}", "level": i % 25, "title": f"曲 {i}", "artist": "a", "url_diff": f"d/{i}.zip"}
        for i in range(5000)
    ]
    text = json.dumps(charts, ensure_ascii=False)
    started = time.perf_counter()
    entries = parse_charts(TABLE, text, HEADER.data_url, header=HEADER)
    elapsed = time.perf_counter() - started
    assert len(entries) == 5000
    assert elapsed < 1.0, elapsed


# --- the message and the post ---------------------------------------------------------------


def test_extra_travels_in_the_message_and_fills_the_template() -> None:
    charts = json.dumps(
        [{"md5": "a" * 32, "level": 12, "title": "曲", "artist": "作者", "url_diff": "d.zip"}]
    )
    (entry,) = parse_charts(TABLE, charts, HEADER.data_url, header=HEADER)
    message = parse_message(entry.to_message("s", NOW).to_json())

    post = render_post(message, template=TABLE.template, include_link=True)

    assert post.text == "【Satellite】sl12 曲 / 作者 https://table.example/sl/d.zip"


def test_a_message_without_extra_is_what_an_older_fetcher_sent() -> None:
    message = EntryMessage(source="s", entry_id="1", title="t", url="https://x/", fetched_at=NOW)
    assert "extra" not in json.loads(message.to_json())
