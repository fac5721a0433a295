"""Mastodon: the poster's edge to one account on a Mastodon server (post text -> status).

:class:`MastodonPublisher` sends ``POST /api/v1/statuses`` with the account's bearer
token, the destination's visibility (``followers`` is Mastodon's ``private``) and
``Idempotency-Key: <post.key>``. Every answer becomes a result or a typed error of
:mod:`bmsuploader.contract.errors` in one place (:meth:`MastodonPublisher.publish`);
what a failure to get an answer means is :mod:`.fediverse`'s table:

===========================================  ================================================
Mastodon says                                we return / raise
===========================================  ================================================
200                                          ``PublishResult(status id)`` (also for a
                                             repeated Idempotency-Key: the same status)
429                                          :class:`RateLimitedError` until ``X-RateLimit-Reset``
                                             (an ISO time), else :data:`DEFAULT_RATE_LIMIT_DELAY`
401, 403                                     :class:`AuthError` naming the fix
400, 422                                     :class:`PermanentPublishError` with Mastodon's text
                                             (and, for 422, the server's character limit)
5xx                                          :class:`UnknownOutcomeError` (transient: retried;
                                             a proxy's 502/504 may hide an accepted post)
anything else (404: not a Mastodon server?)  :class:`TransientPublishError`
===========================================  ================================================

**Exactly once.** Mastodon keeps an Idempotency-Key about an hour (one hour from the
status's creation) and answers a repeat with the same status. Our first attempt is
never earlier than the entry's fetch time (``post.created_at``), so for
:data:`IDEMPOTENCY_TRUSTED` after it a retry relies on the key alone. Later, an attempt
with ``post.maybe_posted`` first reads the account's newest statuses
(``verify_credentials``, then ``/api/v1/accounts/{id}/statuses``) and compares their
text (:func:`content_text` turns the HTML ``content`` back into text) with
:func:`~.fediverse.find_own_post`: a match is ``PublishResult(id, duplicate=True)``.
That read needs the ``read:accounts`` and ``read:statuses`` scopes besides
``write:statuses``; a token without them fails the check with :class:`AuthError`.

**Length** (:data:`RULES`). Mastodon counts grapheme clusters, and every http(s) URL as
23 whatever its length. A server may allow more than its default 500 characters, but the
renderer takes one :class:`~bmsuploader.post.rules.PostRules` per network
(:func:`bmsuploader.post.destinations.rules_for`), so posts are fitted to 500 on every
server: the safe default, and the larger limit is not used. The server's own limit is
read once per container, only when a post is refused as invalid (``GET /api/v2/instance``
``configuration.statuses.max_characters``, else v1 ``max_toot_chars``, else 500), to
say in the error whether the server allows less. :func:`status_length` never counts
less than Mastodon: code points (never fewer than graphemes), 23 for each URL X's rules
find with a scheme (Mastodon's URL pattern is the same library's with a wider path, so
its URL is never shorter), plus the trailing characters that cannot end a Mastodon URL.
Mentions (``@user@host``) and hashtags in scraped text are already inert: the renderer
replaces ``@`` and ``#`` with look-alikes Mastodon does not read.

**Why plain requests, not Mastodon.py** (maintained, but large). Measured with
``pip install --target /tmp/mp Mastodon.py`` (2.3.3) and ``du --apparent-size``: beyond
what the poster package already ships (requests, urllib3, idna, certifi,
charset_normalizer) it adds ``mastodon`` 1,191 KiB, python-dateutil 656 KiB, tzdata
682 KiB and decorator 50 KiB: 2,720 KiB with metadata (5,192 KiB on disk, about
1,030 KiB zipped), against a 400 KiB allowance for a package already over its 4 MiB
budget. One POST and three GETs do not need it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import requests

from bmsuploader.config.destinations import Destination
from bmsuploader.contract.errors import (
    AuthError,
    PermanentPublishError,
    PublishError,
    RateLimitedError,
    TransientPublishError,
    UnknownOutcomeError,
)
from bmsuploader.post.networks.base import NetworkContext, PostRequest, PublishResult, json_object
from bmsuploader.post.networks.fediverse import (
    DEFAULT_RATE_LIMIT_DELAY,
    Http,
    OwnPost,
    answered,
    aware,
    detail,
    find_own_post,
    now_utc,
    seconds_until,
)
from bmsuploader.post.rules import PostRules
from bmsuploader.post.tweet_text import extract_urls

__all__ = [
    "DEFAULT_RATE_LIMIT_DELAY",
    "RULES",
    "SECRET_HINT",
    "SECRET_NAMES",
    "MastodonPublisher",
    "build",
    "status_length",
]

logger = logging.getLogger(__name__)

#: Mastodon's default character limit, and the one posts are fitted to (see the module doc).
DEFAULT_MAX_CHARACTERS = 500
#: What Mastodon counts any http(s) URL as.
URL_LENGTH = 23
#: How long after the entry was fetched a retry relies on the Idempotency-Key alone
#: (Mastodon keeps it an hour from the first attempt, which is never earlier).
IDEMPOTENCY_TRUSTED = timedelta(minutes=50)
#: Statuses per page when the check reads the account's newest (Mastodon's maximum).
PAGE_SIZE = 40

#: Our visibility -> Mastodon's.
VISIBILITY = {"public": "public", "unlisted": "unlisted", "followers": "private"}

SECRET_NAMES = ("access_token",)
# Where the operator gets the token (named in the error when the parameter is missing).
SECRET_HINT = (
    "access token of an application created under Preferences > Development, "  # noqa: S105 (not a token)
    "with the scopes write:statuses, read:accounts and read:statuses"
)

_SCHEME = re.compile(r"https?://", re.IGNORECASE)
_SCHEME_RUN = re.compile(r"https?://\S*", re.IGNORECASE)
# Characters a Mastodon URL's path may not end with (its twitter-text patch); X's rules may
# end a URL on some ("=", "&"): Mastodon then counts them as text.
_NOT_URL_END = "!*\"'「」<>;:=,.$%[]~&|@"


def status_length(text: str) -> int:
    """The length of ``text`` as Mastodon counts it, never less (see the module doc)."""
    length = len(text)
    linked: set[int] = set()
    for url in extract_urls(text):
        if _SCHEME.match(text, url.start):
            span = text[url.start : url.end]
            trailing = len(span) - len(span.rstrip(_NOT_URL_END))
            length += URL_LENGTH + trailing - len(span)
            linked.add(url.start)
    # A URL X's rules do not link (an IP address, localhost) may still be one for Mastodon,
    # which would count 23 for it: never count less.
    for run in _SCHEME_RUN.finditer(text):
        if run.start() not in linked:
            length += max(0, URL_LENGTH - len(run.group()))
    return length


RULES = PostRules(network="mastodon", limit=DEFAULT_MAX_CHARACTERS, unit="characters", measure=status_length)


class _ContentText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "p"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def content_text(html: str) -> str:
    """A status's HTML ``content`` as text: tags dropped (a link's hidden ``invisible`` and
    ``ellipsis`` spans keep their text, so the URL comes back whole), entities unescaped,
    ``<br>`` and paragraphs as line breaks."""
    parser = _ContentText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def _error_text(response: requests.Response) -> str:
    body = json_object(response)
    text = body.get("error") or body.get("error_description") or response.reason or ""
    return detail(f"{response.status_code} {text}")


class MastodonPublisher:
    """Posts statuses to one account. Build once per container (:func:`build`)."""

    def __init__(
        self,
        server: str,
        access_token: str,
        *,
        visibility: str = "public",
        parameter: str = "<secret path>/access_token",
        timeout: tuple[float, float] = (3.05, 10.0),
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self._http = Http(server, network="Mastodon", timeout=timeout)
        self._authorization = {"Authorization": f"Bearer {access_token}"}
        self._visibility = VISIBILITY[visibility]
        self._parameter = parameter
        self._clock = clock
        self._max_characters: int | None = None

    def __repr__(self) -> str:
        return f"MastodonPublisher({self._http.server!r}, visibility={self._visibility!r})"

    @property
    def server(self) -> str:
        return self._http.server

    def publish(self, post: PostRequest) -> PublishResult:
        """Post ``post.text``. The one place Mastodon's answers become results and errors."""
        if post.maybe_posted and self._clock() - aware(post.created_at) >= IDEMPOTENCY_TRUSTED:
            found = self._find(post)
            if found is not None:
                return PublishResult(tweet_id=found, duplicate=True)
        response = self._http.send(
            "POST",
            "/api/v1/statuses",
            creates=True,
            headers={**self._authorization, "Idempotency-Key": post.key},
            json={"status": post.text, "visibility": self._visibility},
        )
        if answered(response):
            status_id = json_object(response).get("id")
            if not status_id:
                raise UnknownOutcomeError(
                    f"Mastodon at {self.server} answered {response.status_code} without a status id: "
                    "the post may exist; the next attempt checks before posting again"
                )
            return PublishResult(tweet_id=str(status_id))
        if response.status_code in (400, 422):
            raise PermanentPublishError(
                f"Mastodon at {self.server} refused the post ({_error_text(response)}){self._limit_note()}"
            )
        raise self._failure(response, creating=True)

    # --- answers that are not a status -------------------------------------------

    def _failure(self, response: requests.Response, *, creating: bool) -> PublishError:
        status = response.status_code
        text = _error_text(response)
        if status == 429:
            return self._rate_limited(response)
        fix = (
            "create an application under Preferences > Development with the scopes write:statuses, "
            "read:accounts and read:statuses, then store its access token: aws ssm put-parameter "
            f"--name {self._parameter} --type SecureString --value '<access token>' --overwrite"
        )
        if status == 401:
            return AuthError(
                f"Mastodon at {self.server} rejected the access token ({text}): it is wrong or revoked; {fix}"
            )
        if status == 403:
            needs = "write:statuses" if creating else "read:accounts and read:statuses (to check its posts)"
            return AuthError(
                f"Mastodon at {self.server} refused ({text}): the token lacks {needs}, or the account "
                f"is disabled or suspended; {fix}"
            )
        if status >= 500 and creating:
            return UnknownOutcomeError(
                f"Mastodon at {self.server} answered {text}: the post may have been accepted; "
                "the next attempt checks before posting again"
            )
        hint = f" (is {self.server} a Mastodon server?)" if status in (404, 405) else ""
        if 300 <= status < 400:
            hint = (
                f" (redirected to {response.headers.get('Location')}: use that as the destination's instance)"
            )
        return TransientPublishError(f"Mastodon at {self.server} answered {text}{hint}")

    def _rate_limited(self, response: requests.Response) -> RateLimitedError:
        reset = response.headers.get("X-RateLimit-Reset")
        try:
            delay = seconds_until(datetime.fromisoformat(reset or ""), self._clock())
        except ValueError:
            delay = DEFAULT_RATE_LIMIT_DELAY
        return RateLimitedError(
            f"Mastodon at {self.server} rate limit reached (429); waiting {delay}s", delay
        )

    def _limit_note(self) -> str:
        limit = self.max_characters()
        if limit < RULES.limit:
            return (
                f"; this server allows {limit} characters and posts are fitted to {RULES.limit}: "
                "shorten the destination's template"
            )
        return f"; this server allows {limit} characters"

    def max_characters(self) -> int:
        """The server's status length limit, read once per container (500 if unreadable)."""
        if self._max_characters is None:
            self._max_characters = self._read_max_characters()
            logger.info(
                "Mastodon character limit read",
                extra={"server": self.server, "max_characters": self._max_characters},
            )
        return self._max_characters

    def _read_max_characters(self) -> int:
        for path in ("/api/v2/instance", "/api/v1/instance"):
            try:
                response = self._http.send("GET", path, creates=False)
            except PublishError:
                return DEFAULT_MAX_CHARACTERS
            if not answered(response):
                continue
            body = json_object(response)
            statuses = (body.get("configuration") or {}).get("statuses") or {}
            for value in (statuses.get("max_characters"), body.get("max_toot_chars")):
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
        return DEFAULT_MAX_CHARACTERS

    # --- the check after an unknown outcome --------------------------------------

    def _read(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = self._http.send("GET", path, creates=False, headers=self._authorization, params=params)
        if not answered(response):
            raise self._failure(response, creating=False)
        try:
            return response.json()
        except ValueError as exc:
            raise TransientPublishError(f"Mastodon at {self.server} sent unreadable JSON for {path}") from exc

    def _find(self, post: PostRequest) -> str | None:
        account = self._read("/api/v1/accounts/verify_credentials")
        account_id = account.get("id") if isinstance(account, dict) else None
        if not account_id:
            raise TransientPublishError(f"Mastodon at {self.server} sent no account id")
        path = f"/api/v1/accounts/{quote(str(account_id), safe='')}/statuses"

        def page(until: str | None) -> list[OwnPost]:
            params = {"limit": str(PAGE_SIZE), "exclude_reblogs": "true"}
            if until is not None:
                params["max_id"] = until
            statuses = self._read(path, params)
            if not isinstance(statuses, list):
                raise TransientPublishError(f"Mastodon at {self.server} sent no list of statuses")
            try:
                return [
                    OwnPost(
                        id=str(status["id"]),
                        created_at=datetime.fromisoformat(status["created_at"]),
                        text=content_text(status.get("content") or ""),
                    )
                    for status in statuses
                ]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise TransientPublishError(f"Mastodon at {self.server} sent a malformed status") from exc

        return find_own_post(page, post, network="Mastodon", page_size=PAGE_SIZE)


def build(destination: Destination, secrets: Mapping[str, str], context: NetworkContext) -> MastodonPublisher:
    """The publisher for a ``mastodon`` destination (see :mod:`bmsuploader.post.destinations`)."""
    server = (context.base_urls or {}).get("mastodon") or destination.server
    assert server is not None  # the config requires an instance for mastodon
    return MastodonPublisher(
        server,
        secrets["access_token"],
        visibility=destination.visibility,
        parameter=f"{destination.secret}/access_token",
        timeout=context.timeout,
    )
