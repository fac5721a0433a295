"""Properties of decoding and parsing over generated pages: a reading or a typed error, never a crash.

The rule (issue 11): one item's bad data, or a page's odd bytes, must never fail
a whole source with an untyped error. So for any bytes, ``decode_page`` then
``parse_page`` either gives entries that become valid queue messages, or raises
:class:`SourceFormatError`.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from urllib.parse import urljoin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsuploader.config.sources import Source, parse_sources
from bmsuploader.contract.errors import SourceFormatError
from bmsuploader.fetch.decoding import decode_page
from bmsuploader.fetch.parsing import _urljoin, parse_page

PAGE_URL = "https://uploader.example.jp/up/upload.cgi"
FETCHED = datetime(2026, 1, 1, tzinfo=UTC)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def source(**fields: object) -> Source:
    return parse_sources({"source": [{"name": "fuzz", "url": PAGE_URL, **fields}]}).sources[0]


SOURCES = {
    "classic-cgi": source(preset="classic-cgi"),
    "rss": source(kind="rss"),
    "atom": source(kind="atom"),
}

# Pieces the fuzzing run found trouble with, and their neighbours.
ODD = st.sampled_from(
    [
        "\x00", "\x01", "\x0b", "\x1f", "\x7f", "\x85", "\ufdd0", "\ufdd1", "\ufffe", "\ue000", "\ufffd",
        "<br>", "<p>", "<li>", "</p>", "<div>", "<![CDATA[<!DOCTYPE><SCRIPT]]>", "<!DOCTYPE>", "<SCRIPT",
        "<body>", "</body><body>", "&copy;", "&amp;amp;", "&#0;", "&#xD800;", "&nbsp;", "&bogus;", "&",
        "http://[::1", "https://[bad]/", "./src/up00001.zip", "upload.cgi?page=2", "upload.cgi?get=00042",
        '<?xml version="1.0" encoding="unicode_escape"?>', '<meta charset="base64">', "\\ud800",
        '<meta charset="utf-7">', "+AGEAYgBj-", "①～㈱", "ｿﾌﾗﾝ", "😀", "x" * 300, "<![CDATA[", "]]>", "<!--",
    ]
)  # fmt: skip
TEXT = st.lists(st.one_of(ODD, st.text(max_size=12)), max_size=8).map("".join)


@st.composite
def listing(draw: st.DrawFn) -> str:
    rows = draw(st.lists(st.tuples(TEXT, TEXT, TEXT), max_size=5))
    cells = "".join(
        f'<tr><td><a href="{href}">{name}</a></td><td>{comment}</td></tr>' for href, name, comment in rows
    )
    return f"<html><head>{draw(TEXT)}</head><body><table>{cells}</table>{draw(TEXT)}</body></html>"


@st.composite
def rss(draw: st.DrawFn) -> str:
    items = draw(st.lists(st.tuples(TEXT, TEXT, TEXT, TEXT), max_size=4))
    body = "".join(
        f"<item><title>{t}</title><link>{link}</link><guid>{guid}</guid><description>{d}</description></item>"
        for t, link, guid, d in items
    )
    return f'{draw(TEXT)}<rss version="2.0"><channel><title>t</title>{body}</channel></rss>'


@st.composite
def atom(draw: st.DrawFn) -> str:
    kind = st.sampled_from(['type="text"', 'type="html"', 'type="xhtml"', 'type="image/png"', ""])
    entries = draw(st.lists(st.tuples(TEXT, kind, TEXT, TEXT), max_size=4))
    body = "".join(
        f'<entry><id>{i}</id><title {k}>{t}</title><link href="{link}"/><summary {k}>{t}</summary></entry>'
        for t, k, i, link in entries
    )
    return f'<feed xmlns="http://www.w3.org/2005/Atom">{body}</feed>'


ENCODINGS = st.sampled_from(["utf-8", "cp932", "euc_jis_2004", "utf-16", "latin-1"])


def read(kind: str, body: bytes, content_type: str | None = None) -> None:
    """Decode and parse; only SourceFormatError may escape, and every entry makes a message."""
    text = decode_page(body, content_type=content_type).text
    try:
        page = parse_page(SOURCES[kind], text, page_url=PAGE_URL)
    except SourceFormatError:
        return
    for entry in page.entries:
        with contextlib.suppress(SourceFormatError):
            entry.to_message("fuzz", FETCHED)


@FUZZ
@given(kind=st.sampled_from(sorted(SOURCES)), body=st.binary(max_size=400), label=TEXT)
def test_any_bytes_are_read_or_a_format_error(kind: str, body: bytes, label: str) -> None:
    read(kind, body, content_type=f"text/html; charset={label}")


@FUZZ
@given(page=st.one_of(listing(), rss(), atom()), encoding=ENCODINGS)
def test_generated_pages_are_read_or_a_format_error(page: str, encoding: str) -> None:
    body = page.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace")
    for kind in SOURCES:
        read(kind, body)


# --- the per-page URL join is urljoin -----------------------------------------------

SEGMENT = st.sampled_from(["", ".", "..", "src", "up00001.zip", "a:b", "x.cgi", "%20", "[", "]", "up"])
LINK = st.lists(
    st.one_of(SEGMENT, st.sampled_from(["/", "//", "?", "#", "?a=/b", "#f?g", "http:", "mailto:"]))
)
BASE = st.sampled_from(
    [
        PAGE_URL,
        "https://uploader.example.jp",
        "https://uploader.example.jp/",
        "http://h/a/b/?q=1#frag",
        "http://[::1]:8080/up/list",
        "https://h/a/b/c/",
    ]
)


@settings(max_examples=200, deadline=None)
@given(base=BASE, parts=LINK)
def test_the_per_page_url_join_is_urljoin(base: str, parts: list[str]) -> None:
    link = "".join(parts)
    try:
        expected: str | type[ValueError] = urljoin(base, link)
    except ValueError:
        expected = ValueError
    if expected is ValueError:
        with pytest.raises(ValueError):
            _urljoin(base, link)
    else:
        assert _urljoin(base, link) == expected
