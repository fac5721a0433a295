"""Post templates: the one parser, shared by config loading and rendering.

``sources.toml`` is validated with the very parser the poster renders with, so
a template that loads can be rendered, and one that cannot be rendered stops
the load (and ``bmsuploader parse``/``preview``) with an error naming the
source, instead of failing every post of that source at post time.

Light on purpose (standard library only): the fetcher loads sources too.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from bmsuploader.contract.errors import ConfigError

#: Fields a post template may use.
TEMPLATE_FIELDS = frozenset(
    {"title", "comment", "url", "filename", "size", "uploaded_at", "source", "entry_id"}
)
DEFAULT_TEMPLATE = "【新着差分】{title} / {comment} / {url}"
#: The extra fields a ``bmstable`` source gives every chart (besides the ones above).
TABLE_FIELDS = ("level", "symbol", "artist", "url_diff", "table")
#: A JSON or table source's extra field names (they travel in EntryMessage.extra).
EXTRA_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
_EXTRA_NAME = re.compile(EXTRA_NAME_PATTERN)

# A template splits into segments at " / " and at line breaks (see rendering).
_SEPARATOR_RE = re.compile(r"( / |\n)")


@dataclass(frozen=True)
class Piece:
    """Literal text, then optionally one placeholder."""

    literal: str
    field: str | None


@dataclass(frozen=True)
class Template:
    segments: tuple[tuple[Piece, ...], ...]
    separators: tuple[str, ...]  # separators[i] sits between segments i and i+1

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(p.field for seg in self.segments for p in seg if p.field is not None)


def _parse_segment(segment: str, extra: frozenset[str] | None) -> tuple[Piece, ...]:
    try:
        parsed = list(string.Formatter().parse(segment))
    except ValueError as exc:
        raise ConfigError(f"template segment {segment!r}: {exc}") from exc
    pieces = []
    for literal, field, spec, conversion in parsed:
        if field is not None:
            if field == "":
                raise ConfigError("positional placeholder {} in template; name the field, e.g. {title}")
            allowed = field in TEMPLATE_FIELDS or (
                _EXTRA_NAME.match(field) is not None if extra is None else field in extra
            )
            if not allowed:
                known = sorted(TEMPLATE_FIELDS | (extra or frozenset()))
                raise ConfigError(f"unknown placeholder(s) {[field]} in template; allowed: {known}")
            if spec or conversion:
                raise ConfigError(
                    f"template placeholder {{{field}}} takes no conversion or format spec; "
                    "rendering decides cleaning and shortening"
                )
        pieces.append(Piece(literal=literal, field=field))
    return tuple(pieces)


def parse_template(template: str, *, extra: frozenset[str] | None = frozenset()) -> Template:
    """Parse a post template. Raises :class:`ConfigError` saying what is wrong.

    ``extra`` names the extra fields (of a JSON or table source) it may use besides
    the standard ones; ``None`` accepts any well-formed extra name (the renderer: a
    field the message lacks renders empty, like any optional field)."""
    parts = _SEPARATOR_RE.split(template)
    return Template(
        segments=tuple(_parse_segment(p, extra) for p in parts[0::2]),
        separators=tuple(parts[1::2]),
    )
