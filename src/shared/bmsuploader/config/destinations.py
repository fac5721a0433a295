"""Destinations: where each new entry is announced, as data beside the sources.

The sources file may hold ``[[destination]]`` tables; without any, the one
destination is X, exactly as before (named ``x``, credentials under
``X_PARAMETER_PATH``)::

    [[destination]]
    name = "misskey-io"          # a-z, 0-9, "-" and "_"; part of queue and record keys
    kind = "misskey"             # x | bluesky | mastodon | misskey | discord
    instance = "https://misskey.io"
    secret = "/bmsuploader/misskey-io"   # SSM path; the names under it depend on the kind
    template = "{title} {url}"   # optional: default is each source's own template
    include_link = true          # optional: default is each source's own link policy
    sources = ["stella"]         # optional: default is every source
    visibility = "public"        # mastodon/misskey: public, unlisted (home), followers (private)

**Keys.** Each (destination, source) pair is its own SQS message group, each
(destination, entry) its own deduplication id and idempotency record: one
network's outage parks only its own groups, and an entry is posted at most once
on each network. The destination named ``x`` keeps the keys of the single-X
version (group = source, no destination in the message), so entries queued or
posted before an upgrade keep their order and are never posted again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bmsuploader.config.templates import parse_template

#: The kinds of network the poster can publish to.
DestinationKind = Literal["x", "bluesky", "mastodon", "misskey", "discord"]
#: A destination name is part of a MessageGroupId and of record keys.
DESTINATION_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
#: The name whose messages and records carry no destination (the single-X keys).
LEGACY_X = "x"
#: Where Bluesky accounts live unless the destination names its own PDS.
BLUESKY_DEFAULT_INSTANCE = "https://bsky.social"


class Destination(BaseModel):
    """One account on one network."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=DESTINATION_NAME_PATTERN)
    kind: DestinationKind
    #: The server: required for mastodon and misskey, optional for bluesky (its PDS).
    instance: str | None = Field(default=None, pattern=r"^https?://[^/\s]+/?$")
    #: The SSM parameter path of its secrets. X without one uses ``X_PARAMETER_PATH``.
    secret: str | None = Field(default=None, pattern=r"^/[^\s]*[^/\s]$")
    template: str | None = None
    include_link: bool | None = None
    #: The sources it announces; ``None`` = all of them.
    sources: tuple[str, ...] | None = None
    visibility: Literal["public", "unlisted", "followers"] = "public"
    enabled: bool = True
    #: Render and log, post nothing (also on when the poster's DRY_RUN is on).
    dry_run: bool = False

    @field_validator("template")
    @classmethod
    def _renderable_template(cls, value: str | None) -> str | None:
        if value is not None:
            parse_template(value, extra=None)  # ConfigError says what is wrong
        return value

    @model_validator(mode="after")
    def _kind_rules(self) -> Self:
        if self.kind in ("mastodon", "misskey") and self.instance is None:
            raise ValueError(
                f"instance: a {self.kind} destination needs its server, e.g. https://example.social"
            )
        if self.kind in ("x", "discord") and self.instance is not None:
            raise ValueError(f"instance: a {self.kind} destination has no instance")
        if self.kind != "x" and self.secret is None:
            raise ValueError(f"secret: a {self.kind} destination needs the SSM path of its secret")
        if (self.name == LEGACY_X) != (self.kind == "x"):
            # One X account: its spend limit, backlog and keys are the single-X ones.
            raise ValueError(f"name: the X destination is named {LEGACY_X!r}, and only it")
        return self

    @property
    def message_name(self) -> str | None:
        """What messages for this destination carry in ``destination`` (see the module doc)."""
        return None if self.name == LEGACY_X else self.name

    @property
    def server(self) -> str | None:
        """The base URL of its server, without a trailing slash."""
        if self.instance is None:
            return BLUESKY_DEFAULT_INSTANCE if self.kind == "bluesky" else None
        return self.instance.rstrip("/")

    def carries(self, source: str) -> bool:
        return self.enabled and (self.sources is None or source in self.sources)


DEFAULT_DESTINATIONS = (Destination(name=LEGACY_X, kind="x"),)


def announcing(destinations: Iterable[Destination], source: str) -> tuple[Destination, ...]:
    """The enabled destinations among ``destinations`` that announce ``source``, in order."""
    return tuple(d for d in destinations if d.carries(source))
