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
  own ``#BMS`` hashtag. What counts is what X's own rules see
  (:mod:`bmsuploader.post.tweet_text`), checked on the finished post: a link,
  mention, hashtag or cashtag that touches scraped text, also one formed across
  placeholders (``{title}.{comment}``), is broken up.
* **The entry URL is never cut or neutralised**, and is posted only when the
  source's link policy says so (posts with a URL cost far more on X). In its
  path, query and fragment, characters a URL may not hold unencoded (RFC 3986:
  non-ASCII, ``^``, ``{``, ``|``...) are percent-encoded, as a browser sends them,
  so X links the whole URL and nothing after it; a URL whose text would still
  make X link something else, or leave a live tag, is poison.
* **Empty segments disappear.** A template splits into segments at ``" / "``
  and at line breaks. A segment that has at least one placeholder, whose
  placeholders all rendered empty, and that has no other literal text (only
  spaces) is dropped together with one separator next to it. Spaces at the
  ends of a kept segment are trimmed. So
  ``"【新着差分】{title} / {comment} / {url}"`` with no comment renders
  ``"【新着差分】T / https://..."``, and with the link policy off ``"【新着差分】T / C"``.
* **The post fits** its network: measured by the network's rule
  (:class:`~bmsuploader.post.rules.PostRules`; for X the weighted length, as
  twitter-text counts it, at most :data:`MAX_WEIGHTED_LENGTH`). If it is
  longer, the scraped fields the template uses (any of title, comment,
  filename, size, uploaded_at, entry_id, source; never the URL) are cut to a
  common length with ``"…"``: the longest field is shortened first, down to
  the next one, then both, and so on. If even one
  character each does not fit, the message is poison
  (:class:`~bmsuploader.contract.errors.PoisonMessageError`). A network with
  markup of its own (Discord markdown, Misskey MFM) escapes it in each scraped
  field (:attr:`PostRules.escape`), after the cut, so the escape is measured too.
* **Bounded work.** A field longer than :data:`MAX_FIELD_CHARS` is cut before
  anything measures it (no more could fit), and the cut point is found by binary
  search: O(log n) measurements of a bounded text, whatever a page holds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from bmsuploader.config.templates import Piece, Template, parse_template
from bmsuploader.contract.errors import PoisonMessageError
from bmsuploader.contract.message import EntryMessage
from bmsuploader.post.rules import X_RULES, PostRules
from bmsuploader.post.tweet_text import (
    MAX_WEIGHTED_LENGTH,
    Entity,
    extract_entities,
    extract_urls,
    weighted_length,
)

__all__ = [
    "MAX_WEIGHTED_LENGTH",
    "RenderedPost",
    "clean_text",
    "neutralise",
    "render_post",
    "weighted_length",
]
ELLIPSIS = "…"
#: A scraped field is cut to this many characters before anything measures it. No
#: more can fit in a post: X counts at most one weight unit per character, except
#: emoji sequences (up to 10 characters for 2 units), so 280 units hold at most 1,400.
#: Bounds the work per post whatever a page holds (URL search is not linear).
MAX_FIELD_CHARS = 1400
#: Scraped fields, all of which may be shortened to make a post fit (the longest
#: first, see :func:`_fit`); the URL never is.
FREE_TEXT_FIELDS = ("title", "comment", "filename", "size", "uploaded_at", "entry_id", "source")

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

_WHITESPACE_RUN = re.compile(r"\s+")
_IDEOGRAPHIC_SPACE = "\u3000"


@dataclass(frozen=True)
class RenderedPost:
    text: str
    #: The post's length by its network's rule (:class:`~bmsuploader.post.rules.PostRules`;
    #: for X, twitter-text's weighted length). The name is X's, kept for stored results.
    weighted_length: int
    #: Whether the post carries a link: the entry URL, or anything X would link.
    #: X prices such posts higher.
    has_url: bool
    #: ``[start, end)`` of the entry URL in :attr:`text` (character offsets), when posted:
    #: a network that links only what it is told to (Bluesky facets) links exactly this.
    link: tuple[int, int] | None = None


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


_ZWJ = "\u200d"
# An emoji flag of a region: black flag, tag letters, cancel tag (e.g. England).
_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")


def _is_emoji_modifier(ch: str) -> bool:
    """What may sit between an emoji and a joiner: VS16 and skin tones."""
    return ch == "\ufe0f" or 0x1F3FB <= ord(ch) <= 0x1F3FF


def _is_pictograph(ch: str) -> bool:
    return unicodedata.category(ch) == "So"


def _joins_emoji(kept: list[str], following: str) -> bool:
    """A joiner between two emoji (after ``kept``, before ``following``) is part of them."""
    index = len(kept) - 1
    while index >= 0 and _is_emoji_modifier(kept[index]):
        index -= 1
    return index >= 0 and _is_pictograph(kept[index]) and bool(following) and _is_pictograph(following)


def _drop_invisible(text: str) -> str:
    """Delete control and format characters, except those inside an emoji sequence."""
    flags = {index for m in _TAG_SEQUENCE.finditer(text) for index in range(m.start() + 1, m.end())}
    visible = [index in flags or ch == _ZWJ or not _is_dropped(ch) for index, ch in enumerate(text)]
    # following[i]: the next character after i that is not deleted outright (one pass back).
    following = [""] * len(text)
    after = ""
    for index in range(len(text) - 1, -1, -1):
        following[index] = after
        if visible[index]:
            after = text[index]
    kept: list[str] = []
    for index, ch in enumerate(text):
        if ch == _ZWJ:
            if _joins_emoji(kept, following[index]):
                kept.append(ch)
        elif visible[index]:
            kept.append(ch)
    return "".join(kept)


def clean_text(value: str) -> str:
    """Normalise scraped text: NFC, no control/format characters, single spaces.

    Whitespace controls (tab, newline, ...) become spaces first, so words stay
    apart; other controls and invisible format characters (zero-width, bidi
    overrides, BOM, soft hyphen) are deleted, except where they belong to an
    emoji: a zero-width joiner between two emoji (a family is one emoji, not
    three) and the tag characters of a region flag. Runs of whitespace collapse
    to one space and the ends are stripped. NFC is applied last, because
    deleting a format character can bring a base letter and its combining mark
    together.
    """
    spaced = "".join(" " if ch.isspace() and ch != _IDEOGRAPHIC_SPACE else ch for ch in value)
    kept = _drop_invisible(spaced)
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
    # Each pass breaks every link found; every link X finds has a dot before its
    # top-level domain, so each pass removes at least one dot and the loop ends.
    while links := extract_urls(text):
        chars = list(text)
        for link in links:
            chars[link.start : link.end] = [
                _URL_DOT if ch == "." else ch for ch in chars[link.start : link.end]
            ]
        text = "".join(chars)
    return text


# --- the template -------------------------------------------------------------


_AUTHORITY = re.compile(r"[^:/?#]+://[^/?#]*")
# Characters a URL may hold unencoded (RFC 3986: unreserved, reserved, "%").
_URL_SAFE = "-._~:/?#[]@!$&'()*+,;=%"


def _entry_url(url: str) -> str:
    """The entry URL as posted: a plain http(s) URL, percent-encoded where RFC 3986 asks.

    The URL comes from a scraped page. Encoding what a URL may not hold (non-ASCII,
    ``^``, ``{``, ``|``...) is what a browser does before sending it, so the target is
    the same; it also keeps X from ending the link early (at ``^`` or a Japanese
    character) and counting the rest as text, where ``^#x`` would be a live hashtag.
    """
    parts = urlsplit(url)
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.netloc
        or any(ch.isspace() or _is_dropped(ch) for ch in url)
    ):
        raise PoisonMessageError(f"entry url {url[:200]!r} is not a plain http(s) URL")
    # Path, query and fragment only: the authority (a host may be 日本語.jp) stays as it is.
    authority = _AUTHORITY.match(url)
    assert authority is not None  # a scheme and a host were checked above
    return authority.group() + quote(url[authority.end() :], safe=_URL_SAFE)


Origin = Literal["literal", "field", "url"]


@dataclass(frozen=True)
class _Span:
    """A piece of the post and where it came from: the operator, a scraped field or the entry URL."""

    text: str
    origin: Origin


def _strip(spans: list[_Span], chars: str | None = None) -> list[_Span]:
    """``str.strip`` over a list of spans (empty spans removed)."""
    out = [span for span in spans if span.text]
    while out and not (head := out[0].text.lstrip(chars)):
        out.pop(0)
    if out:
        out[0] = _Span(head, out[0].origin)
    while out and not (tail := out[-1].text.rstrip(chars)):
        out.pop()
    if out:
        out[-1] = _Span(tail, out[-1].origin)
    return out


def _render(template: Template, values: Mapping[str, str]) -> list[_Span]:
    rendered = [_render_segment(seg, values) for seg in template.segments]
    out: list[_Span] = []
    for index, spans in enumerate(rendered):
        if spans is None:
            continue
        if out:
            # The separator just before this segment; a dropped segment takes
            # the separator before it (or, if it was first, after it) along.
            out.append(_Span(template.separators[index - 1], "literal"))
        out.extend(spans)
    return _strip(out)


def _render_segment(pieces: tuple[Piece, ...], values: Mapping[str, str]) -> list[_Span] | None:
    """Render one segment, or ``None`` when it is to be dropped (see module doc)."""
    out: list[_Span] = []
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
            out.append(_Span(literal, "literal"))
            out.append(_Span(value, "url" if piece.field == "url" else "field"))
        else:
            out.append(_Span(literal, "literal"))
    if placeholders and not filled and not "".join(p.literal for p in pieces).strip():
        return None
    # "コメント: {comment}" with no comment must not leave "コメント: " before the separator.
    return _strip(out, " ")


# --- what X would link --------------------------------------------------------

# A bound on the repairs of one post; each round removes at least one trigger or dot.
_GUARD_ROUNDS = 64


def _origins(spans: list[_Span], entity: Entity) -> list[tuple[int, int, int]]:
    """(span index, start, end) of each span the entity overlaps, offsets within the span."""
    found = []
    offset = 0
    for index, span in enumerate(spans):
        end = offset + len(span.text)
        if offset < entity.end and entity.start < end:
            found.append((index, max(entity.start, offset) - offset, min(entity.end, end) - offset))
        offset = end
    return found


def _is_own(spans: list[_Span], entity: Entity) -> bool:
    """The operator's own (all template text), or the entry link itself."""
    touched = _origins(spans, entity)
    if all(spans[index].origin == "literal" for index, _, _ in touched):
        return True
    index, start, end = touched[0]
    return (
        entity.kind == "url"
        and len(touched) == 1
        and spans[index].origin == "url"
        and start == 0
        and end <= len(spans[index].text)
    )


def _replace(span: _Span, start: int, end: int, old: str, new: str) -> _Span:
    return _Span(span.text[:start] + span.text[start:end].replace(old, new) + span.text[end:], span.origin)


def _defuse(spans: list[_Span], entity: Entity) -> list[_Span]:
    """Break one link or tag that scraped text takes part in."""
    touched = _origins(spans, entity)
    out = list(spans)
    if entity.kind == "url":
        # Dots of scraped text first; a dot of the template only where the link has
        # none of its own ("{title}.{comment}"); the entry URL is never changed.
        for origin in ("field", "literal"):
            for index, start, end in touched:
                if out[index].origin == origin and "." in out[index].text[start:end]:
                    out[index] = _replace(out[index], start, end, ".", _URL_DOT)
            if out != spans:
                return out
    else:
        index, start, _ = touched[0]  # the tag's sign
        if out[index].origin != "url":
            sign = out[index].text[start]
            out[index] = _replace(out[index], start, start + 1, sign, sign.translate(_TRIGGERS))
            return out
    raise PoisonMessageError(
        f"the entry url would make X post a {entity.kind} that is not the entry link: "
        f"{''.join(s.text for s in spans)[entity.start : entity.end][:200]!r}"
    )


def _guard(spans: list[_Span]) -> list[_Span]:
    """The post, with everything X would link from scraped text broken up."""
    for _ in range(_GUARD_ROUNDS):
        text = "".join(span.text for span in spans)
        foreign = [entity for entity in extract_entities(text) if not _is_own(spans, entity)]
        if not foreign:
            return spans
        for entity in foreign:  # a repair keeps every length, so the offsets stay valid
            spans = _defuse(spans, entity)
    raise PoisonMessageError("scraped text keeps forming links or tags on X")


# --- shortening ---------------------------------------------------------------


def _is_continuation(ch: str) -> bool:
    """Characters that belong to the one before: combining marks, variation
    selectors, emoji skin-tone modifiers, joiners, flag tags. A cut must not
    separate them."""
    code = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or 0xFE00 <= code <= 0xFE0F
        or 0x1F3FB <= code <= 0x1F3FF
        or ch == _ZWJ
        or 0xE0020 <= code <= 0xE007F  # a region flag's tags
    )


def _shorten(value: str, cap: int) -> str:
    """``value`` if it has at most ``cap`` characters, else its first ``cap`` + "…"."""
    if len(value) <= cap:
        return value
    cut = cap
    # Back off to the start of the character the cut would split: a combining mark,
    # a modifier, or anything joined to the character before it by a ZWJ.
    while 0 < cut < len(value) and (_is_continuation(value[cut]) or value[cut - 1] == _ZWJ):
        cut -= 1
    head = value[: cut or cap].rstrip() or value[: cut or cap]
    # The cut can make a link out of text that was none ("song.zipper" ->
    # "song.zip…"), so the shortened text is neutralised again.
    return neutralise(head + ELLIPSIS)


def _fit(compose: Callable[[int | None], list[_Span]], longest: int, rules: PostRules) -> list[_Span]:
    """The post for the largest cap that fits, found by binary search.

    ``compose(cap)`` renders with every free-text field cut to ``cap``
    characters; ``compose(None)`` renders them whole.
    """

    def measure(spans: list[_Span]) -> int:
        return rules.measure("".join(span.text for span in spans))

    spans = compose(None)
    if measure(spans) <= rules.limit:
        return spans
    if longest == 0 or measure(compose(1)) > rules.limit:
        raise PoisonMessageError(
            f"post cannot fit in {rules.limit} {rules.unit} ({rules.network}) even with "
            f"every scraped field cut to one character: "
            f"{measure(compose(1))} with the template's fixed text and URL"
        )
    # Invariant: cap ``low`` fits. The length is not strictly monotonic in the cap
    # (on X "…" weighs 2, a dropped Latin letter 1), so this finds a fitting cap close
    # to the largest; it never returns one that does not fit.
    low, high = 1, longest
    while low < high:
        mid = (low + high + 1) // 2
        if measure(compose(mid)) <= rules.limit:
            low = mid
        else:
            high = mid - 1
    return compose(low)


# --- the entry point ----------------------------------------------------------


def _scraped(value: str | None) -> str:
    """Clean, cut to :data:`MAX_FIELD_CHARS` and neutralised: ready for the template."""
    if not value:
        return ""
    # Cleaning is linear, so it sees the whole value (whitespace runs collapse).
    cleaned = clean_text(value)
    return _shorten(cleaned, MAX_FIELD_CHARS) if len(cleaned) > MAX_FIELD_CHARS else neutralise(cleaned)


def render_post(
    message: EntryMessage, *, template: str, include_link: bool, rules: PostRules = X_RULES
) -> RenderedPost:
    """Render one post for the network ``rules`` describe (X by default).

    Raises :class:`PoisonMessageError` if it cannot be posted."""
    parsed = parse_template(template, extra=None)
    fields = parsed.fields
    url = _entry_url(message.url) if include_link and "url" in fields else ""
    free = {name: _scraped(getattr(message, name)) for name in FREE_TEXT_FIELDS if name in fields}
    # A JSON or table source's extra fields ({level}, {symbol}...) are scraped text too, shortened
    # like the others; one the message lacks renders empty. The standard fields win a clash.
    free.update(
        {
            name: _scraped(value)
            for name, value in (message.extra or {}).items()
            if name in fields and name not in free
        }
    )
    longest = max(map(len, free.values()), default=0)

    def compose(cap: int | None) -> list[_Span]:
        cut = free if cap is None else {name: _shorten(value, cap) for name, value in free.items()}
        escaped = {name: rules.escape(value) for name, value in cut.items()}
        return _guard(_render(parsed, {**escaped, "url": url}))

    spans = _fit(compose, longest, rules)
    text = "".join(span.text for span in spans)
    if not text:
        raise PoisonMessageError(f"template {template!r} rendered an empty post")
    # The entry link counts even where X would not link it (an IP or
    # localhost host in local runs): has_url feeds the spend estimate, which must
    # not come out low. Anything else X would link counts too.
    has_url = bool(url) or bool(extract_urls(text))
    return RenderedPost(
        text=text, weighted_length=rules.measure(text), has_url=has_url, link=_link_span(spans)
    )


def _link_span(spans: list[_Span]) -> tuple[int, int] | None:
    """Where the entry URL sits in the post (the first time, if the template repeats it)."""
    offset = 0
    for span in spans:
        if span.origin == "url" and span.text:
            return offset, offset + len(span.text)
        offset += len(span.text)
    return None
