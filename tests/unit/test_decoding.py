"""Decoding real Japanese page bytes: which evidence wins, and what survives."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmsuploader.fetch.decoding import decode_page, normalise_encoding

PAGES = Path(__file__).resolve().parent.parent / "fixtures" / "pages"

# The characters that break naive decoding: NEC/IBM extensions (①, ㈱, 髙),
# the full-width tilde that cp932 and shift_jis map differently, half-width kana.
TRICKY = "①～㈱ｿﾌﾗﾝ髙"
# For EUC-JP: JIS X 0213 characters (﨑, ①, ㈱ are all outside plain EUC-JP).
TRICKY_EUC = "①～㈱ｶｲｼｬ﨑"


def html(body: str, *, meta: str = "") -> str:
    return f"<html><head>{meta}<title>差分</title></head><body><p>{body}</p></body></html>"


SJIS_META = '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'


# --- where the charset comes from ---------------------------------------------


def test_classic_page_charset_only_in_meta_decodes_as_cp932() -> None:
    body = (PAGES / "classic_sjis.html").read_bytes()

    page = decode_page(body, content_type="text/html")

    assert (page.encoding, page.how) == ("cp932", "meta")
    for text in ("夜桜～Sakura Night～", "①追加音源なし", "㈱ﾋﾞｰﾏﾆ商事", "髙橋のテーマ", "ｿﾌﾗﾝ推奨"):
        assert text in page.text


def test_strict_shift_jis_would_fail_on_the_same_bytes() -> None:
    # Why the label is normalised: Python's "shift_jis" rejects what real pages contain.
    body = (PAGES / "classic_sjis.html").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        body.decode("shift_jis")


def test_http_charset_is_used_when_meta_is_absent() -> None:
    body = html(TRICKY).encode("cp932")

    page = decode_page(body, content_type="text/html; charset=Shift_JIS")

    assert (page.encoding, page.how) == ("cp932", "http")
    assert TRICKY in page.text


def test_http_charset_beats_a_wrong_meta() -> None:
    body = html(TRICKY, meta='<meta charset="EUC-JP">').encode("cp932")

    page = decode_page(body, content_type='text/html; charset="Windows-31J"')

    assert (page.encoding, page.how) == ("cp932", "http")
    assert TRICKY in page.text


def test_http_charset_that_does_not_decode_falls_through_to_meta() -> None:
    # A server-wide "charset=UTF-8" in front of a Shift_JIS page.
    body = html(TRICKY, meta=SJIS_META).encode("cp932")

    page = decode_page(body, content_type="text/html; charset=UTF-8")

    assert (page.encoding, page.how) == ("cp932", "meta")
    assert TRICKY in page.text


def test_latin1_server_default_does_not_turn_a_shift_jis_page_into_mojibake() -> None:
    body = html(TRICKY, meta=SJIS_META).encode("cp932")

    page = decode_page(body, content_type="text/html; charset=ISO-8859-1")

    assert (page.encoding, page.how) == ("cp932", "meta")
    assert TRICKY in page.text


def test_latin1_header_still_applies_to_a_page_nothing_else_can_read() -> None:
    body = b"<p>caf\xe9 au lait</p>"

    page = decode_page(body, content_type="text/html; charset=iso-8859-1")

    assert (page.encoding, page.how) == ("iso8859-1", "http")
    assert page.text == "<p>café au lait</p>"


def test_html5_meta_charset_euc_jp_decodes_jis_x_0213_characters() -> None:
    body = (PAGES / "classic_get_eucjp.html").read_bytes()

    page = decode_page(body)

    assert (page.encoding, page.how) == ("euc_jis_2004", "meta")
    assert "﨑陽軒のうた ①② ～EX～ ㈱ｶｲｼｬ" in page.text


def test_plain_euc_jp_cannot_read_those_characters() -> None:
    body = TRICKY_EUC.encode("euc_jis_2004")
    with pytest.raises(UnicodeDecodeError):
        body.decode("euc_jp")


def test_xml_declaration_is_read() -> None:
    body = (PAGES / "feed_rss_sjis.xml").read_bytes()

    page = decode_page(body, content_type="application/rss+xml")

    assert (page.encoding, page.how) == ("cp932", "meta")
    assert "㈱ﾋﾞｰﾏﾆ商事" in page.text


def test_unknown_label_falls_through_to_detection() -> None:
    body = html(TRICKY, meta='<meta charset="x-klingon">').encode("cp932")

    page = decode_page(body, content_type="text/html; charset=bogus-8")

    assert (page.encoding, page.how) == ("cp932", "detected")
    assert TRICKY in page.text


def test_meta_beyond_the_scan_window_is_not_read() -> None:
    body = ("<!--" + "x" * 5000 + "-->" + SJIS_META + html("ｱｲｳ")).encode("cp932")

    page = decode_page(body)

    # Only the head is scanned (old CGIs put the meta first); found later, it is ignored.
    assert (page.encoding, page.how) == ("cp932", "detected")


# --- detection ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "codec", "expected"),
    [
        (html(TRICKY), "cp932", "cp932"),
        (html("▼1 はじまりの唄 " + TRICKY_EUC), "euc_jis_2004", "euc_jis_2004"),
        (html("★5 夜桜 " + TRICKY), "utf-8", "utf-8"),
        (html("ｱﾝｺｰﾙ テスト"), "iso2022_jp_ext", "iso2022_jp_ext"),
        (html("﨑陽軒"), "iso2022_jp_2004", "iso2022_jp_2004"),
    ],
)
def test_undeclared_pages_are_detected(text: str, codec: str, expected: str) -> None:
    page = decode_page(text.encode(codec), content_type="text/html")

    assert (page.encoding, page.how) == (expected, "detected")
    assert page.text == text


def test_euc_jp_is_tried_before_cp932_because_cp932_accepts_euc_bytes() -> None:
    # The reason for the detection order: these EUC-JP bytes are *valid* cp932
    # (as half-width kana soup), so cp932 first would silently produce mojibake.
    body = "▼1 はじまりの唄 差分です".encode("euc_jis_2004")
    assert body.decode("cp932") != "▼1 はじまりの唄 差分です"

    page = decode_page(body)

    assert (page.encoding, page.text) == ("euc_jis_2004", "▼1 はじまりの唄 差分です")


def test_pure_ascii_is_utf8() -> None:
    page = decode_page(b"<html><body>BMS</body></html>")
    assert (page.encoding, page.how) == ("utf-8", "detected")


# --- override and BOM ---------------------------------------------------------


def test_override_beats_every_declaration() -> None:
    # The page claims Shift_JIS everywhere but is EUC-JP; the operator knows.
    body = html(TRICKY_EUC, meta=SJIS_META).encode("euc_jis_2004")

    page = decode_page(body, content_type="text/html; charset=Shift_JIS", override="EUC-JP")

    assert (page.encoding, page.how) == ("euc_jis_2004", "override")
    assert TRICKY_EUC in page.text


def test_override_that_fails_is_still_final_but_marked() -> None:
    body = html("①").encode("cp932") + b"\x82"  # a lead byte with no trail byte

    page = decode_page(body, override="sjis")

    assert (page.encoding, page.how) == ("cp932", "override+replace")
    assert "①" in page.text and page.text.endswith("\ufffd")


def test_utf8_bom_wins_over_a_wrong_meta_and_is_stripped() -> None:
    body = b"\xef\xbb\xbf" + html(TRICKY, meta=SJIS_META).encode("utf-8")

    page = decode_page(body, content_type="text/html; charset=Shift_JIS")

    assert (page.encoding, page.how) == ("utf-8", "bom")
    assert page.text.startswith("<html>") and TRICKY in page.text


def test_utf16_bom() -> None:
    body = b"\xff\xfe" + html(TRICKY).encode("utf-16-le")

    page = decode_page(body)

    assert (page.encoding, page.how, page.text) == ("utf-16-le", "bom", html(TRICKY))


# --- last resort --------------------------------------------------------------


def test_one_corrupt_byte_keeps_the_declared_codec_and_replaces_only_it() -> None:
    good = html(TRICKY, meta=SJIS_META).encode("cp932")
    body = good.replace(b"<p>", b"<p>\x81\x20", 1)  # lead byte + invalid trail byte

    page = decode_page(body, content_type="text/html")

    assert (page.encoding, page.how) == ("cp932", "meta+replace")
    assert page.text.count("\ufffd") == 1
    assert TRICKY in page.text


def test_undeclared_damaged_page_uses_the_least_damaged_candidate() -> None:
    # (Not 0x80/0xA0/0xFD-0xFF: Python's cp932 maps those single bytes, like Windows.)
    body = ("ｱ" + "日本語の差分です" * 5).encode("cp932") + b"\x82"

    page = decode_page(body)

    assert (page.encoding, page.how) == ("cp932", "detected+replace")
    assert page.text == "ｱ" + "日本語の差分です" * 5 + "\ufffd"


# --- labels -------------------------------------------------------------------


@pytest.mark.parametrize(
    "label",
    ["Shift_JIS", "shift-jis", "SJIS", "x-sjis", "MS_Kanji", "windows-31j", "csShiftJIS", "cp932", "MS932"],
)
def test_every_shift_jis_label_means_cp932(label: str) -> None:
    assert normalise_encoding(label) == "cp932"


@pytest.mark.parametrize(
    "label", ["EUC-JP", "euc_jp", "x-euc-jp", "eucjp", "cseucpkdfmtjapanese", "eucJP-ms"]
)
def test_every_euc_jp_label_means_euc_jis_2004(label: str) -> None:
    assert normalise_encoding(label) == "euc_jis_2004"


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("ISO-2022-JP", "iso2022_jp_ext"),
        ("iso-2022-jp-2004", "iso2022_jp_2004"),
        ("UTF-8", "utf-8"),
        ("utf8", "utf-8"),
        ("latin1", "iso8859-1"),
        ("x-klingon", None),
        ("", None),
    ],
)
def test_other_labels(label: str, expected: str | None) -> None:
    assert normalise_encoding(label) == expected


# --- only character sets ------------------------------------------------------

# Python codecs that are not character sets: bytes-to-bytes transforms, escapes,
# IDNA and the deliberately failing "undefined". UTF-7 is a charset on paper but
# no browser reads it (it hid scripts from filters), and it turns "+..-" into text.
NOT_CHARSETS = [
    "base64",
    "rot13",
    "zlib",
    "bz2",
    "hex",
    "uu",
    "quopri",
    "undefined",
    "idna",
    "punycode",
    "unicode_escape",
    "raw_unicode_escape",
    "utf-7",
]


@pytest.mark.parametrize("label", NOT_CHARSETS)
def test_a_codec_that_is_not_a_character_set_is_no_charset(label: str) -> None:
    assert normalise_encoding(label) is None


@pytest.mark.parametrize("label", NOT_CHARSETS)
def test_a_page_naming_a_non_text_codec_is_read_by_its_bytes(label: str) -> None:
    body = html(TRICKY, meta=f'<meta charset="{label}">').encode("cp932")

    page = decode_page(body, content_type=f"text/html; charset={label}")

    assert (page.encoding, page.how) == ("cp932", "detected")
    assert TRICKY in page.text


@pytest.mark.parametrize("label", NOT_CHARSETS)
def test_an_xml_declaration_naming_a_non_text_codec_is_ignored(label: str) -> None:
    body = f'<?xml version="1.0" encoding="{label}"?><rss><title>\\ud800 ①</title></rss>'.encode()

    page = decode_page(body)

    assert (page.encoding, page.how) == ("utf-8", "detected")
    assert page.text == body.decode("utf-8")  # "\ud800" stays six characters, no lone surrogate


@pytest.mark.parametrize("label", NOT_CHARSETS)
def test_a_non_text_override_is_not_used(label: str) -> None:
    # The sources file refuses these (test_sources); called directly, the page's own evidence wins.
    body = html(TRICKY, meta=SJIS_META).encode("cp932")

    page = decode_page(body, override=label)

    assert (page.encoding, page.how) == ("cp932", "meta")
