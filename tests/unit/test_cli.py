"""The operator's CLI: `bmsuploader parse` and `bmsuploader preview` against saved pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmsuploader.cli import main
from bmsuploader.contract.message import EntryMessage

PAGES = Path(__file__).resolve().parents[1] / "fixtures" / "pages"

SOURCES = """
[[source]]
name = "up"
kind = "html"
preset = "classic-cgi"
url = "http://uploader.example/bms/upload.cgi"
template = "【新着差分】{title} / {comment} / {url}"

[[source]]
name = "nolink"
kind = "html"
preset = "classic-cgi"
url = "http://uploader.example/bms/upload.cgi"
include_link = false

[[source]]
name = "feed"
kind = "rss"
url = "https://uploader.example.jp/up/rss.xml"
"""


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(SOURCES, encoding="utf-8")
    return path


def run(
    capsys: pytest.CaptureFixture[str],
    command: str,
    sources: Path,
    source: str,
    page: str = "classic_sjis.html",
) -> tuple[int, list[str], str]:
    """``bmsuploader COMMAND --sources S --source NAME --page tests/fixtures/pages/PAGE``."""
    code = main([command, "--sources", str(sources), "--source", source, "--page", str(PAGES / page)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_parse_prints_one_message_body_per_entry(sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, "parse", sources, "up")

    assert code == 0
    messages = [EntryMessage.model_validate_json(line) for line in lines]  # the shared schema
    assert [m.entry_id for m in messages] == ["00125", "00124", "00123", "00122"]
    first = messages[0]
    assert first.title == "★5 夜桜～Sakura Night～ [ANOTHER] ①追加音源なし"
    assert first.url == "http://uploader.example/bms/src/up00125.zip"
    assert first.filename == "up00125.zip"
    assert first.size == "812KB"
    assert first.uploaded_at == "26/01/03(土) 21:15"


def test_preview_prints_the_posts(sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, "preview", sources, "up")

    assert code == 0
    posts = [json.loads(line) for line in lines]
    assert set(posts[0]) == {"source", "entry_id", "destination", "text", "weighted_length", "limit"}
    assert {(p["destination"], p["limit"]) for p in posts} == {("x", 280)}  # no destinations: X alone
    assert posts[0]["text"] == (
        "【新着差分】★5 夜桜～Sakura Night～ [ANOTHER] ①追加音源なし / http://uploader.example/bms/src/up00125.zip"
    )
    assert all(0 < p["weighted_length"] <= 280 for p in posts)


def test_preview_honours_the_link_policy(sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, lines, _ = run(capsys, "preview", sources, "nolink")

    assert lines and all("http" not in json.loads(line)["text"] for line in lines)


def test_preview_renders_for_each_destination_by_its_rules(
    sources: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources.write_text(
        SOURCES
        + '[[destination]]\nname = "x"\nkind = "x"\nsources = ["feed"]\n\n'
        + '[[destination]]\nname = "hook"\nkind = "discord"\nsecret = "/d/hook"\n'
        + 'template = "**new** {title} {url}"\n\n'
        + '[[destination]]\nname = "note"\nkind = "misskey"\ninstance = "https://misskey.example"\n'
        + 'secret = "/d/note"\n',
        encoding="utf-8",
    )

    code, lines, _ = run(capsys, "preview", sources, "up")

    assert code == 0
    first = {p["destination"]: p for p in map(json.loads, lines) if p["entry_id"] == "00125"}
    assert set(first) == {"hook", "note"}  # X announces only the feed
    assert first["hook"]["limit"] == 2000 and first["note"]["limit"] == 3000
    # Discord: the destination's template, the scraped title's markdown escaped ("[" -> "\[").
    assert first["hook"]["text"].startswith("**new** ★5 夜桜～Sakura Night～ \\[ANOTHER\\]")
    # Misskey: the source's template, the title (it holds MFM's "[") wrapped in <plain>.
    assert first["note"]["text"] == (
        "【新着差分】<plain>★5 夜桜～Sakura Night～ [ANOTHER] ①追加音源なし</plain> / "
        "http://uploader.example/bms/src/up00125.zip"
    )

    code = main(
        [
            "preview",
            "--sources",
            str(sources),
            "--source",
            "up",
            "--page",
            str(PAGES / "classic_sjis.html"),
            "--destination",
            "x",
        ]
    )
    assert code == 2
    assert (
        "no enabled destination named 'x' announces source 'up'; these do: hook, note"
        in capsys.readouterr().err
    )


def test_parse_notes_items_sharing_an_id(sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, "parse", sources, "feed", "feed_rss_duplicate_guid.xml")

    assert code == 0
    assert [json.loads(line)["title"] for line in lines] == [
        "★5 夜桜～Sakura Night～ [ANOTHER] 修正版",  # the first of the two up00125 items
        "▼2 ㈱ﾋﾞｰﾏﾆ商事 社歌 [INSANE]",
    ]
    assert err.strip() == (
        "bmsuploader: note: 1 item(s) repeat an earlier item's id and were dropped "
        "(the first is kept): up00125"
    )


def test_parse_of_an_empty_feed_says_so(sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, "parse", sources, "feed", "feed_rss_empty.xml")

    assert (code, lines) == (0, [])
    assert err.strip() == "bmsuploader: note: the page lists nothing (allowed for this source: allow_empty)"


def test_unknown_source_is_a_one_line_error(sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, "parse", sources, "nope")

    assert code == 2 and lines == []
    assert err.strip() == "bmsuploader: error: no source named 'nope' in the file; known: up, nolink, feed"


def test_a_page_that_does_not_match_is_a_format_error(
    sources: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "parse", sources, "up", "maintenance_sjis.html")

    assert code == 2
    assert "source 'up'" in err and "selectors.row" in err


def test_a_bad_config_names_the_source_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[source]]\nname = "up"\nkind = "html"\nurl = "ftp://x/"\npreset = "classic-cgi"\n')

    code, _, err = run(capsys, "parse", bad, "up", "x.html")

    assert code == 2
    assert "source 'up'" in err and "url" in err


TABLE_SOURCES = """
[[source]]
name = "table"
preset = "bmstable"
url = "https://table.example/sl/"
"""


def test_parse_reads_a_saved_table_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # table_data.json: a BOM, CR/LF, the {"charts": [...]} wrapper, numeric levels, an sha256-only
    # chart and one without a level (skipped, as by the format's reference parser).
    sources = tmp_path / "sources.toml"
    sources.write_text(TABLE_SOURCES, encoding="utf-8")

    code, lines, _ = run(capsys, "parse", sources, "table", page="table_data.json")

    assert code == 0
    messages = [EntryMessage.model_validate_json(line) for line in lines]
    assert [(m.entry_id[:8], (m.extra or {})["level"]) for m in messages] == [
        ("aaaaaaaa", "5"),
        ("7a9d0e6f", "12"),
        ("0f343b09", "3"),
    ]
    assert messages[2].url == "https://table.example/sl/diffs/yozakura_another.zip"
    assert messages[1].url == "http://song.example/mirage.zip"
