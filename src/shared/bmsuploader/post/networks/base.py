"""What every publisher receives and returns. No network code, no heavy imports."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class _JsonAnswer(Protocol):
    def json(self) -> Any: ...


def json_object(response: _JsonAnswer) -> dict[str, Any]:
    """A network's answer as a JSON object, or ``{}`` (an empty or non-JSON body, an array).

    For reading the details of an answer (an id, an error code); a body that must be there
    is checked by its caller.
    """
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@dataclass(frozen=True)
class PostRequest:
    """One post for one destination, rendered by that destination's rules."""

    text: str
    #: ``[start, end)`` of the entry URL in :attr:`text`, in characters (Python str
    #: offsets), when the post carries it. Bluesky turns this into a link facet.
    link: tuple[int, int] | None
    #: Stable for (destination, source, entry id): the same on every attempt and in
    #: every invocation, different for every other entry or destination. 64 hex
    #: characters (SHA-256). Idempotency keys, record keys (a Bluesky TID) derive from it.
    key: str
    #: When the entry was fetched (the message's ``fetched_at``): stable across attempts.
    created_at: datetime
    #: An earlier attempt may have been accepted by the network (a crash or an
    #: unknown outcome after sending): check before posting again, where the network
    #: allows it; where it does not, raise :class:`~bmsuploader.contract.errors.MaybePostedError`.
    maybe_posted: bool = False


@dataclass(frozen=True)
class PublishResult:
    #: The network's id of the post (X: the tweet id; Bluesky: the record's ``at://`` URI;
    #: Mastodon/Misskey/Discord: the status, note or message id). ``None`` when the
    #: network refused it as a duplicate without telling which post it duplicates.
    tweet_id: str | None
    #: The network already has this post: almost always our own earlier attempt that
    #: it accepted just before we crashed. Treated as done, never re-posted.
    duplicate: bool = False
    #: nothing was sent: DRY_RUN is on
    dry_run: bool = False


class Publisher(Protocol):
    def publish(self, post: PostRequest) -> PublishResult: ...


def post_key(destination: str, source: str, entry_id: str) -> str:
    """The :attr:`PostRequest.key` of an entry on a destination."""
    return hashlib.sha256(f"{destination}\x00{source}\x00{entry_id}".encode()).hexdigest()


class SessionStore(Protocol):
    """Where a network's login session is kept between invocations (Bluesky: its access
    and refresh JWTs), so a cold start does not log in again. Values are secrets:
    never logged. Implemented on the state table (:mod:`bmsuploader.aws.state.sessions`)."""

    def load(self, destination: str) -> dict[str, str] | None: ...

    def save(self, destination: str, session: dict[str, str]) -> None: ...


@dataclass(frozen=True, eq=False)  # hashed by identity: one per container, a cache key
class NetworkContext:
    """What a network's publisher may need besides its destination and secrets."""

    sessions: SessionStore
    #: Local runs and tests: the server to talk to instead of the real one, by
    #: destination kind (e.g. ``{"discord": "http://127.0.0.1:8125"}``).
    base_urls: dict[str, str] | None = None
    #: (connect, read) seconds for one HTTP request. The publisher never retries a
    #: request itself: a retry is the poster's decision (and the message's next attempt).
    timeout: tuple[float, float] = (3.05, 10.0)
