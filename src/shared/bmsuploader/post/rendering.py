"""Rendering: the poster's "message -> post text" step.

Pure and deterministic: the same :class:`~bmsuploader.contract.message.EntryMessage`,
template and link policy always give byte-identical text. No clock, no
randomness. That is what lets X's duplicate-content 403 catch the one retry
idempotency cannot (a crash after X accepted the post, before the record was
marked done): the retry renders the very same bytes.

What rendering guarantees:

* **Scraped text is made safe** (:func:`clean_text`, then :func:`neutralise`):
  no control or invisible formatting characters, no live @mention, #hashtag or
  $cashtag, and no accidental link (``song.bms`` and ``song.zip`` are links on X,
  because ``.bms`` and ``.zip`` are top-level domains). The template's own
  literal text is the operator's and is left alone, so a template can carry its
  own ``#BMS`` hashtag.
* **The entry URL is inserted verbatim**, never cut, never neutralised, and only
  when the source's link policy says so (posts with a URL cost far more on X).
* **Empty segments disappear.** A template splits into segments at ``" / "``
  and at line breaks. A segment that has at least one placeholder, whose
  placeholders all rendered empty, and that has no other literal text (only
  spaces) is dropped together with one separator next to it. Spaces at the
  ends of a kept segment are trimmed. So
  ``"【新着差分】{title} / {comment} / {url}"`` with no comment renders
  ``"【新着差分】T / https://..."``, and with the link policy off ``"【新着差分】T / C"``.
* **The post fits**: weighted length (twitter-text rules, as X counts it) at most
  :data:`MAX_WEIGHTED_LENGTH`. If it is longer, the longest free-text fields
  (title, comment, filename; never the URL) are cut to a common length with
  ``"…"``: the longest field is shortened first, down to the next one, then
  both, and so on. If even one character each does not fit, the message is
  poison (:class:`~bmsuploader.contract.errors.PoisonMessageError`).
"""

from __future__ import annotations

import re
import string
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from bmsuploader.contract.errors import ConfigError, PoisonMessageError
from bmsuploader.contract.message import EntryMessage

with warnings.catch_warnings():
    # twitter-text-parser 3.0 (unmaintained, but X's counting rules have not moved)
    # loads its emoji table through pkg_resources, which only setuptools < 82
    # provides; the project pins that. Its deprecation warning says nothing new.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from twitter_text import extract_urls, extract_urls_with_indices, parse_tweet

#: X's limit on a post's weighted length.
MAX_WEIGHTED_LENGTH = 280
ELLIPSIS = "…"
#: Scraped fields that may be shortened to make a post fit; the URL never is.
FREE_TEXT_FIELDS = ("title", "comment", "filename")

# Entity triggers and their stand-ins. twitter-text (and so X) starts a mention at
# "@" or FULL-WIDTH "＠" and a hashtag at "#" or FULL-WIDTH "＃", so the full-width
# forms are no escape. The stand-ins below are in none of those sets:
#   "@", "＠" -> "﹫" (U+FE6B SMALL COMMERCIAL AT): still reads as an at sign.
#   "#", "＃" -> "♯" (U+266F MUSIC SHARP SIGN): reads as "#", and fits a music bot.
#   "$"       -> "＄" (U+FF04 FULL-WIDTH DOLLAR): cashtags use the ASCII "$" only.
# Every occurrence is replaced, not only those before a word character: a trigger
# at the end of a field could otherwise join the template text after it.
# Visible look-alikes rather than invisible joiners, so the text says what it is.
_TRIGGERS = str.maketrans({"@": "﹫", "＠": "﹫", "#": "♯", "＃": "♯", "$": "＄"})
# A link hidden in scraped text loses its dots to U+2024 ONE DOT LEADER, which
# looks the same but is no domain separator for twitter-text.
_URL_DOT = "\u2024"

_SEPARATOR_RE = re.compile(r"( / |\n)")
_WHITESPACE_RUN = re.compile(r"\s+")
_IDEOGRAPHIC_SPACE = "\u3000"


@dataclass(frozen=True)
class RenderedPost:
    text: str
    weighted_length: int
    #: Whether the post carries a link: the entry URL, or anything X would link.
    #: X prices such posts higher.
    has_url: bool


# --- cleaning -----------------------------------------------------------------


def _is_dropped(ch: str) -> bool:
    """Control, formatting (zero-width, bidi overrides, BOM), surrogate, noncharacter."""
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
        return True
    code = ord(ch)
    # Noncharacters; twitter-text rejects U+FFFE and U+FFFF outright.
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def _collapse(match: re.Match[str]) -> str:
    # A lone ideographic space is deliberate in Japanese titles ("曲名　作者").
    return match.group() if match.group() == _IDEOGRAPHIC_SPACE else " "


def clean_text(value: str) -> str:
    """Normalise scraped text: NFC, no control/format characters, single spaces.

    Whitespace controls (tab, newline, ...) become spaces first, so words stay
    apart; other controls and invisible format characters (zero-width, bidi
    overrides, BOM, soft hyphen) are deleted. Runs of whitespace collapse to one
    space and the ends are stripped. NFC is applied last, because deleting a
    format character can bring a base letter and its combining mark together.
    """
    spaced = "".join(" " if ch.isspace() and ch != _IDEOGRAPHIC_SPACE else ch for ch in value)
    kept = "".join(ch for ch in spaced if not _is_dropped(ch))
    collapsed = _WHITESPACE_RUN.sub(_collapse, kept).strip()
    return unicodedata.normalize("NFC", collapsed)


def neutralise(value: str) -> str:
    """Make scraped text inert on X: no mention, hashtag, cashtag or link.

    ``@``/``＠`` become ``﹫``, ``#``/``＃`` become ``♯`` and ``$`` becomes
    ``＄`` (see ``_TRIGGERS`` for why these). Anything twitter-text would turn
    into a link (``example.jp``, ``song.zip``, ``https://...``) has its dots
    replaced by a look-alike. Idempotent.
    """
    text = value.translate(_TRIGGERS)
    # Each pass breaks every link found; every link twitter-text finds has a dot
    # (it needs a TLD), so one pass normally suffices and the loop is bounded.
    for _ in range(5):
        spans = extract_urls_with_indices(text)
        if not spans:
            break
        chars = list(text)
        for span in spans:
            start, end = span["indices"]
            for i in range(start, end):
                if chars[i] == ".":
                    chars[i] = _URL_DOT
        text = "".join(chars)
    return text


# --- the template -------------------------------------------------------------


def _check_url(url: str) -> str:
    """The entry URL comes from a scraped page: only a plain http(s) URL may go out."""
    parts = urlsplit(url)
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.netloc
        or any(ch.isspace() or _is_dropped(ch) for ch in url)
    ):
        raise PoisonMessageError(f"entry url {url[:200]!r} is not a plain http(s) URL")
    return url


@dataclass(frozen=True)
class _Piece:
    literal: str
    field: str | None


def _parse_segment(segment: str) -> tuple[_Piece, ...]:
    try:
        parsed = list(string.Formatter().parse(segment))
    except ValueError as exc:
        raise ConfigError(f"template segment {segment!r}: {exc}") from exc
    pieces = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (spec or conversion):
            raise ConfigError(
                f"template placeholder {{{field}}} takes no conversion or format spec; "
                "rendering decides cleaning and shortening"
            )
        pieces.append(_Piece(literal=literal, field=field))
    return tuple(pieces)


@dataclass(frozen=True)
class _Template:
    segments: tuple[tuple[_Piece, ...], ...]
    separators: tuple[str, ...]  # separators[i] sits between segments i and i+1

    @classmethod
    def parse(cls, template: str) -> _Template:
        parts = _SEPARATOR_RE.split(template)
        return cls(
            segments=tuple(_parse_segment(p) for p in parts[0::2]),
            separators=tuple(parts[1::2]),
        )

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(p.field for seg in self.segments for p in seg if p.field is not None)

    def render(self, values: Mapping[str, str]) -> str:
        rendered: list[str | None] = [_render_segment(seg, values) for seg in self.segments]
        out: list[str] = []
        for index, text in enumerate(rendered):
            if text is None:
                continue
            if out:
                # The separator just before this segment; a dropped segment takes
                # the separator before it (or, if it was first, after it) along.
                out.append(self.separators[index - 1])
            out.append(text)
        return "".join(out).strip()


def _render_segment(pieces: tuple[_Piece, ...], values: Mapping[str, str]) -> str | None:
    """Render one segment, or ``None`` when it is to be dropped (see module doc)."""
    out: list[str] = []
    placeholders = 0
    filled = False
    for piece in pieces:
        literal = piece.literal
        if piece.field is not None:
            value = values.get(piece.field, "")
            placeholders += 1
            filled = filled or bool(value)
            # "#{title}" in a template would turn scraped text into a hashtag (or
            # "@{title}" into a mention): the trigger right before a scraped
            # value is neutralised too. Literal "#BMS" elsewhere stays live.
            if value and piece.field != "url" and literal and literal[-1] in "@＠#＃$":
                literal = literal[:-1] + literal[-1].translate(_TRIGGERS)
            out.append(literal)
            out.append(value)
        else:
            out.append(literal)
    if placeholders and not filled and not "".join(p.literal for p in pieces).strip():
        return None
    # "コメント: {comment}" with no comment must not leave "コメント: " before the separator.
    return "".join(out).strip(" ")


# --- shortening ---------------------------------------------------------------


def _is_continuation(ch: str) -> bool:
    """Characters that belong to the one before: combining marks, variation
    selectors, emoji skin-tone modifiers. A cut must not separate them."""
    code = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or 0xFE00 <= code <= 0xFE0F
        or 0x1F3FB <= code <= 0x1F3FF
    )


def _shorten(value: str, cap: int) -> str:
    """``value`` if it has at most ``cap`` characters, else its first ``cap`` + "…"."""
    if len(value) <= cap:
        return value
    cut = cap
    while 0 < cut < len(value) and _is_continuation(value[cut]):
        cut -= 1
    head = value[: cut or cap].rstrip() or value[: cut or cap]
    # The cut can make a link out of text that was none ("song.zipper" ->
    # "song.zip…"), so the shortened text is neutralised again.
    return neutralise(head + ELLIPSIS)


def weighted_length(text: str) -> int:
    """X's weighted length of ``text`` (twitter-text v3 rules: CJK 2, URL 23, emoji 2)."""
    return int(parse_tweet(text).weightedLength)


def _fit(compose: Callable[[int | None], str], longest: int) -> str:
    """The text for the largest cap that fits, found by binary search.

    ``compose(cap)`` renders with every free-text field cut to ``cap``
    characters; ``compose(None)`` renders them whole.
    """
    text = compose(None)
    if weighted_length(text) <= MAX_WEIGHTED_LENGTH:
        return text
    if longest == 0 or weighted_length(compose(1)) > MAX_WEIGHTED_LENGTH:
        raise PoisonMessageError(
            f"post cannot fit in {MAX_WEIGHTED_LENGTH} weighted characters even with "
            f"{', '.join(FREE_TEXT_FIELDS)} cut to one character: "
            f"{weighted_length(compose(1))} with the template's fixed text and URL"
        )
    # Invariant: cap ``low`` fits. The weight is not strictly monotonic in the cap
    # ("…" weighs 2, a dropped Latin letter 1), so this finds a fitting cap close to
    # the largest; it never returns one that does not fit.
    low, high = 1, longest
    while low < high:
        mid = (low + high + 1) // 2
        if weighted_length(compose(mid)) <= MAX_WEIGHTED_LENGTH:
            low = mid
        else:
            high = mid - 1
    return compose(low)


# --- the entry point ----------------------------------------------------------


def _scraped(value: str | None) -> str:
    return neutralise(clean_text(value)) if value else ""


def render_post(message: EntryMessage, *, template: str, include_link: bool) -> RenderedPost:
    """Render one post. Raises :class:`PoisonMessageError` if it cannot be posted."""
    parsed = _Template.parse(template)
    fields = parsed.fields
    values: dict[str, str] = {
        # a JSON or table source's extra fields ({level}, {symbol}...); the standard ones win
        **{name: _scraped(value) for name, value in (message.extra or {}).items()},
        "source": _scraped(message.source),
        "entry_id": _scraped(message.entry_id),
        "size": _scraped(message.size),
        "uploaded_at": _scraped(message.uploaded_at),
        "url": _check_url(message.url) if include_link and "url" in fields else "",
    }
    free = {name: _scraped(getattr(message, name)) for name in FREE_TEXT_FIELDS}
    longest = max((len(free[name]) for name in FREE_TEXT_FIELDS if name in fields), default=0)

    def compose(cap: int | None) -> str:
        cut = free if cap is None else {name: _shorten(value, cap) for name, value in free.items()}
        return parsed.render({**values, **cut})

    text = _fit(compose, longest)
    if not text:
        raise PoisonMessageError(f"template {template!r} rendered an empty post")
    # The entry link counts even where twitter-text would not link it (an IP or
    # localhost host in local runs): has_url feeds the spend estimate, which must
    # not come out low. Anything else X would link counts too.
    has_url = bool(values["url"]) or bool(extract_urls(text))
    return RenderedPost(text=text, weighted_length=weighted_length(text), has_url=has_url)
