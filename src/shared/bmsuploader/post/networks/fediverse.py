"""What the Mastodon and Misskey publishers share: their HTTP, and the check after a crash.

Part of the poster's "post text -> network" edge (:mod:`.mastodon`, :mod:`.misskey`).

**HTTP** (:class:`Http`): one ``requests`` session per publisher (so one connection
pool per container), the context's (connect, read) timeouts, and no retries: a
request that reached the server may have been accepted, and a retry is the poster's
decision. What a failed request means is decided here, once:

=====================================================  ======================================
what happened                                          raised
=====================================================  ======================================
no connection: refused, DNS, TLS, connect timeout      :class:`TransientPublishError` (nothing
                                                       was sent)
after sending: read timeout, connection dropped        :class:`UnknownOutcomeError` for a call
                                                       that creates a post (it may exist);
                                                       :class:`TransientPublishError` for a read
=====================================================  ======================================

**The check** (:func:`find_own_post`): after an unknown outcome the next attempt
looks for the post among the account's newest ones before posting again: same text
(compared with whitespace normalised), created no earlier than the entry was fetched
minus :data:`CHECK_MARGIN` (the server's clock against ours). It pages back until a
post older than that; if :data:`MAX_CHECK_PAGES` pages do not reach one, the account
posted too much since to tell, and :class:`MaybePostedError` sends the message to the
dead-letter queue for a person to look.

No message here ever holds a secret: requests puts neither headers nor bodies in its
exceptions, and only method and path are quoted.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from bmsuploader.contract import clock
from bmsuploader.contract.errors import MaybePostedError, TransientPublishError, UnknownOutcomeError
from bmsuploader.post.networks.base import PostRequest

#: How much earlier than the entry's fetch time a post of it may look, by the server's clock.
CHECK_MARGIN = timedelta(minutes=10)
#: Pages of the account's newest posts the check reads at most.
MAX_CHECK_PAGES = 5
#: Seconds to wait after a 429 that says nothing about when to come back.
DEFAULT_RATE_LIMIT_DELAY = 300
#: A server's error text is quoted up to this many characters.
DETAIL_LIMIT = 300

_WHITESPACE = re.compile(r"\s+")


def now_utc() -> datetime:
    """The pipeline's clock (:mod:`bmsuploader.contract.clock`): the fault test's virtual time
    reaches the Idempotency-Key window and a rate limit's reset through it."""
    return clock.now()


def aware(moment: datetime) -> datetime:
    """``moment`` with a time zone (a naive one is UTC, as every clock here is)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds from ``now`` to ``moment``, at least 1 (the queue caps the other end)."""
    return max(1, math.ceil((aware(moment) - aware(now)).total_seconds()))


def comparable(text: str) -> str:
    """A post's text as the check compares it: NFC, whitespace runs as one space, stripped."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def detail(text: str) -> str:
    return text.strip()[:DETAIL_LIMIT]


# --- HTTP ---------------------------------------------------------------------


def _never_sent(exc: requests.RequestException) -> bool:
    """The request cannot have reached the server: no connection was made."""
    if isinstance(
        exc, requests.ConnectTimeout | requests.exceptions.SSLError | requests.exceptions.InvalidURL
    ):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        # Refused or not resolved: requests wraps urllib3's MaxRetryError, whose reason says so.
        return isinstance(getattr(exc.args[0], "reason", None), NewConnectionError)
    return False


class Http:
    """Requests to one server. Build once per publisher."""

    def __init__(self, server: str, *, network: str, timeout: tuple[float, float]) -> None:
        self.server = server.rstrip("/")
        self.network = network
        self._timeout = timeout
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def send(
        self,
        method: str,
        path: str,
        *,
        creates: bool,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One request; a failure to get an answer raised as the table in the module doc says."""
        where = f"{self.network} at {self.server} ({method} {path})"
        try:
            return self._session.request(
                method,
                self.server + path,
                headers=dict(headers or {}),
                json=json,
                params=dict(params or {}),
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            kind = type(exc).__name__
            if _never_sent(exc):
                raise TransientPublishError(f"could not reach {where}: {kind}") from exc
            timed_out = isinstance(exc, requests.Timeout)
            what = "did not answer in time" if timed_out else f"dropped the connection ({kind})"
            if creates:
                raise UnknownOutcomeError(
                    f"{where} {what} after the post was sent: it may have been posted; "
                    "the next attempt checks the account before posting again"
                ) from exc
            raise TransientPublishError(f"{where} {what}") from exc


def answered(response: requests.Response) -> bool:
    """A 2xx: the call did what it was asked. (Redirects are not followed: a POST that
    requests would follow as a GET posts nothing.)"""
    return 200 <= response.status_code < 300


# --- the check after an unknown outcome ---------------------------------------


@dataclass(frozen=True)
class OwnPost:
    """One of the account's posts, as the check sees it."""

    id: str
    created_at: datetime
    #: the text as posted (Mastodon: its HTML content turned back into text)
    text: str


def find_own_post(
    page: Callable[[str | None], list[OwnPost]], post: PostRequest, *, network: str, page_size: int
) -> str | None:
    """The id of the account's post with ``post``'s text, if it posted it; else ``None``.

    ``page(until_id)`` returns the account's posts older than ``until_id`` (the newest
    when ``None``), newest first, ``page_size`` asked for (the error message counts them).
    """
    wanted = comparable(post.text)
    earliest = aware(post.created_at) - CHECK_MARGIN
    until: str | None = None
    for _ in range(MAX_CHECK_PAGES):
        posts = page(until)
        for own in posts:
            if aware(own.created_at) >= earliest and comparable(own.text) == wanted:
                return own.id
        # Only an empty page or one reaching back before the entry ends the search: a
        # server may send fewer than asked for on a page that is not its last.
        if not posts or min(aware(own.created_at) for own in posts) < earliest:
            return None  # every post since the entry was fetched has been seen
        until = posts[-1].id
    raise MaybePostedError(
        f"an earlier attempt may have posted this entry to {network}, and the account's "
        f"{MAX_CHECK_PAGES * page_size} newest posts all came after it was fetched without one "
        "matching: look at the account and redrive the message only if the post is missing"
    )
