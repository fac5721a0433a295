"""Misskey: the poster's edge to one account on a Misskey server (post text -> note).

:class:`MisskeyPublisher` sends ``POST /api/notes/create`` with JSON
``{"i": token, "text": ..., "visibility": ...}`` (our ``unlisted`` is Misskey's
``home``). Every answer becomes a result or a typed error in one place
(:meth:`MisskeyPublisher.publish`); a failure to get an answer is :mod:`.fediverse`'s
table. Misskey's errors are ``{"error": {"code", "message", "id"}}``:

================================================  ============================================
Misskey says                                      we return / raise
================================================  ============================================
200 ``{"createdNote": {"id"}}``                   ``PublishResult(note id)``
429, ``RATE_LIMIT_EXCEEDED``                      :class:`RateLimitedError`: ``Retry-After``, else
                                                  ``X-RateLimit-Reset`` (seconds to wait), else
                                                  the error's ``info.resetMs``, else
                                                  :data:`DEFAULT_RATE_LIMIT_DELAY`
401, 403 (``AUTHENTICATION_FAILED``,              :class:`AuthError` naming the fix
``CREDENTIAL_REQUIRED``, ``PERMISSION_DENIED``,
suspended or moved account)
400 for the note (``INVALID_PARAM``: too long;    :class:`PermanentPublishError` with the code
prohibited words...)                              and message
5xx                                               :class:`UnknownOutcomeError` (transient:
                                                  retried; a proxy's 502/504 may hide a note)
anything else (404: not a Misskey server?)        :class:`TransientPublishError`
================================================  ============================================

**Exactly once.** Misskey has no idempotency key: a repeated create posts twice. So an
attempt with ``post.maybe_posted`` always checks first: ``POST /api/i`` gives the
account's id, ``POST /api/users/notes`` its newest notes (raw ``text``, as posted),
compared by :func:`~.fediverse.find_own_post`; a match is
``PublishResult(id, duplicate=True)``. The token needs ``write:notes`` to post and
``read:account`` for ``/api/i`` (``users/notes`` needs no permission, and shows the
account its own home and followers-only notes).

**Length and markup** (:data:`RULES`). 3,000 characters; :func:`note_length` counts
UTF-16 units, never fewer than the code points Misskey's schema check counts. Scraped
text must not become MFM (bold ``**``, ``$[fn ...]``, ``:emoji:``, ``<center>``,
``[label](url)`` links, quotes, search boxes, URLs, mentions...): :func:`escape_mfm`
wraps each scraped field in ``<plain>...</plain>``, inside which Misskey's parser
(mfm.js ``plainTag``) reads every character as text up to the first ``</plain>``, so one
inside the field is broken with a full-width ``＜``. That holds for syntax MFM may add
later too, and it keeps Misskey from extracting mentions, tags or emoji from the field.
The renderer's own neutralisation still applies (``@``, ``#``, ``$`` look-alikes; broken
bare links). The entry URL and the template's text are never wrapped.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

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
    detail,
    find_own_post,
    now_utc,
    seconds_until,
)
from bmsuploader.post.rules import PostRules

__all__ = [
    "DEFAULT_RATE_LIMIT_DELAY",
    "RULES",
    "SECRET_HINT",
    "SECRET_NAMES",
    "MisskeyPublisher",
    "build",
    "escape_mfm",
    "note_length",
]

#: Misskey's note text limit (MAX_NOTE_TEXT_LENGTH).
MAX_NOTE_LENGTH = 3000
#: Notes per page when the check reads the account's newest.
PAGE_SIZE = 20

#: Our visibility -> Misskey's.
VISIBILITY = {"public": "public", "unlisted": "home", "followers": "followers"}

SECRET_NAMES = ("token",)
# Where the operator gets the token (named in the error when the parameter is missing).
SECRET_HINT = (
    "access token made under Settings > API > Generate access token, "  # noqa: S105 (not a token)
    "with the permissions write:notes and read:account"
)

_PLAIN_OPEN = "<plain>"
_PLAIN_CLOSE = "</plain>"
#: A "</plain>" inside a field, broken: a full-width "<" does not close the tag.
_PLAIN_CLOSE_BROKEN = "＜/plain>"
_AUTH_FAILED = ("AUTHENTICATION_FAILED", "CREDENTIAL_REQUIRED")


#: What MFM can read as markup: its ASCII signs (bold, italic, strike, code, tags, links,
#: functions, custom emoji, mentions, tags, quotes, math) and a search box's keyword at the
#: end. A field without any is shown as written, so ordinary titles stay plain text.
_MFM_SIGNS = re.compile(r"[*_~`<>\[\]()$:@#\\]|(?:検索|search)\s*$", re.IGNORECASE)


def escape_mfm(value: str) -> str:
    """Scraped ``value`` as MFM shows it as it is: inside ``<plain>`` when it holds anything MFM
    could read as markup (see the module doc)."""
    if not value or not _MFM_SIGNS.search(value):
        return value  # empty stays empty (the renderer drops its segment); plain text stays plain
    return _PLAIN_OPEN + value.replace(_PLAIN_CLOSE, _PLAIN_CLOSE_BROKEN) + _PLAIN_CLOSE


def note_length(text: str) -> int:
    """UTF-16 units: never fewer than the code points Misskey counts."""
    return len(text.encode("utf-16-le")) // 2


RULES = PostRules(
    network="misskey", limit=MAX_NOTE_LENGTH, unit="characters", measure=note_length, escape=escape_mfm
)


def _error(response: requests.Response) -> dict[str, Any]:
    error = json_object(response).get("error")
    return error if isinstance(error, dict) else {}


def _error_text(response: requests.Response, error: Mapping[str, Any]) -> str:
    parts = [str(error.get(key)) for key in ("code", "message") if error.get(key)]
    info = error.get("info")
    if isinstance(info, dict):
        parts += [f"{key}={info[key]}" for key in ("param", "reason") if info.get(key)]
    return detail(f"{response.status_code} {': '.join(parts) or response.reason or ''}")


def _seconds(value: str | None) -> float | None:
    """A non-negative number of seconds, or ``None``."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


class MisskeyPublisher:
    """Posts notes to one account. Build once per container (:func:`build`)."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        visibility: str = "public",
        parameter: str = "<secret path>/token",
        timeout: tuple[float, float] = (3.05, 10.0),
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self._http = Http(server, network="Misskey", timeout=timeout)
        self._token = token
        self._visibility = VISIBILITY[visibility]
        self._parameter = parameter
        self._clock = clock

    def __repr__(self) -> str:
        return f"MisskeyPublisher({self._http.server!r}, visibility={self._visibility!r})"

    @property
    def server(self) -> str:
        return self._http.server

    def publish(self, post: PostRequest) -> PublishResult:
        """Post ``post.text``. The one place Misskey's answers become results and errors."""
        if post.maybe_posted:
            found = self._find(post)
            if found is not None:
                return PublishResult(tweet_id=found, duplicate=True)
        response = self._http.send(
            "POST",
            "/api/notes/create",
            creates=True,
            json={"i": self._token, "text": post.text, "visibility": self._visibility},
        )
        if answered(response):
            note = json_object(response).get("createdNote")
            note_id = note.get("id") if isinstance(note, dict) else None
            if not note_id:
                raise UnknownOutcomeError(
                    f"Misskey at {self.server} answered {response.status_code} without a note id: "
                    "the note may exist; the next attempt checks before posting again"
                )
            return PublishResult(tweet_id=str(note_id))
        raise self._failure(response, creating=True)

    # --- answers that are not a note ---------------------------------------------

    def _failure(self, response: requests.Response, *, creating: bool) -> PublishError:
        status = response.status_code
        error = _error(response)
        code = str(error.get("code") or "")
        text = _error_text(response, error)
        if status == 429 or code == "RATE_LIMIT_EXCEEDED":
            delay = self._retry_after(response, error)
            return RateLimitedError(
                f"Misskey at {self.server} rate limit reached ({text}); waiting {delay}s", delay
            )
        refused = self._refused(status, code, text, creating=creating)
        if refused is not None:
            return refused
        if status == 400 and creating:
            return PermanentPublishError(f"Misskey at {self.server} refused the note ({text})")
        if status >= 500 and creating:
            return UnknownOutcomeError(
                f"Misskey at {self.server} answered {text}: the note may have been created; "
                "the next attempt checks before posting again"
            )
        hint = f" (is {self.server} a Misskey server?)" if status in (404, 405) else ""
        if 300 <= status < 400:
            hint = (
                f" (redirected to {response.headers.get('Location')}: use that as the destination's instance)"
            )
        return TransientPublishError(f"Misskey at {self.server} answered {text}{hint}")

    def _refused(self, status: int, code: str, text: str, *, creating: bool) -> AuthError | None:
        """401 and 403: the token or the account; the operator must act."""
        fix = (
            "make a token under Settings > API > Generate access token with write:notes and "
            f"read:account, then store it: aws ssm put-parameter --name {self._parameter} "
            "--type SecureString --value '<token>' --overwrite"
        )
        if status == 401 or code in _AUTH_FAILED:
            return AuthError(
                f"Misskey at {self.server} rejected the token ({text}): it is wrong or revoked; {fix}"
            )
        if status != 403:
            return None
        if code == "PERMISSION_DENIED":
            needs = "write:notes" if creating else "read:account (to check its notes)"
            return AuthError(f"Misskey at {self.server} refused ({text}): the token lacks {needs}; {fix}")
        return AuthError(
            f"Misskey at {self.server} refused ({text}): the account may be suspended, moved or "
            "not allowed to post; see the account on the server"
        )

    def _retry_after(self, response: requests.Response, error: Mapping[str, Any]) -> int:
        retry_after = response.headers.get("Retry-After")
        if retry_after:
            seconds = _seconds(retry_after)
            if seconds is not None:
                return max(1, math.ceil(seconds))
            try:  # an HTTP date
                return seconds_until(email.utils.parsedate_to_datetime(retry_after), self._clock())
            except (TypeError, ValueError):
                pass
        # Misskey and its forks send the seconds to wait; an epoch time is read as one.
        reset = _seconds(response.headers.get("X-RateLimit-Reset"))
        if reset is not None:
            if reset > 1e9:
                return seconds_until(datetime.fromtimestamp(reset, UTC), self._clock())
            return max(1, math.ceil(reset))
        info = error.get("info")
        reset_ms = _seconds(str(info.get("resetMs"))) if isinstance(info, dict) else None
        if reset_ms is not None:
            return max(1, math.ceil(reset_ms / 1000))
        return DEFAULT_RATE_LIMIT_DELAY

    # --- the check after an unknown outcome --------------------------------------

    def _call(self, endpoint: str, body: Mapping[str, Any]) -> Any:
        response = self._http.send("POST", endpoint, creates=False, json={**body, "i": self._token})
        if not answered(response):
            raise self._failure(response, creating=False)
        try:
            return response.json()
        except ValueError as exc:
            raise TransientPublishError(
                f"Misskey at {self.server} sent unreadable JSON for {endpoint}"
            ) from exc

    def _find(self, post: PostRequest) -> str | None:
        me = self._call("/api/i", {})
        user_id = me.get("id") if isinstance(me, dict) else None
        if not user_id:
            raise TransientPublishError(f"Misskey at {self.server} sent no account id")

        def page(until: str | None) -> list[OwnPost]:
            body: dict[str, Any] = {"userId": user_id, "limit": PAGE_SIZE, "withRenotes": False}
            if until is not None:
                body["untilId"] = until
            notes = self._call("/api/users/notes", body)
            if not isinstance(notes, list):
                raise TransientPublishError(f"Misskey at {self.server} sent no list of notes")
            try:
                return [
                    OwnPost(
                        id=str(note["id"]),
                        created_at=datetime.fromisoformat(note["createdAt"]),
                        text=note.get("text") or "",
                    )
                    for note in notes
                ]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise TransientPublishError(f"Misskey at {self.server} sent a malformed note") from exc

        return find_own_post(page, post, network="Misskey", page_size=PAGE_SIZE)


def build(destination: Destination, secrets: Mapping[str, str], context: NetworkContext) -> MisskeyPublisher:
    """The publisher for a ``misskey`` destination (see :mod:`bmsuploader.post.destinations`)."""
    server = (context.base_urls or {}).get("misskey") or destination.server
    assert server is not None  # the config requires an instance for misskey
    return MisskeyPublisher(
        server,
        secrets["token"],
        visibility=destination.visibility,
        parameter=f"{destination.secret}/token",
        timeout=context.timeout,
    )
