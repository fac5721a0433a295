"""Source configuration: every mistake is a ConfigError naming the source and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bmsuploader.config.sources import DEFAULT_SOURCES_FILE, load_presets, load_sources, parse_sources
from bmsuploader.contract.errors import ConfigError
from bmsuploader.contract.settings import SourcesSettings

URL = "https://uploader.example.jp/up/upload.cgi"
CLASSIC: dict[str, Any] = {"name": "up1", "url": URL, "preset": "classic-cgi"}


def error_for(*sources: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_sources({"source": list(sources)}, origin="sources.toml")
    return str(caught.value)


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# --- one test per kind of mistake -------------------------------------------------


def test_missing_required_field() -> None:
    message = error_for({"name": "up1", "preset": "classic-cgi"})
    assert_names(message, "sources.toml", "source 'up1'", "url: required field is missing")


def test_missing_name_falls_back_to_the_position() -> None:
    message = error_for(CLASSIC, {"url": URL, "kind": "rss"})
    assert_names(message, "source #2", "name: required field is missing")


def test_unknown_field_is_called_a_typo() -> None:
    message = error_for({**CLASSIC, "max_page": 3})
    assert_names(message, "source 'up1'", "max_page: unknown field (typo?)")


def test_unknown_selector_field_is_called_a_typo() -> None:
    message = error_for({**CLASSIC, "selectors": {"titel": "td[2]"}})
    assert_names(message, "source 'up1'", "selectors.titel: unknown field (typo?)")


def test_bad_kind() -> None:
    message = error_for({"name": "up1", "url": URL, "kind": "xml"})
    assert_names(message, "source 'up1'", "kind:", "'html', 'rss', 'atom', 'json' or 'bmstable'")


def test_bad_url() -> None:
    message = error_for({**CLASSIC, "url": "ftp://uploader.example.jp/up/"})
    assert_names(message, "source 'up1'", "url:", "https?://")


def test_bad_xpath_in_selectors() -> None:
    message = error_for({**CLASSIC, "selectors": {"row": "//tr["}})
    assert_names(message, "source 'up1'", "selectors.row: invalid XPath '//tr['")


@pytest.mark.parametrize(
    ("field", "xpath", "problem"),
    [
        # Each of these compiles, and used to fail only when a page was parsed (XPathEvalError).
        ("title", "bogus(td[2])", "unknown function bogus()"),
        ("title", "string-join(td, ' ')", "unknown function string-join()"),  # XPath 2.0
        ("row", "//tr[has-link(td)]", "unknown function has-link()"),
        ("title", "foo:bar(td[2])", "undefined namespace prefix 'foo'"),
        ("url", "td[1]/x:a/@href", "undefined namespace prefix 'x'"),
        ("row", "//h:tr", "undefined namespace prefix 'h'"),
        ("title", "td[$n]", "variables ($n) are not supported"),
        ("title", "td[2] | 1", "cannot be evaluated"),
        ("row", "//tr | 1", "cannot be evaluated"),
        ("size", "count(1)", "cannot be evaluated"),
        ("row", "//tr[td | 'x']", "cannot be evaluated"),
    ],
)
def test_xpath_that_compiles_but_cannot_run_fails_at_load(field: str, xpath: str, problem: str) -> None:
    message = error_for({**CLASSIC, "selectors": {field: xpath}})
    assert_names(message, "source 'up1'", f"selectors.{field}: ", repr(xpath), problem)


@pytest.mark.parametrize("row", ["count(//tr)", "string(//tr)", "boolean(//tr)"])
def test_row_selector_must_select_elements(row: str) -> None:
    message = error_for({**CLASSIC, "selectors": {"row": row}})
    assert_names(message, "source 'up1'", "selectors.row: ", "must select elements", "not a")


def test_exslt_regular_expressions_are_part_of_the_dialect() -> None:
    row = "//tr[re:test(string(td[1]//a/@href), 'up\\d+\\.zip$')]"
    config = parse_sources({"source": [{**CLASSIC, "selectors": {"row": row}}]})
    assert config.sources[0].selectors is not None
    assert config.sources[0].selectors.row == row


def test_exslt_regular_expression_that_does_not_compile() -> None:
    message = error_for({**CLASSIC, "selectors": {"row": "//tr[re:test(td[1]//a/@href, '(')]"}})
    assert_names(message, "source 'up1'", "selectors.row: ", "cannot be evaluated")


def test_bad_id_regex() -> None:
    message = error_for({**CLASSIC, "id_regex": r"(\d+"})
    assert_names(message, "source 'up1'", "id_regex: invalid regular expression")


def test_id_regex_with_two_groups() -> None:
    message = error_for({**CLASSIC, "id_regex": r"(up)(\d+)"})
    assert_names(message, "source 'up1'", "id_regex:", "has 2 groups")


def test_unknown_encoding() -> None:
    message = error_for({**CLASSIC, "encoding": "shift_jiss"})
    assert_names(message, "source 'up1'", "encoding: unknown encoding 'shift_jiss'")


@pytest.mark.parametrize("encoding", ["base64", "rot13", "zlib", "undefined", "idna", "punycode", "utf-7"])
def test_encoding_that_is_not_a_character_set(encoding: str) -> None:
    # Python knows these codecs, but they are transforms or escapes, not a page's charset.
    message = error_for({**CLASSIC, "encoding": encoding})
    assert_names(message, "source 'up1'", f"encoding: {encoding!r} is not a character set")


def test_an_empty_listing_needs_the_text_that_tells_it_from_an_error_page() -> None:
    message = error_for({**CLASSIC, "allow_empty": True})
    assert_names(message, "source 'up1'", "allow_empty = true", "end_of_listing")


@pytest.mark.parametrize(("kind", "allowed"), [("rss", True), ("atom", True), ("html", False)])
def test_empty_pages_are_allowed_for_feeds_and_not_for_listings_by_default(kind: str, allowed: bool) -> None:
    raw: dict[str, Any] = {"name": "s", "url": URL, "kind": kind}
    if kind == "html":
        raw = {**CLASSIC, "name": "s"}
    assert parse_sources({"source": [raw]}).sources[0].empty_allowed is allowed


def test_page_url_template_without_page() -> None:
    message = error_for({**CLASSIC, "page_url_template": URL + "?page=2"})
    assert_names(message, "source 'up1'", "page_url_template:", "{page}")


def test_page_url_template_with_another_placeholder() -> None:
    message = error_for({**CLASSIC, "page_url_template": URL + "?page={page}&sort={order}"})
    assert_names(message, "source 'up1'", "page_url_template:", "no other placeholder")


def test_max_pages_above_one_without_template() -> None:
    message = error_for({**CLASSIC, "max_pages": 3})
    assert_names(message, "source 'up1'", "max_pages > 1 needs page_url_template")


def test_max_pages_out_of_range() -> None:
    message = error_for({**CLASSIC, "max_pages": 50, "page_url_template": URL + "?page={page}"})
    assert_names(message, "source 'up1'", "max_pages:")


def test_unknown_post_template_placeholder() -> None:
    message = error_for({**CLASSIC, "template": "{title} / {artist}"})
    assert_names(message, "source 'up1'", "template:", "unknown placeholder(s) ['artist']")


def test_positional_post_template_placeholder() -> None:
    message = error_for({**CLASSIC, "template": "{} {url}"})
    assert_names(message, "source 'up1'", "template:", "positional placeholder")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{title!r} / {url}", "{title} takes no conversion or format spec"),
        ("{title:>10} / {url}", "{title} takes no conversion or format spec"),
        ("{title} / {url", "expected '}' before end of string"),
        ("{title[0]} / {url}", "unknown placeholder(s) ['title[0]']"),
    ],
)
def test_a_post_template_the_renderer_cannot_render_fails_at_load(template: str, expected: str) -> None:
    # These loaded before and then failed every post of the source at post time.
    message = error_for({**CLASSIC, "template": template})
    assert_names(message, "source 'up1'", "template:", expected)


@pytest.mark.parametrize(
    ("first_run", "expected"),
    [
        ({"policy": "post_newest"}, "policy 'post_newest' needs count >= 1"),
        ({"policy": "baseline", "count": 3}, "policy 'baseline' posts nothing"),
        ({"policy": "flood"}, "first_run.policy:"),
    ],
)
def test_first_run_policy_and_count_mismatch(first_run: dict[str, Any], expected: str) -> None:
    message = error_for({**CLASSIC, "first_run": first_run})
    assert_names(message, "source 'up1'", "first_run", expected)


def test_unknown_preset() -> None:
    message = error_for({**CLASSIC, "preset": "wakaba"})
    assert_names(message, "source 'up1'", "preset: unknown preset 'wakaba'", "classic-cgi")


def test_duplicate_names() -> None:
    message = error_for(CLASSIC, {"name": "up1", "url": URL + "?feed", "kind": "rss"})
    assert_names(message, "source 'up1'", "name: duplicate source name 'up1'")


def test_invalid_name_characters() -> None:
    # The name becomes the SQS MessageGroupId, which allows no spaces or "!".
    message = error_for({**CLASSIC, "name": "my uploader!"})
    assert_names(message, "source 'my uploader!'", "name:")


def test_html_without_selectors() -> None:
    message = error_for({"name": "up1", "url": URL, "kind": "html"})
    assert_names(message, "source 'up1'", "kind 'html' needs [selectors]")


def test_rss_with_selectors() -> None:
    selectors = {"row": "//item", "entry_id": "guid", "title": "title", "url": "link"}
    message = error_for({"name": "up1", "url": URL, "kind": "rss", "selectors": selectors})
    assert_names(message, "source 'up1'", "kind 'rss'", "remove [selectors]")


def test_no_sources_at_all() -> None:
    with pytest.raises(ConfigError, match=r"sources\.toml: no \[\[source\]\] tables found"):
        parse_sources({})


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) \['sources'\]"):
        parse_sources({"sources": [CLASSIC]})


def test_source_entry_that_is_not_a_table() -> None:
    # `source = ["up1"]` in TOML.
    with pytest.raises(ConfigError, match=r"source #1: must be a \[\[source\]\] table"):
        parse_sources({"source": ["up1"]})


def test_preset_that_is_not_a_string() -> None:
    # `preset = ["classic-cgi"]`.
    with pytest.raises(ConfigError, match=r"source 'up1'.*preset: must be a preset name"):
        parse_sources({"source": [{**CLASSIC, "preset": ["classic-cgi"]}]})


# --- files --------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match=r"nope\.toml: sources file not found"):
        load_sources(missing)


def test_invalid_toml(tmp_path: Path) -> None:
    broken = tmp_path / "sources.toml"
    broken.write_text('[[source]]\nname = "up1\nurl = "https://x/"\n', encoding="utf-8")

    with pytest.raises(ConfigError, match=r"sources\.toml: not valid TOML"):
        load_sources(broken)


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "staging.toml"
    path.write_text(
        '[[source]]\nname = "up1"\nkind = "atom"\nurl = "https://x.example/atom"\nmax_pages = "three"\n'
    )

    with pytest.raises(ConfigError, match=r"^staging\.toml: source 'up1': max_pages:"):
        load_sources(path)


def test_sources_file_env_var_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other.toml"
    path.write_text('[[source]]\nname = "feed-only"\nkind = "rss"\nurl = "https://x.example/rss"\n')
    monkeypatch.setenv("SOURCES_FILE", str(path))

    assert [s.name for s in load_sources(SourcesSettings.from_env().sources_file).sources] == ["feed-only"]


def test_shipped_sources_file_loads_with_its_examples_switched_off() -> None:
    config = load_sources(DEFAULT_SOURCES_FILE)

    # Example URLs: a fresh deploy must not fetch them until the operator edits the file.
    assert config.enabled == ()
    uploader = config.get("example-uploader")
    assert uploader.kind == "html" and uploader.selectors is not None
    assert uploader.page_url(2) == "https://uploader.example.jp/bms/upload.cgi?page=2"


def test_sample_sources_for_local_runs_load() -> None:
    from bmsuploader_local.run import SAMPLE_SOURCES

    config = load_sources(SAMPLE_SOURCES)

    assert [s.name for s in config.enabled] == ["sample-uploader", "sample-feed", "sample-table"]


# --- presets ------------------------------------------------------------------


def test_preset_merge_source_overrides_one_selector() -> None:
    config = parse_sources({"source": [{**CLASSIC, "selectors": {"title": "td[3]"}}]})
    source = config.sources[0]

    assert source.kind == "html"  # from the preset
    assert source.id_regex == r"(\d+)(?:\.[A-Za-z0-9]+)?$"  # from the preset
    assert source.selectors is not None
    assert source.selectors.title == "td[3]"  # overridden
    assert source.selectors.row == load_presets()["classic-cgi"]["selectors"]["row"]  # kept from the preset
    assert source.selectors.size == "td[3]"


def test_source_keys_win_over_the_preset() -> None:
    config = parse_sources({"source": [{**CLASSIC, "id_regex": r"get=(\d+)", "encoding": "cp932"}]})

    assert (config.sources[0].id_regex, config.sources[0].encoding) == (r"get=(\d+)", "cp932")
