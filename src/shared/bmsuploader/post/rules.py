"""Each network's length rule and markup, as data the renderer applies.

The renderer (:mod:`bmsuploader.post.rendering`) is one algorithm for every
network: clean and neutralise scraped text, fill the template, shorten the
scraped fields until the post fits. What differs per network is only *how a
post is measured* and *what scraped text must additionally be escaped from*
(Discord markdown, Misskey MFM...). A :class:`PostRules` carries exactly that.

X's rules are the strictest about links and tags (twitter-text finds links in
bare ``example.jp`` and tags after any ``@``/``#``/``$``), so the renderer's
neutralisation, judged by twitter-text, leaves scraped text inert on every
network we post to; :attr:`PostRules.escape` adds what a network marks up
beyond that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bmsuploader.post.tweet_text import MAX_WEIGHTED_LENGTH, weighted_length


def _unchanged(text: str) -> str:
    return text


@dataclass(frozen=True)
class PostRules:
    """How one network measures and marks up a post."""

    #: the destination kind (``x``, ``bluesky``, ``mastodon``, ``misskey``, ``discord``)
    network: str
    #: the most a post may measure
    limit: int
    #: what :attr:`measure` counts, for error messages ("weighted characters", "graphemes")
    unit: str
    #: the network's length of a whole post (the entry URL included, as the network counts it)
    measure: Callable[[str], int]
    #: applied to each scraped field after neutralising it: escapes the network's own
    #: markup (never changes the entry URL, which is not scraped text)
    escape: Callable[[str], str] = field(default=_unchanged)


X_RULES = PostRules(
    network="x", limit=MAX_WEIGHTED_LENGTH, unit="weighted characters", measure=weighted_length
)
