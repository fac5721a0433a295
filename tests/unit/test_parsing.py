"""Parsing listings and feeds into entries, and failing loudly when a page looks wrong."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bmsuploader.config.sources import Source, parse_sources
from bmsuploader.contract.errors import SourceFormatError
from bmsuploader.contract.message import parse_message
from bmsuploader.fetch.decoding import decode_page
from bmsuploader.fetch.parsing import Entry, parse_listing, parse_page

PAGES = Path(__file__).resolve().parent.parent / "fixtures" / "pages"
LISTING_URL = "https://uploader.example.jp/up/upload.cgi"


def make_source(**fields: Any) -> Source:
    raw = {"name": "test-up", "url": LISTING_URL, **fields}
    return parse_sources({"source": [raw]}).sources[0]


def classic() -> Source:
    return make_source(preset="classic-cgi")


def fixture_text(name: str) -> str:
    return decode_page((PAGES / name).read_bytes()).text


def table(*rows: str) -> str:
    header = "<tr><th>File</th><th>Comment</th><th>Size</th><th>Date</th><th>DL</th></tr>"
    return f"<html><body><table>{header}{''.join(rows)}</table></body></html>"


def row(href: str, comment: str = "差分", size: str = "1KB", date: str = "26/01/01 00:00") -> str:
    name = href.rsplit("/", 1)[-1]
    cells = f"<td>{comment}</td><td>{size}</td><td>{date}</td><td>0</td>"
    return f'<tr><td><a href="{href}">{name}</a></td>{cells}</tr>'


# --- classic-cgi listings -------------------------------------------------------


def test_classic_listing_with_src_file_links() -> None:
    entries = parse_listing(classic(), fixture_text("classic_sjis.html"), page_url=LISTING_URL)

    # Newest first, header and layout rows skipped, the pager link outside the table ignored.
    assert [e.entry_id for e in entries] == ["00125", "00124", "00123", "00122"]
    first = entries[0]
    assert first == Entry(
        entry_id="00125",
        title="★5 夜桜～Sakura Night～ [ANOTHER] ①追加音源なし",
        url="https://uploader.example.jp/up/src/up00125.zip",
        comment="",
        uploaded_at="26/01/03(土) 21:15",
        filename="up00125.zip",
        size="812KB",
    )
    # A line break inside the cell collapses to one space.
    assert entries[1].title == "▼2 ㈱ﾋﾞｰﾏﾆ商事 社歌 [INSANE]"
    assert entries[2].title == "☆12 髙橋のテーマ [HYPER] ｿﾌﾗﾝ推奨"


def test_classic_upload_without_comment_is_titled_by_its_file_name() -> None:
    entries = parse_listing(classic(), fixture_text("classic_sjis.html"), page_url=LISTING_URL)

    assert entries[3].entry_id == "00122"  # "up00122.rar": the extension is not part of the id
    assert entries[3].title == "up00122.rar"


def test_line_breaks_inside_a_cell_read_as_spaces() -> None:
    text = table(row("./src/up00003.zip", "★1 曲名<br>追加音源<BR/>あり"))

    [entry] = parse_listing(classic(), text, page_url=LISTING_URL)

    assert entry.title == "★1 曲名 追加音源 あり"


def test_classic_listing_with_get_links_in_euc_jp() -> None:
    page_url = "https://sabun.example.jp/cgi-bin/up/upload.cgi"

    entries = parse_listing(classic(), fixture_text("classic_get_eucjp.html"), page_url=page_url)

    assert [(e.entry_id, e.url) for e in entries] == [
        ("00042", "https://sabun.example.jp/cgi-bin/up/upload.cgi?get=00042"),
        ("00041", "https://sabun.example.jp/cgi-bin/up/upload.cgi?get=00041"),
    ]
    assert entries[0].title == "★3 﨑陽軒のうた ①② ～EX～ ㈱ｶｲｼｬ"


def test_relative_urls_resolve_against_the_served_url_not_the_configured_one() -> None:
    # After a redirect the fetcher passes the final URL; links are relative to it.
    text = table(row("./src/up00007.zip"), row("../files/up00006.zip"), row("/abs/up00005.zip"))

    entries = parse_listing(classic(), text, page_url="https://mirror.example.net/old/up/upload.cgi?page=2")

    assert [e.url for e in entries] == [
        "https://mirror.example.net/old/up/src/up00007.zip",
        "https://mirror.example.net/old/files/up00006.zip",
        "https://mirror.example.net/abs/up00005.zip",
    ]


PAGER_ROW = (
    '<tr><td><a href="upload.cgi?page=2">次のページ</a></td><td><a href="upload.cgi?page=3">3</a></td></tr>'
)


def test_a_pagination_row_inside_the_table_is_not_an_upload() -> None:
    # It used to become entry "2" titled "3".
    text = table(row("./src/up00003.zip"), PAGER_ROW)

    entries = parse_listing(classic(), text, page_url=LISTING_URL)

    assert [(e.entry_id, e.filename) for e in entries] == [("00003", "up00003.zip")]


@pytest.mark.parametrize(
    "href",
    [
        "upload.cgi",
        "./upload.cgi?mode=admin",
        "upload.cgi?page=2&sort=1",
        "../index.html",
        "http://uploader.example.jp/",
        "#top",
    ],
)
def test_layout_links_in_the_first_cell_are_not_uploads(href: str) -> None:
    text = table(row("./src/up00003.zip"), f'<tr><td><a href="{href}">戻る</a></td><td>t</td></tr>')

    assert [e.entry_id for e in parse_listing(classic(), text, page_url=LISTING_URL)] == ["00003"]


@pytest.mark.parametrize(
    "href",
    [
        "upload.cgi?get=00042",
        "upload.cgi?mode=dl&get=00042",
        "./src/up00042.zip",
        "src/up00042.7z",
        "/up/src/UP00042.LZH",
    ],
)
def test_download_links_are_uploads(href: str) -> None:
    [entry] = parse_listing(classic(), table(row(href)), page_url=LISTING_URL)

    assert entry.entry_id == "00042"


def test_duplicate_ids_on_one_page_keep_the_first() -> None:
    text = table(
        row("./src/up00009.zip", "新しい方"), row("./src/up00008.zip"), row("./src/up00009.zip", "古い方")
    )

    page = parse_page(classic(), text, page_url=LISTING_URL)

    assert [(e.entry_id, e.title) for e in page.entries] == [("00009", "新しい方"), ("00008", "差分")]
    assert (page.duplicates, page.duplicate_ids) == (1, ("00009",))  # for the fetcher to log and count


# --- html errors ----------------------------------------------------------------


NO_FILES = "該当するファイルはありません"


def quiet_uploader(**fields: Any) -> Source:
    return make_source(preset="classic-cgi", allow_empty=True, end_of_listing=NO_FILES, **fields)


def test_an_empty_listing_is_read_only_where_the_page_says_so() -> None:
    empty = table(f'<tr><td colspan="5">{NO_FILES}</td></tr>')

    page = parse_page(quiet_uploader(), empty, page_url=LISTING_URL)

    assert (page.entries, page.empty) == ((), True)


def test_a_row_less_page_without_the_end_of_listing_text_is_still_an_error() -> None:
    with pytest.raises(SourceFormatError, match="no rows matched"):
        parse_listing(quiet_uploader(), fixture_text("maintenance_sjis.html"), page_url=LISTING_URL)


def test_a_listing_that_says_it_has_more_pages() -> None:
    source = make_source(preset="classic-cgi", selectors={"next_page": "//a[contains(., '次のページ')]"})
    text = fixture_text("classic_sjis.html")

    page = parse_page(source, text, page_url=LISTING_URL)

    assert page.has_next is True
    assert parse_page(classic(), text, page_url=LISTING_URL).has_next is None  # no next_page selector


def test_maintenance_page_with_zero_rows_is_an_error_naming_the_source() -> None:
    with pytest.raises(SourceFormatError) as caught:
        parse_listing(classic(), fixture_text("maintenance_sjis.html"), page_url=LISTING_URL)

    assert caught.value.source == "test-up"
    assert "test-up" in str(caught.value)
    assert "selectors.row" in str(caught.value)


def test_empty_page_is_an_error() -> None:
    with pytest.raises(SourceFormatError, match="page is empty"):
        parse_listing(classic(), "  \n", page_url=LISTING_URL)


def test_row_missing_its_title_cell_names_the_field_and_the_row() -> None:
    broken = '<tr><td><a href="./src/up00010.zip">up00010.zip</a></td></tr>'
    text = table(row("./src/up00011.zip"), broken)

    with pytest.raises(SourceFormatError) as caught:
        parse_listing(classic(), text, page_url=LISTING_URL)

    message = str(caught.value)
    assert "test-up" in message
    assert "row 2" in message
    assert "title" in message and "'td[2]'" in message


def test_id_regex_that_does_not_match_names_the_row() -> None:
    text = table(row("./src/up00012.zip"), row("./src/readme.txt"))

    with pytest.raises(SourceFormatError, match=r"row 2: entry_id .*readme\.txt"):
        parse_listing(classic(), text, page_url=LISTING_URL)


def test_id_regex_without_a_group_uses_the_whole_match() -> None:
    source = make_source(preset="classic-cgi", id_regex=r"up\d+")

    entries = parse_listing(source, table(row("./src/up00013.zip")), page_url=LISTING_URL)

    assert entries[0].entry_id == "up00013"


def test_custom_selectors_lists_attributes_and_numbers() -> None:
    source = make_source(
        kind="html",
        id_regex=r"id-(\d+)",
        selectors={
            "row": "//div[@class='up']",
            "entry_id": "@id",
            "title": "span/text()",  # a list: the first non-empty text node wins
            "url": "a/@href",
            "comment": "count(span)",
            "size": "string(@data-size)",
        },
    )
    text = """<html><body>
      <div class="up" id="id-77" data-size="3MB">
        <span> </span><span>  曲名   A </span><a href="dl/77">DL</a>
      </div>
    </body></html>"""

    [entry] = parse_listing(source, text, page_url="https://u.example/list/")

    assert entry == Entry(
        entry_id="77", title="曲名 A", url="https://u.example/list/dl/77", comment="2", size="3MB"
    )


# --- odd bytes and bad items: a typed error or a reading, never a crash -------------


@pytest.mark.parametrize(
    "cell",
    [
        "★1 曲名<br>\x01追加音源",
        "★1 <p>曲名</p>\x01追加音源",
        "★1 <ul><li>曲名</li>\x01<li>追加音源</li></ul>",
        "★1 <div>曲名</div>\x02追加音源",
    ],
    ids=["br", "p", "li", "div"],
)
def test_a_control_character_after_a_line_break_in_a_cell(cell: str) -> None:
    # Used to raise lxml's "ValueError: All strings must be XML compatible".
    [entry] = parse_listing(classic(), table(row("./src/up00001.zip", cell)), page_url=LISTING_URL)

    assert entry.title == "★1 曲名 追加音源"


def test_paragraphs_and_list_items_read_as_separate_words() -> None:
    text = table(row("./src/up00001.zip", "★1 曲名<p>追加音源</p><ul><li>a</li><li>b</li></ul>"))

    [entry] = parse_listing(classic(), text, page_url=LISTING_URL)

    assert entry.title == "★1 曲名 追加音源 a b"


def test_a_nul_byte_in_a_cell_is_dropped_not_turned_into_a_replacement_character() -> None:
    text = table(row("./src/up00001.zip", "★1 曲\x00名"))

    [entry] = parse_listing(classic(), text, page_url=LISTING_URL)

    assert entry.title == "★1 曲名"


def test_a_lone_surrogate_in_the_text_is_dropped() -> None:
    # Only a codec can make one (decode_page no longer uses unicode_escape); parsing must cope anyway.
    text = table(row("./src/up00001.zip", "★1 曲\ud800名"))

    [entry] = parse_listing(classic(), text, page_url=LISTING_URL)

    assert entry.title == "★1 曲名"


@pytest.mark.parametrize("href", ["http://[::1", "https://[bad]/up.zip"])
def test_a_link_that_is_not_a_url_is_a_format_error_naming_the_row(href: str) -> None:
    text = table(row("./src/up00002.zip"), f'<tr><td><a href="{href}">up00001.zip</a></td><td>t</td></tr>')
    source = make_source(
        kind="html",
        selectors={
            "row": "//tr[td]",
            "entry_id": "td[1]/a",
            "url": "string(td[1]/a/@href)",
            "title": "td[2]",
        },
    )

    with pytest.raises(SourceFormatError, match=r"row 2: url .*is not a URL"):
        parse_listing(source, text, page_url=LISTING_URL)


def test_a_page_url_that_is_not_a_url_is_a_format_error() -> None:
    with pytest.raises(SourceFormatError, match=r"row 1: url .*is not a URL"):
        parse_listing(classic(), table(row("./src/up00001.zip")), page_url="http://[::1")


def test_a_selector_that_fails_only_on_some_pages_is_a_format_error() -> None:
    # The sample page the config is tried on has no td.odd, so this one loads.
    source = make_source(preset="classic-cgi", selectors={"title": "td[@class='odd'][count(1)]"})
    text = table('<tr><td><a href="./src/up00001.zip">up00001.zip</a></td><td class="odd">t</td></tr>')

    with pytest.raises(SourceFormatError, match=r"row 1: selectors\.title .* cannot be evaluated"):
        parse_listing(source, text, page_url=LISTING_URL)


def test_exslt_regular_expressions_work_when_parsing() -> None:
    source = make_source(preset="classic-cgi", selectors={"row": "//tr[re:test(td[1]/a/@href, 'up\\d+')]"})
    text = table(row("./src/up00002.zip"), row("./src/readme.txt"))

    assert [e.entry_id for e in parse_listing(source, text, page_url=LISTING_URL)] == ["00002"]


def test_a_noncharacter_in_a_cell_cannot_shift_the_fields_of_its_row() -> None:
    # The reader joins a row's fields with U+FDD0 in one XPath call; pages never keep one.
    text = table(row("./src/up00001.zip", "曲名\ufdd0[EX]", size="1KB\ufdd0"))

    [entry] = parse_listing(classic(), text, page_url=LISTING_URL)

    assert (entry.title, entry.size, entry.uploaded_at) == ("曲名[EX]", "1KB", "26/01/01 00:00")


def test_number_and_boolean_selectors_are_read_on_every_row() -> None:
    source = make_source(
        preset="classic-cgi", selectors={"comment": "boolean(td[5][. > 0])", "size": "count(td)"}
    )
    text = table(row("./src/up00002.zip").replace("<td>0</td>", "<td>7</td>"), row("./src/up00001.zip"))

    entries = parse_listing(source, text, page_url=LISTING_URL)

    assert [(e.comment, e.size) for e in entries] == [("true", "5"), ("", "5")]


def test_a_row_selector_that_selects_attributes_is_a_format_error() -> None:
    source = make_source(preset="classic-cgi", selectors={"row": "//tr/td[1]/a/@href"})

    with pytest.raises(SourceFormatError, match="must select elements"):
        parse_listing(source, table(row("./src/up00001.zip")), page_url=LISTING_URL)


def test_a_relative_row_selector_reads_from_the_root_element() -> None:
    source = make_source(preset="classic-cgi", selectors={"row": "body/table/tr[td/a]"})

    entries = parse_listing(
        source, table(row("./src/up00002.zip"), row("./src/up00001.zip")), page_url=LISTING_URL
    )

    assert [e.entry_id for e in entries] == ["00002", "00001"]


def test_sources_are_parsed_concurrently_with_the_same_result() -> None:
    # The fetcher reads sources in threads; readers are shared per selectors.
    source, text = classic(), table(*(row(f"./src/up{n:05d}.zip", f"★{n} 曲名") for n in range(60, 0, -1)))
    expected = parse_listing(source, text, page_url=LISTING_URL)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: parse_listing(source, text, page_url=LISTING_URL), range(64)))

    assert all(result == expected for result in results)


# --- RSS --------------------------------------------------------------------------


def rss() -> Source:
    return make_source(kind="rss", url="https://uploader.example.jp/up/rss.xml")


def atom_source() -> Source:
    return make_source(kind="atom", url="https://uploader.example.jp/up/atom.xml")


def atom(*entries: str) -> str:
    return f'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>{"".join(entries)}</feed>'


def test_rss_feed_with_a_shift_jis_declaration() -> None:
    # decode_page reads the declaration; the parser then has to cope with a str
    # that still carries encoding="Shift_JIS".
    text = fixture_text("feed_rss_sjis.xml")
    assert text.startswith('<?xml version="1.0" encoding="Shift_JIS"?>')

    entries = parse_listing(rss(), text, page_url="https://uploader.example.jp/up/rss.xml")

    assert entries == [
        Entry(
            entry_id="up00125",
            title="★5 夜桜～Sakura Night～ [ANOTHER]",
            url="https://uploader.example.jp/up/src/up00125.zip",
            comment="up00125.zip (812KB) ①追加音源なし",  # <br> reads as a space
            uploaded_at="2026-01-03T21:15:00+09:00",
        ),
        Entry(
            # No guid: the link is the id.
            entry_id="https://uploader.example.jp/up/src/up00124.zip",
            title="▼2 ㈱ﾋﾞｰﾏﾆ商事 社歌 <INSANE>",
            url="https://uploader.example.jp/up/src/up00124.zip",
            comment="1.2MB",
            uploaded_at="2026年1月3日 20時01分",  # not RFC 822: kept as written
        ),
    ]


def feed(*items: str) -> str:
    return f'<rss version="2.0"><channel><title>t</title>{"".join(items)}</channel></rss>'


def test_rss_guid_is_the_id_unless_an_id_regex_is_configured() -> None:
    # The default "(\d+)" would make every one of these "8080".
    text = feed(
        "<item><title>a</title><link>http://up.example:8080/f/1</link><guid>http://up.example:8080/f/1</guid></item>",
        "<item><title>b</title><link>http://up.example:8080/f/2</link><guid>http://up.example:8080/f/2</guid></item>",
    )

    plain = parse_listing(rss(), text, page_url="http://up.example:8080/")
    configured = parse_listing(
        make_source(kind="rss", url="http://up.example:8080/rss", id_regex=r"/f/(\d+)$"),
        text,
        page_url="http://up.example:8080/",
    )

    assert [e.entry_id for e in plain] == ["http://up.example:8080/f/1", "http://up.example:8080/f/2"]
    assert [e.entry_id for e in configured] == ["1", "2"]


def test_rss_item_without_title_names_the_item() -> None:
    text = feed(
        "<item><title>a</title><guid>1</guid><link>/1</link></item>",
        "<item><guid>2</guid><link>/2</link></item>",
    )

    with pytest.raises(SourceFormatError, match=r"source 'test-up': item 2: title is missing"):
        parse_listing(rss(), text, page_url=LISTING_URL)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<rss version='2.0'><channel><item><title>a</title>", "not well-formed XML"),
        ("<html><body>メンテナンス中</body></html>", "expected an RSS 2.0 <rss> document, got <html>"),
        (
            "<rss version='2.0'><item><title>a</title><guid>1</guid><link>/1</link></item></rss>",
            "no <channel>",
        ),
        ("", "feed is empty"),
    ],
)
def test_unparseable_or_empty_feeds_are_errors(text: str, expected: str) -> None:
    with pytest.raises(SourceFormatError, match=expected):
        parse_listing(rss(), text, page_url=LISTING_URL)


@pytest.mark.parametrize(
    "description",
    [
        "<![CDATA[<!DOCTYPE><SCRIPT]]>",
        "&lt;!DOCTYPE&gt;&lt;SCRIPT",
        "<![CDATA[<html><body>a</body><body>b]]>",
    ],
)
def test_odd_html_in_a_description_is_read_not_a_crash(description: str) -> None:
    # Used to raise a bare AssertionError ("too many bodies") from lxml.html.
    text = feed(
        f"<item><title>a</title><guid>1</guid><link>/1</link><description>{description}</description></item>"
    )

    [entry] = parse_listing(rss(), text, page_url=LISTING_URL)

    assert entry.title == "a"
    assert "<" not in entry.comment


def test_an_rss_link_that_is_not_a_url_is_a_format_error_naming_the_item() -> None:
    text = feed("<item><title>a</title><guid>1</guid><link>http://[::1</link></item>")

    with pytest.raises(SourceFormatError, match=r"item 1: url .*is not a URL"):
        parse_listing(rss(), text, page_url=LISTING_URL)


def test_unicode_escape_declaration_with_a_surrogate_escape_reads_as_written() -> None:
    body = (
        b'<?xml version="1.0" encoding="unicode_escape"?>'
        b'<rss version="2.0"><channel><item><title>\\ud800 x</title><guid>1</guid><link>/1</link></item>'
        b"</channel></rss>"
    )

    [entry] = parse_listing(rss(), decode_page(body).text, page_url=LISTING_URL)

    assert entry.title == "\\ud800 x"


def test_rss_items_sharing_a_guid_keep_the_first_and_are_counted() -> None:
    text = feed(
        "<item><title>新</title><guid>up1</guid><link>/1</link></item>",
        "<item><title>b</title><guid>up2</guid><link>/2</link></item>",
        "<item><title>旧</title><guid>up1</guid><link>/1-old</link></item>",
        "<item><title>旧旧</title><guid>up1</guid><link>/1-older</link></item>",
    )

    page = parse_page(rss(), text, page_url=LISTING_URL)

    assert [(e.entry_id, e.title) for e in page.entries] == [("up1", "新"), ("up2", "b")]
    assert (page.duplicates, page.duplicate_ids) == (2, ("up1", "up1"))
    assert parse_listing(rss(), text, page_url=LISTING_URL) == list(page.entries)


@pytest.mark.parametrize(
    "text",
    [feed(), '<rss version="2.0"><channel/></rss>', atom()],
    ids=["rss", "rss-empty-channel", "atom"],
)
def test_an_empty_feed_is_a_quiet_source_not_an_error(text: str) -> None:
    source = atom_source() if "Atom" in text else rss()

    page = parse_page(source, text, page_url=LISTING_URL)

    assert (page.entries, page.empty, page.duplicates) == ((), True, 0)
    assert parse_listing(source, text, page_url=LISTING_URL) == []


@pytest.mark.parametrize(("kind", "text"), [("rss", feed()), ("atom", atom())])
def test_an_empty_feed_is_an_error_where_the_source_says_it_never_is(kind: str, text: str) -> None:
    source = make_source(kind=kind, url="https://uploader.example.jp/up/feed", allow_empty=False)

    with pytest.raises(SourceFormatError, match=r"no items.*allow_empty"):
        parse_listing(source, text, page_url=LISTING_URL)


def test_external_entities_are_not_loaded() -> None:
    text = '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>' + feed(
        "<item><title>x &xxe; y</title><guid>1</guid><link>/1</link></item>"
    )
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else "\x00"

    [entry] = parse_listing(rss(), text, page_url=LISTING_URL)

    assert entry.title == "x y"
    assert hostname not in entry.title


# --- Atom -----------------------------------------------------------------------


def test_atom_feed() -> None:
    source = make_source(kind="atom", url="https://uploader.example.jp/up/atom.xml")

    entries = parse_listing(
        source, fixture_text("feed_atom.xml"), page_url="https://uploader.example.jp/up/atom.xml"
    )

    assert entries == [
        Entry(
            entry_id="tag:uploader.example.jp,2005:up00125",
            title="★5 夜桜～Sakura Night～ [ANOTHER]",  # type="html" title: tags stripped
            url="https://uploader.example.jp/up/view/00125",  # rel="alternate", not the enclosure
            comment="①追加音源なし",
            uploaded_at="2026-01-03T21:15:00+09:00",  # published wins over updated
        ),
        Entry(
            entry_id="tag:uploader.example.jp,2005:up00124",
            title="▼2 ㈱ﾋﾞｰﾏﾆ商事 社歌",
            url="https://uploader.example.jp/up/view/00124",  # a link without rel
            comment="1.2MB INSANE",  # from <content>, tags stripped
            uploaded_at="2026-01-03T20:01:00+09:00",  # only updated
        ),
    ]


def atom_entry(title: str, extra: str = "") -> str:
    return f'<entry><id>tag:u.example,2026:1</id>{title}<link href="/1"/>{extra}</entry>'


XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        # type="text" (also the default): the text is what it says, markup-looking or not.
        ("<title>曲名 &lt;EX&gt; 差分</title>", "曲名 <EX> 差分"),
        ('<title type="text">Tom &amp;amp; Jerry</title>', "Tom &amp; Jerry"),
        ('<title type="text">★3 a&lt;br&gt;b</title>', "★3 a<br>b"),
        # type="html": escaped HTML, read as a browser shows it.
        ('<title type="html">曲名 &lt;b&gt;EX&lt;/b&gt; &amp;amp; 差分</title>', "曲名 EX & 差分"),
        ('<title type="html">曲名 &amp;lt;EX&amp;gt;</title>', "曲名 <EX>"),
        ('<title type="html">曲名\n   [EX]</title>', "曲名 [EX]"),  # white space collapses as in text
        # type="xhtml": inline XHTML inside one div.
        (f'<title type="xhtml"><div {XHTML}>曲名 <b>&lt;EX&gt;</b><br/>差分</div></title>', "曲名 <EX> 差分"),
    ],
)
def test_atom_titles_are_read_by_their_type(title: str, expected: str) -> None:
    [entry] = parse_listing(atom_source(), atom(atom_entry(title)), page_url=LISTING_URL)

    assert entry.title == expected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("<summary>a &lt;EX&gt;</summary>", "a <EX>"),
        ('<summary type="html">a &lt;i&gt;EX&lt;/i&gt;</summary>', "a EX"),
        (f'<summary type="xhtml"><div {XHTML}><p>a</p><p>b &amp; c</p></div></summary>', "a b & c"),
        ('<content type="text/plain">x &lt;y&gt;</content>', "x <y>"),
        ('<content type="text/html">&lt;p&gt;x&lt;/p&gt;</content>', "x"),
        ('<content type="application/octet-stream">AAECAw==</content>', ""),  # not text
        ('<content src="https://u.example/1.txt" type="text/plain"/>', ""),  # out of line
    ],
)
def test_atom_summary_and_content_are_read_by_their_type(extra: str, expected: str) -> None:
    [entry] = parse_listing(atom_source(), atom(atom_entry("<title>t</title>", extra)), page_url=LISTING_URL)

    assert entry.comment == expected


def test_rss_titles_are_text_and_descriptions_html() -> None:
    # RSS's convention (and the profile's advice): a title is plain text; a description is escaped HTML.
    text = feed(
        "<item><title>Tom &amp;amp; Jerry &lt;EX&gt;</title><guid>1</guid><link>/1</link>"
        "<description>Tom &amp;amp; Jerry &lt;b&gt;EX&lt;/b&gt;</description></item>"
    )

    [entry] = parse_listing(rss(), text, page_url=LISTING_URL)

    assert (entry.title, entry.comment) == ("Tom &amp; Jerry <EX>", "Tom & Jerry EX")


RSS_091 = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
    '<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"'
    ' "http://my.netscape.com/publish/formats/rss-0.91.dtd">\n'
)


@pytest.mark.parametrize("doctype", [RSS_091, ""], ids=["rss-0.91-doctype", "no-doctype"])
def test_html_named_entities_in_a_feed_are_read(doctype: str) -> None:
    # The RSS 0.91 DTD declares HTML's Latin-1 entities; it is never loaded, so &copy; used to vanish.
    text = doctype + (
        '<rss version="0.91"><channel><title>t</title><item><title>&copy; 2026 曲名&nbsp;EX</title>'
        "<link>http://u.example/1</link><description>a&hellip; &lt;b&gt;&amp;eacute;&lt;/b&gt;</description>"
        "<comments><![CDATA[&copy;]]></comments></item></channel></rss>"
    )

    [entry] = parse_listing(rss(), text, page_url=LISTING_URL)

    assert (entry.title, entry.comment) == ("© 2026 曲名 EX", "a… é")


def test_a_nul_byte_in_a_feed_is_dropped() -> None:
    text = feed("<item><title>曲\x00名</title><guid>1</guid><link>/1</link></item>")

    [entry] = parse_listing(rss(), text, page_url=LISTING_URL)

    assert entry.title == "曲名"


def test_atom_source_given_an_rss_document_is_an_error() -> None:
    source = make_source(kind="atom", url="https://uploader.example.jp/up/atom.xml")

    with pytest.raises(SourceFormatError, match="expected an Atom <feed> document, got <rss>"):
        parse_listing(source, feed("<item/>"), page_url=LISTING_URL)


# --- to_message -----------------------------------------------------------------


def test_entry_to_message_carries_every_field() -> None:
    fetched = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
    entry = Entry("00125", "曲名", "https://u.example/1", "c", "26/01/03", "up00125.zip", "1KB")

    message = entry.to_message("test-up", fetched)

    assert message.model_dump(exclude={"schema_version"}) == {
        "source": "test-up",
        "entry_id": "00125",
        "title": "曲名",
        "url": "https://u.example/1",
        "comment": "c",
        "uploaded_at": "26/01/03",
        "fetched_at": fetched,
        "filename": "up00125.zip",
        "size": "1KB",
        "original_entry_id": None,
        "extra": None,
        "destination": None,
    }


def test_an_absurdly_long_comment_is_cut_to_the_schema_limit() -> None:
    entry = Entry("1", "t" * 5000, "https://u.example/1", comment="あ" * 9000)

    message = entry.to_message("test-up", datetime(2026, 1, 1, tzinfo=UTC))

    assert len(message.title) == 2000 and message.title.endswith("…")
    assert len(message.comment) == 4000


# --- long ids and URLs ------------------------------------------------------------

FETCHED = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
# A permalink guid with its query string: normal in feeds, and over the schema's 256 characters.
LONG_GUID = "https://uploader.example.jp/up/view.cgi?" + "&amp;".join(f"k{i}=v{i}" for i in range(40))


def test_a_long_feed_id_gets_a_stable_short_form_and_the_message_keeps_the_original() -> None:
    text = feed(f"<item><title>a</title><guid>{LONG_GUID}</guid><link>/1</link></item>")
    guid = LONG_GUID.replace("&amp;", "&")
    assert len(guid) > 256

    [entry] = parse_listing(rss(), text, page_url=LISTING_URL)
    [next_run] = parse_listing(rss(), text, page_url=LISTING_URL)
    message = entry.to_message("test-up", FETCHED)

    assert entry.entry_id == next_run.entry_id  # the same key in DynamoDB every run
    assert len(entry.entry_id) <= 256
    assert entry.entry_id.startswith(guid[:100])  # readable in the logs
    assert (message.entry_id, message.original_entry_id) == (entry.entry_id, guid)
    assert parse_message(message.to_json()) == message


def test_long_ids_that_differ_only_at_the_end_stay_distinct() -> None:
    base = "tag:uploader.example.jp,2026:" + "x" * 300
    text = feed(
        f"<item><title>a</title><guid>{base}1</guid><link>/1</link></item>",
        f"<item><title>b</title><guid>{base}2</guid><link>/2</link></item>",
    )

    entries = parse_listing(rss(), text, page_url=LISTING_URL)

    assert len({e.entry_id for e in entries}) == 2


def test_an_id_too_big_for_the_dynamodb_key_is_shortened_too() -> None:
    # 255 characters, but 1,020 bytes of UTF-8: with "ENTRY#", over DynamoDB's 1,024-byte sort key.
    guid = "😀" * 255
    text = feed(f"<item><title>a</title><guid>{guid}</guid><link>/1</link></item>")

    [entry] = parse_listing(rss(), text, page_url=LISTING_URL)

    assert len(entry.entry_id.encode()) < 1000
    assert entry.to_message("test-up", FETCHED).original_entry_id == guid


def test_an_id_within_the_limits_is_unchanged_and_its_message_reads_as_before() -> None:
    text = feed("<item><title>a</title><guid>up00125</guid><link>/1</link></item>")

    [entry] = parse_listing(rss(), text, page_url=LISTING_URL)
    message = entry.to_message("test-up", FETCHED)

    assert (entry.entry_id, message.original_entry_id) == ("up00125", None)
    # No new key in the JSON: a poster that predates the field still reads this message.
    assert "original_entry_id" not in message.to_json()


def test_a_url_over_2000_characters_is_a_format_error_naming_the_item() -> None:
    link = "https://uploader.example.jp/up/dl.cgi?f=" + "a" * 2000
    text = feed(f"<item><title>a</title><guid>1</guid><link>{link}</link></item>")

    with pytest.raises(SourceFormatError, match=r"item 1: url is 2040 characters, over the limit of 2000"):
        parse_listing(rss(), text, page_url=LISTING_URL)


def test_an_entry_the_message_schema_refuses_is_a_format_error_not_a_validation_error() -> None:
    # parse_listing never builds one; this is the last line of defence in to_message.
    with pytest.raises(SourceFormatError, match=r"source 'test-up': entry ' ': .*entry_id"):
        Entry(" ", "t", "https://u.example/1").to_message("test-up", FETCHED)
