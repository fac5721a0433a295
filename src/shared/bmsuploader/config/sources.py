"""Source definitions: which uploaders to watch, and how to read them.

Configuration is data: ``sources.toml`` (beside this package, in
``src/shared``, so it ships in the layer to both functions) lists the sources;
``SOURCES_FILE`` (see :mod:`bmsuploader.contract.settings`) overrides the
path. Site-specific knowledge lives in XPath selectors and presets (``presets.toml``), never in code branches.

Loading validates everything up front. A mistake raises :class:`ConfigError`
whose message names the file, the source and the field, e.g.::

    sources.toml: source 'example': selectors.row: invalid XPath '//tr[': Invalid predicate
"""

from __future__ import annotations

import codecs
import re
import string
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bmsuploader.config.destinations import DEFAULT_DESTINATIONS, Destination, announcing
from bmsuploader.config.jmespath import check_jmespath
from bmsuploader.config.templates import (
    DEFAULT_TEMPLATE,
    EXTRA_NAME_PATTERN,
    TABLE_FIELDS,
    TEMPLATE_FIELDS,
    parse_template,
)
from bmsuploader.config.xpath import XPathKind, check_xpath
from bmsuploader.contract.errors import ConfigError
from bmsuploader.contract.message import MAX_EXTRA_FIELDS
from bmsuploader.fetch.decoding import normalise_encoding

CONFIG_DIR = Path(__file__).resolve().parent
#: Default sources file: ``src/shared/sources.toml`` in the repo, ``/opt/python/sources.toml``
#: in the layer. Both are the directory above this package.
DEFAULT_SOURCES_FILE = CONFIG_DIR.parent.parent / "sources.toml"
PRESETS_FILE = CONFIG_DIR / "presets.toml"

# A source name is the SQS MessageGroupId, so it must use SQS's character set.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

_Strict = ConfigDict(extra="forbid", frozen=True)


XPathStr = Annotated[str, Field(min_length=1)]
#: Selectors evaluated against the whole document; the others are relative to a row.
_DOCUMENT_SELECTORS = frozenset({"row", "next_page"})


def _compile(value: str) -> re.Pattern[str]:
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc


class Selectors(BaseModel):
    """XPath expressions for an ``html`` listing.

    ``row`` selects one element per upload, evaluated against the document.
    Every other expression is evaluated relative to a row and may return an
    element (its text is used), an attribute or a string.
    """

    model_config = _Strict

    row: XPathStr
    entry_id: XPathStr
    title: XPathStr
    url: XPathStr
    comment: XPathStr | None = None
    uploaded_at: XPathStr | None = None
    filename: XPathStr | None = None
    size: XPathStr | None = None
    #: Evaluated against the document: true (a non-empty result) when the page
    #: links to an older page. Lets the catch-up walk stop at the last page
    #: without asking for one more (see :mod:`bmsuploader.fetch.catchup`).
    next_page: XPathStr | None = None

    @field_validator("*")
    @classmethod
    def _valid_xpath(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Compiled, read and tried on a sample page now, so a selector that cannot
        # run fails here and not on every fetch (see bmsuploader.config.xpath).
        if value is None:
            return None
        on_document = info.field_name in _DOCUMENT_SELECTORS
        kind = check_xpath(value, "document" if on_document else "row")
        if info.field_name == "row" and kind is not XPathKind.NODES:
            raise ValueError(f"XPath {value!r} must select elements (one per upload), not a {kind}")
        return value


JMESPathStr = Annotated[str, Field(min_length=1)]


class JsonSelectors(BaseModel):
    """JMESPath expressions for a ``json`` source.

    ``rows`` gives the list of rows, evaluated against the whole document; every
    other expression is evaluated against one row and must give a string or a
    number (``null`` or no match: the field is absent). ``extra`` names more
    fields for the template, e.g. ``level = "level"`` makes ``{level}`` usable.
    """

    model_config = _Strict

    rows: JMESPathStr
    entry_id: JMESPathStr
    title: JMESPathStr
    url: JMESPathStr
    comment: JMESPathStr | None = None
    uploaded_at: JMESPathStr | None = None
    filename: JMESPathStr | None = None
    size: JMESPathStr | None = None
    extra: dict[Annotated[str, Field(pattern=EXTRA_NAME_PATTERN)], JMESPathStr] = Field(
        default_factory=dict, max_length=MAX_EXTRA_FIELDS
    )
    #: Which end of ``rows`` is the newest: an API sorted by date descending lists it
    #: first, a file every upload is appended to lists it last.
    newest: Literal["first", "last"] = "first"

    @field_validator("rows", "entry_id", "title", "url", "comment", "uploaded_at", "filename", "size")
    @classmethod
    def _valid_jmespath(cls, value: str | None) -> str | None:
        return None if value is None else check_jmespath(value)

    @field_validator("extra")
    @classmethod
    def _valid_extra(cls, value: dict[str, str]) -> dict[str, str]:
        clash = set(value) & TEMPLATE_FIELDS
        if clash:
            raise ValueError(f"extra field(s) {sorted(clash)} shadow a standard field; rename them")
        for expression in value.values():
            check_jmespath(expression)
        return value


class FirstRun(BaseModel):
    """What to do the first time a source is seen (no state yet).

    ``baseline`` records every listed entry as seen and posts nothing, so a
    new source never floods the timeline. ``post_newest`` posts the newest
    ``count`` entries and records the rest.
    """

    model_config = _Strict

    policy: Literal["baseline", "post_newest"] = "baseline"
    count: int = Field(default=0, ge=0, le=50)

    @model_validator(mode="after")
    def _count_matches_policy(self) -> Self:
        if self.policy == "post_newest" and self.count < 1:
            raise ValueError("policy 'post_newest' needs count >= 1")
        if self.policy == "baseline" and self.count:
            raise ValueError("policy 'baseline' posts nothing; remove count or use 'post_newest'")
        return self


class Source(BaseModel):
    """One uploader listing or feed."""

    model_config = _Strict

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["html", "rss", "atom", "json", "bmstable"]
    url: str = Field(pattern=r"^https?://")
    encoding: str | None = None
    preset: str | None = None
    selectors: Selectors | None = None
    #: kind ``json`` only: where the fields are in the document
    json_selectors: JsonSelectors | None = None
    #: Applied to the ``entry_id`` field's value (a link or a cell); group 1,
    #: or the whole match if the pattern has no group, is the stable id.
    #: None: the value itself is the id (right for a feed's guid / Atom id).
    id_regex: str | None = None
    #: URL of older pages, with ``{page}`` = 2, 3, ...; none means one page only.
    page_url_template: str | None = None
    max_pages: int = Field(default=1, ge=1, le=20)
    #: Regular expression found on a row-less older page when the listing really
    #: ends there (e.g. "該当するファイルはありません"). Without it a row-less older
    #: page is a format error: it may be a maintenance page hiding uploads.
    end_of_listing: str | None = None
    #: Whether a page that lists nothing is a quiet source rather than a format
    #: error. Default: yes for feeds (a new or quiet feed is empty and still a
    #: well-formed <rss>/<feed>), no for listings (a row-less page is what a
    #: maintenance page or a layout change looks like). A listing may allow it
    #: only together with end_of_listing, the text its empty page shows.
    allow_empty: bool | None = None
    first_run: FirstRun = FirstRun()
    template: str = DEFAULT_TEMPLATE
    include_link: bool = True
    enabled: bool = True

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        # The decoder's own rule, so the file and the page agree on what a charset is.
        if normalise_encoding(value) is None:
            raise ValueError(f"{value!r} is not a character set (a page's charset, e.g. cp932 or EUC-JP)")
        return value

    @field_validator("end_of_listing")
    @classmethod
    def _valid_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value

    @field_validator("id_regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        compiled = _compile(value)
        if compiled.groups > 1:
            raise ValueError(f"{value!r} has {compiled.groups} groups; use at most one (the id)")
        return value

    @field_validator("page_url_template")
    @classmethod
    def _has_page_placeholder(cls, value: str | None) -> str | None:
        if value is None:
            return None
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        if fields != {"page"}:
            raise ValueError(f"{value!r} must contain {{page}} and no other placeholder")
        if not re.match(r"^https?://", value):
            raise ValueError(f"{value!r} must be an http(s) URL")
        return value

    @field_validator("template")
    @classmethod
    def _renderable_template(cls, value: str) -> str:
        # The renderer's own parser: a template that loads is one the poster can render.
        try:
            parse_template(value, extra=None)  # which extras: checked with the kind below
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @property
    def template_fields(self) -> frozenset[str]:
        """The placeholders this source's template may use: the standard ones and its extra fields."""
        if self.kind == "bmstable":
            return TEMPLATE_FIELDS | set(TABLE_FIELDS)
        if self.json_selectors is not None:
            return TEMPLATE_FIELDS | set(self.json_selectors.extra)
        return TEMPLATE_FIELDS

    @model_validator(mode="after")
    def _kind_rules(self) -> Self:
        if self.kind == "html" and self.selectors is None:
            raise ValueError("kind 'html' needs [selectors] (or a preset that provides them)")
        if self.kind != "html" and self.selectors is not None:
            raise ValueError(f"kind {self.kind!r} reads the feed's own fields; remove [selectors]")
        if self.kind == "json" and self.json_selectors is None:
            raise ValueError("kind 'json' needs [json_selectors] (or a preset that provides them)")
        if self.kind != "json" and self.json_selectors is not None:
            raise ValueError(f"kind {self.kind!r} does not read [json_selectors]; remove it")
        try:
            parse_template(self.template, extra=self.template_fields - TEMPLATE_FIELDS)
        except ConfigError as exc:
            raise ValueError(f"template: {exc}") from exc
        if self.max_pages > 1 and self.page_url_template is None:
            raise ValueError("max_pages > 1 needs page_url_template")
        if self.kind == "html" and self.allow_empty and self.end_of_listing is None:
            raise ValueError(
                "allow_empty = true on a listing needs end_of_listing (the text the uploader shows when it "
                "has no uploads): without it an empty listing cannot be told from a maintenance page"
            )
        return self

    @property
    def empty_allowed(self) -> bool:
        """``allow_empty`` with its default for the kind (see the field): feeds yes; listings,
        JSON documents and tables no (an empty document is what a broken export looks like)."""
        return self.kind in ("rss", "atom") if self.allow_empty is None else self.allow_empty

    @property
    def page_encoding(self) -> str | None:
        """The encoding to decode page 1 with: ``encoding``, else UTF-8 for a JSON document
        (RFC 8259; a BOM is allowed and dropped), else what the page says."""
        if self.encoding is None and self.kind == "json":
            return "utf-8"
        return self.encoding

    def page_url(self, page: int) -> str:
        """URL of listing page ``page`` (1 is :attr:`url`)."""
        if page == 1:
            return self.url
        if self.page_url_template is None:
            raise ValueError(f"source {self.name!r} has no page_url_template")
        return self.page_url_template.format(page=page)


class SourcesConfig(BaseModel):
    model_config = _Strict

    sources: tuple[Source, ...] = Field(min_length=1)
    #: Where entries are announced (``[[destination]]``); none configured = X alone.
    destinations: tuple[Destination, ...] = Field(default=DEFAULT_DESTINATIONS, min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[str] = set()
        for src in self.sources:
            if src.name in seen:
                raise ValueError(f"duplicate source name {src.name!r}")
            seen.add(src.name)
        return self

    def destinations_of(self, source: str) -> tuple[Destination, ...]:
        """The enabled destinations that announce ``source``, in the file's order."""
        return announcing(self.destinations, source)

    def destination(self, name: str | None) -> Destination | None:
        """The destination a message names (``None``: the ``x`` one), if still configured."""
        wanted = name or "x"
        return next((d for d in self.destinations if d.name == wanted), None)

    @property
    def enabled(self) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if s.enabled)

    def get(self, name: str) -> Source:
        for src in self.sources:
            if src.name == name:
                return src
        raise KeyError(name)


def load_presets(path: Path = PRESETS_FILE) -> dict[str, dict[str, Any]]:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    presets = data.get("preset", {})
    assert isinstance(presets, dict)
    return presets


def _apply_preset(raw: dict[str, Any], presets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge a named preset under the source's own keys (the source wins)."""
    name = raw.get("preset")
    if name is None:
        return raw
    if not isinstance(name, str):
        raise ValueError(f"preset: must be a preset name (a string), not {name!r}")
    if name not in presets:
        raise ValueError(f"preset: unknown preset {name!r}; known: {sorted(presets)}")
    merged: dict[str, Any] = {k: v for k, v in presets[name].items() if k != "description"}
    for key, value in raw.items():
        if key in ("selectors", "json_selectors") and isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def parse_sources(data: dict[str, Any], *, origin: str = "sources.toml") -> SourcesConfig:
    """Validate already-loaded TOML data. Errors name the source and the field."""
    raw_sources = data.get("source")
    unknown_top = set(data) - {"source", "destination"}
    if unknown_top:
        raise ConfigError(
            f"{origin}: unknown top-level key(s) {sorted(unknown_top)}; expected [[source]], [[destination]]"
        )
    if not isinstance(raw_sources, list) or not raw_sources:
        raise ConfigError(f"{origin}: no [[source]] tables found")
    presets = load_presets()
    sources: list[Source] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_sources):
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: source #{index + 1}: must be a [[source]] table, not {raw!r}")
        label = f"source {raw.get('name')!r}" if isinstance(raw.get("name"), str) else f"source #{index + 1}"
        try:
            source = Source.model_validate(_apply_preset(raw, presets))
        except ValueError as exc:  # ValidationError is a ValueError
            raise ConfigError(f"{origin}: {label}: {_describe(exc)}") from exc
        if source.name in names:
            raise ConfigError(f"{origin}: {label}: name: duplicate source name {source.name!r}")
        names.add(source.name)
        sources.append(source)
    enabled = {source.name for source in sources if source.enabled}
    destinations = _parse_destinations(data.get("destination"), names, enabled, origin)
    return SourcesConfig(sources=tuple(sources), destinations=destinations or DEFAULT_DESTINATIONS)


def _parse_destinations(
    raw_list: object, sources: set[str], enabled: set[str], origin: str
) -> tuple[Destination, ...]:
    if raw_list is None:
        return ()
    if not isinstance(raw_list, list):
        raise ConfigError(f"{origin}: destination: must be [[destination]] tables")
    found: list[Destination] = []
    for index, raw in enumerate(raw_list):
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: destination #{index + 1}: must be a [[destination]] table")
        label = (
            f"destination {raw.get('name')!r}"
            if isinstance(raw.get("name"), str)
            else f"destination #{index + 1}"
        )
        try:
            destination = Destination.model_validate(raw)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(
                f"{origin}: {label}: {_describe(exc) if isinstance(exc, ValueError) else exc}"
            ) from exc
        if any(d.name == destination.name for d in found):
            raise ConfigError(f"{origin}: {label}: name: duplicate destination name {destination.name!r}")
        unknown = sorted(set(destination.sources or ()) - sources)
        if unknown:
            raise ConfigError(
                f"{origin}: {label}: sources: no such source(s) {unknown}; known: {sorted(sources)}"
            )
        found.append(destination)
    silent = sorted(name for name in enabled if found and not any(d.carries(name) for d in found))
    if silent:
        raise ConfigError(
            f"{origin}: destination: no enabled destination announces source(s) {silent}; "
            "add them to a destination's sources, or disable the sources"
        )
    x_destinations = [d.name for d in found if d.kind == "x"]
    if len(x_destinations) > 1:
        # One spend limit (MonthlySpendLimitUSD) and one backlog belong to the one X account.
        raise ConfigError(f"{origin}: destination: at most one X destination, found {x_destinations}")
    return tuple(found)


def _describe(exc: ValueError) -> str:
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<source>"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (typo?)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def load_sources(path: Path | str | None = None) -> SourcesConfig:
    """Read and validate a sources file (default: the bundled one). Raises :class:`ConfigError`."""
    file = Path(path) if path is not None else DEFAULT_SOURCES_FILE
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: sources file not found (set SOURCES_FILE or create it)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    return parse_sources(data, origin=file.name)
