"""Fetcher stage, step 2 of 3 (fetch -> **decode** -> parse): page bytes to text.

Old Japanese uploaders are the reason this module exists (see the field notes,
"Japanese pages and old uploaders"): many declare their charset only in
``<meta>``, some declare nothing, and the labels they use do not mean what
Python's codecs of the same name mean. So the fetcher never lets the HTTP
library guess; it hands the raw bytes here.

Order of evidence, first usable one wins (``DecodedPage.how`` says which):

1. ``override``: the source's ``encoding`` setting. The operator has looked, so
   it is final even if a few bytes fail (``"override+replace"``).
2. ``bom``: a UTF-8/16/32 byte order mark.
3. ``http``: the ``charset`` parameter of the Content-Type header.
4. ``meta``: ``<meta charset>``, ``<meta http-equiv content="...; charset=...">``
   or an XML declaration, found in the first 4 KB.
5. ``detected``: a fixed order of strict decodes, see :func:`_detection_candidates`.

A declared label that Python does not know, or whose strict decode fails (a
server that says UTF-8 in front of a Shift_JIS page), is not trusted: we fall
through to the next step. Only when nothing decodes strictly do we decode with
``errors="replace"`` -- using whichever candidate loses the fewest characters --
and ``how`` gets the suffix ``"+replace"`` so the log shows it.

Label normalisation, and why:

* Every Shift_JIS label means **cp932** (Windows-31J). Pages labelled Shift_JIS
  are written on Windows and contain NEC/IBM extensions such as ①, ～ and ㈱
  (and 髙, 﨑); Python's strict ``shift_jis`` rejects them or maps ～ differently.
  (Python's cp932 also maps the single bytes 0x80, 0xA0 and 0xFD-0xFF, as
  Windows does, so "strict" cp932 accepts those without complaint.)
* Every EUC-JP label means **euc_jis_2004**. Python's ``euc_jp`` is plain
  JIS X 0208 (+0212) and rejects ①/㈱ and every JIS X 0213 character; the
  JIS X 0213 superset covers those and the NEC row-13 symbols that Microsoft's
  EUC variants emit. (Trade-off: the rare JIS X 0212 three-byte sequences are
  read as JIS X 0213 plane 2; a source that needs them can set
  ``encoding = "euc_jp"``.)
* ``iso-2022-jp`` means **iso2022_jp_ext**, which adds JIS X 0201 half-width
  katakana (``ESC ( I``), the extension web pages actually use. No Python codec
  reads both that and JIS X 0213 (``iso2022_jp_2004``), so detection tries both.
* ``iso-8859-1``, ``us-ascii`` and ``windows-1252`` in an HTTP header are weak
  evidence: on a Japanese site they are usually a server default (Apache's
  ``AddDefaultCharset``), and Latin-1 decodes any bytes "successfully" into
  mojibake. They are tried only after ``meta`` and detection.
* Only **character sets** count, wherever the label comes from (the sources
  file, the header, ``<meta>``, the XML declaration). Python's codec registry
  also holds transforms (``base64``, ``rot13``, ``zlib``...), escapes
  (``unicode_escape``, which turns ``\\ud800`` into a lone surrogate), IDNA
  and ``punycode`` (which "decode" a page into an empty string) and
  ``undefined``. A label naming one of those is treated like an unknown label.
  So is ``utf-7``: no browser reads it (it was used to slip scripts past
  filters), and it turns ``+...-`` runs of plain ASCII into other text.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final

# Labels are compared after lower-casing and dropping everything that is not a
# letter or digit, so "Shift_JIS", "shift-jis" and "SHIFT JIS" are one key.
_JAPANESE_LABELS: Final = {
    **dict.fromkeys(
        (
            "shiftjis",
            "sjis",
            "xsjis",
            "mskanji",
            "csshiftjis",
            "windows31j",
            "cswindows31j",
            "cp932",
            "ms932",
            "ibm943",
            "xmscp932",
            "shiftjisx",  # seen as "Shift_JIS-X" in old Perl CGIs
        ),
        "cp932",
    ),
    **dict.fromkeys(
        (
            "eucjp",
            "xeucjp",
            "ujis",
            "xeuc",
            "cseucpkdfmtjapanese",
            "eucjpms",
            "eucjpwin",
            "cp51932",
            "eucjis2004",
            "eucjisx0213",
        ),
        "euc_jis_2004",
    ),
    **dict.fromkeys(("iso2022jp", "csiso2022jp", "iso2022jpext"), "iso2022_jp_ext"),
    **dict.fromkeys(("iso2022jp2004", "iso2022jp3"), "iso2022_jp_2004"),
}
_UTF16_32_KEYS: Final = frozenset({"utf16", "utf16le", "utf16be", "utf32", "utf32le", "utf32be"})
_WEAK_HTTP_CODECS: Final = frozenset({"iso8859-1", "ascii", "cp1252"})
# Text codecs (``CodecInfo._is_text_encoding``) that are still not character sets
# of a web page; see the module docstring. Keys are codecs.lookup() names.
_NOT_CHARSETS: Final = frozenset(
    {"undefined", "idna", "punycode", "unicode-escape", "raw-unicode-escape", "utf-7"}
)

#: How much of the page is scanned for a ``<meta>`` or XML declaration.
META_SCAN_BYTES: Final = 4096

_META_CHARSET = re.compile(rb"""<meta\b[^>]*?\bcharset\s*=\s*["']?\s*([A-Za-z0-9_.:+-]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(rb"""^\s*<\?xml\b[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9_.:+-]+)["']""")
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:+-]+)""", re.IGNORECASE)
# ISO-2022-JP switches character sets with ESC sequences and is otherwise 7-bit,
# so UTF-8 would "decode" it as ASCII garbage: look for the escapes first.
_ISO2022_ESCAPE = re.compile(rb"\x1b(?:\$[@B]|\$\([OPQ]|\(I)")

# (BOM, codec); UTF-32 before UTF-16 because the UTF-32-LE BOM starts with UTF-16-LE's.
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass(frozen=True)
class DecodedPage:
    """A decoded page: the text, the Python codec used, and which evidence chose it."""

    text: str
    encoding: str
    how: str


def normalise_encoding(label: str) -> str | None:
    """Map a charset label from a page, a header or the sources file to a Python codec name.

    Japanese labels map to the supersets explained in the module docstring;
    other labels go through :func:`codecs.lookup`. Unknown labels, and codecs
    that are not character sets (``base64``, ``unicode_escape``...), give ``None``.
    """
    key = _label_key(label)
    if not key:
        return None
    if key in _JAPANESE_LABELS:
        return _JAPANESE_LABELS[key]
    try:
        info = codecs.lookup(label.strip())
    except LookupError:
        return None
    # _is_text_encoding is how str.encode/bytes.decode themselves refuse base64 & co.
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def decode_page(body: bytes, *, content_type: str | None = None, override: str | None = None) -> DecodedPage:
    """Decode a fetched page. Never raises for bad bytes (see the module docstring)."""
    override_codec = normalise_encoding(override) if override is not None else None
    if override_codec is not None:
        # The operator's word is final: a few corrupt bytes must not switch codecs.
        if (text := _strict(body, override_codec)) is not None:
            return DecodedPage(text, override_codec, "override")
        return DecodedPage(body.decode(override_codec, errors="replace"), override_codec, "override+replace")

    for bom, bom_codec in _BOMS:
        if body.startswith(bom):
            # A BOM is unambiguous; a page whose bytes then fail is damaged, not mislabelled.
            rest = body[len(bom) :]
            how = "bom" if _strict(rest, bom_codec) is not None else "bom+replace"
            return DecodedPage(rest.decode(bom_codec, errors="replace"), bom_codec, how)

    http_codec = None
    if content_type and (match := _CHARSET_PARAM.search(content_type)):
        http_codec = normalise_encoding(match.group(1))
    weak = http_codec in _WEAK_HTTP_CODECS
    steps = [
        (None if weak else http_codec, "http"),
        (_declared_in_document(body[:META_SCAN_BYTES]), "meta"),
        *((codec, "detected") for codec in _detection_candidates(body)),
        (http_codec if weak else None, "http"),
    ]
    # Every distinct candidate, in order of trust, for the errors="replace" last resort.
    tried: list[tuple[str, str]] = []
    for codec, how in steps:
        if codec is None or any(codec == seen for seen, _ in tried):
            continue
        tried.append((codec, how))
        if (decoded := _strict(body, codec)) is not None:
            return DecodedPage(decoded, codec, how)
    return _least_damaged(body, tried)


def _label_key(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", label.lower())


def _strict(body: bytes, codec: str) -> str | None:
    try:
        return body.decode(codec)
    except UnicodeDecodeError:
        return None


def _declared_in_document(head: bytes) -> str | None:
    """Codec named by an XML declaration or ``<meta>`` in the first bytes, if known."""
    for pattern in (_XML_DECLARATION, _META_CHARSET):
        if match := pattern.search(head):
            codec = normalise_encoding(match.group(1).decode("ascii"))
            # A <meta> can only be read because the bytes are ASCII-compatible, so a
            # "utf-16"/"utf-32" label there is wrong; HTML's rule is to read it as UTF-8.
            if codec is not None and _label_key(codec) in _UTF16_32_KEYS:
                return "utf-8"
            if codec is not None:
                return codec
    return None


def _detection_candidates(body: bytes) -> list[str]:
    """Codecs to try strictly, in order, when the page declares nothing usable.

    A fixed order of strict decodes rather than charset-normalizer: on short
    listings (a title and a few rows) charset-normalizer returned no result, or
    cp932 for EUC-JP bytes such as "▼ 差分", while the byte structure of the
    Japanese encodings makes strict decoding decisive:

    * ISO-2022-JP is 7-bit and would pass as UTF-8, so its escapes are checked first.
    * UTF-8 next: its multi-byte structure almost never validates by accident.
    * EUC-JP before cp932: Shift_JIS hiragana, katakana and punctuation use lead
      bytes 0x81-0x84, which EUC-JP forbids, so real Shift_JIS text fails strict
      EUC-JP; EUC-JP bytes (0xA1-0xFE pairs) on the other hand often pass as
      cp932 half-width katakana. Trying cp932 first would turn EUC-JP pages into
      half-width kana soup.
    """
    candidates = ["iso2022_jp_ext", "iso2022_jp_2004"] if _ISO2022_ESCAPE.search(body) else []
    return [*candidates, "utf-8", "euc_jis_2004", "cp932"]


def _least_damaged(body: bytes, tried: list[tuple[str, str]]) -> DecodedPage:
    """Last resort: the candidate whose ``errors="replace"`` decode loses least.

    Ties go to the more trusted candidate (earlier in ``tried``), so one corrupt
    byte in a page declared Shift_JIS still decodes as cp932.
    """
    best: DecodedPage | None = None
    best_lost = 0
    for codec, how in tried:
        text = body.decode(codec, errors="replace")
        lost = text.count("\ufffd")
        if best is None or lost < best_lost:
            best, best_lost = DecodedPage(text, codec, f"{how}+replace"), lost
    assert best is not None
    return best
