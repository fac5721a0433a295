"""A fake Discord webhook API on loopback: the far side of the poster's Discord edge.

It speaks real HTTP/1.1 (keep-alive, like Discord), so
:class:`~bmsuploader.post.networks.discord.DiscordPublisher` is tested through
``requests`` exactly as in production, with only the host changed (the
destination context's ``base_urls["discord"]``; the path, token and query are the
real ones). It answers ``POST /api[/vN]/webhooks/<id>/<token>`` the way Discord does:

* 404 ``{"message": "Unknown Webhook", "code": 10015}`` for a webhook it does not know;
* 401 ``{"message": "Invalid Webhook Token", "code": 50027}`` for a wrong token;
* 429 when ``rate_limit`` is set (e.g. ``(5, 2.0)``: 5 requests per 2 s per webhook)
  and exceeded, with ``retry_after``, ``global`` and the ``Retry-After`` /
  ``X-RateLimit-*`` headers;
* 400 ``Invalid Form Body`` (50035, with ``errors``) for content over 2,000 characters
  or a malformed ``allowed_mentions``, 50006 for an empty message, 50109 for bad JSON;
* otherwise the message: 200 with its JSON (a snowflake ``id``, ``content``,
  ``mention_everyone``...) with ``?wait=true``, 204 without.

Every accepted post records whether it **would have pinged** someone
(``pinged``: ``everyone`` for @everyone/@here, ``users`` for ``<@id>``, ``roles``
for ``<@&id>``), as Discord decides it: by the content's mention syntax and what
``allowed_mentions`` allows (absent = everything, for a webhook). A test asserts
``pinged == []``.

Anything else can be scripted, as with the fake X:
``fake.script(FakeDiscord.normal(), FakeDiscord.rate_limited(1.5))`` queues answers
for the next requests; :meth:`FakeDiscord.accept_then_drop` accepts the post and
closes the connection without answering (a crash or network cut after Discord
accepted it).

Run standalone with ``python -m bmsuploader_local.fake_discord --port 8134``: it
prints its base URL (the ``discord`` entry of ``NETWORK_BASE_URLS``) and the
webhook URL to store as the destination's ``webhook_url``; ``GET /fake/posts``
lists the accepted posts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from bmsuploader_local.loopback import LoopbackService, Responder, Scripted, next_answer

MAX_CONTENT_LENGTH = 2000
DISCORD_EPOCH_MS = 1_420_070_400_000
#: The fake's default webhook, stable across runs (a local run stores its URL in SSM once).
DEFAULT_WEBHOOK_ID = "1300000000000000001"
DEFAULT_WEBHOOK_TOKEN = "fake-discord-webhook-token-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"  # noqa: S105
CHANNEL_ID = "1300000000000000100"
GUILD_ID = "1300000000000000200"

_ROUTE = re.compile(r"^/api(?:/v\d{1,2})?/webhooks/(?P<id>\d+)/(?P<token>[^/]+)/?$")
_EVERYONE = re.compile(r"@(everyone|here)")
_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_MENTION_KINDS = ("users", "roles", "everyone")


@dataclass(frozen=True)
class SeenRequest:
    """One request the fake received, and what it answered (``None``: dropped)."""

    method: str
    path: str
    query: dict[str, list[str]]
    #: the JSON body, or ``None`` when it was not JSON
    payload: Any
    status: int | None
    #: the client's port: a new one per connection
    client_port: int


def would_ping(content: str, allowed_mentions: Any) -> list[str]:
    """Which kinds of mention ``content`` would ping, as Discord decides for a webhook.

    Without ``allowed_mentions`` a webhook's content pings everything it names;
    with it, only the kinds in ``parse`` and the ids in ``users`` / ``roles``.
    """
    everything = not isinstance(allowed_mentions, dict)
    allowed = cast("dict[str, Any]", allowed_mentions) if not everything else {}
    parse = allowed.get("parse", []) if not everything else list(_MENTION_KINDS)
    pinged = []
    if _EVERYONE.search(content) and "everyone" in parse:
        pinged.append("everyone")
    users = set(map(str, allowed.get("users", [])))
    if any("users" in parse or found in users for found in _USER.findall(content)):
        pinged.append("users")
    roles = set(map(str, allowed.get("roles", [])))
    if any("roles" in parse or found in roles for found in _ROLE.findall(content)):
        pinged.append("roles")
    return pinged


def _error(message: str, code: int, errors: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return body


def _form_error(field_name: str, code: str, message: str) -> dict[str, Any]:
    return _error("Invalid Form Body", 50035, {field_name: {"_errors": [{"code": code, "message": message}]}})


def _refusal(payload: Any) -> dict[str, Any] | None:
    """Discord's 400 body for an execute-webhook payload it would refuse, or ``None``."""
    if not isinstance(payload, dict):
        return _error("The request body contains invalid JSON.", 50109)
    content = payload.get("content")
    if content is not None and not isinstance(content, str):
        return _form_error("content", "STRING_TYPE_CONVERT", "Could not interpret as string.")
    if not content or not content.strip():
        return _error("Cannot send an empty message", 50006)
    if len(content) > MAX_CONTENT_LENGTH:
        return _form_error(
            "content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_LENGTH} or fewer in length."
        )
    allowed = payload.get("allowed_mentions")
    if allowed is not None:
        parse = allowed.get("parse", []) if isinstance(allowed, dict) else None
        if not isinstance(parse, list) or any(kind not in _MENTION_KINDS for kind in parse):
            return _form_error("allowed_mentions", "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE", "Invalid.")
    return None


class FakeDiscord(LoopbackService):
    """``with FakeDiscord() as fake: DiscordPublisher(parse_webhook_url(fake.webhook_url),
    base_url=fake.base_url)``."""

    thread_name = "fake-discord"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        webhook_id: str = DEFAULT_WEBHOOK_ID,
        token: str = DEFAULT_WEBHOOK_TOKEN,
        rate_limit: tuple[int, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host, port)
        self._lock = threading.Lock()
        self._queue: deque[Scripted] = deque()
        self._next_sequence = 1
        #: The webhooks it knows: id -> token.
        self.webhooks: dict[str, str] = {webhook_id: token}
        self.webhook_id = webhook_id
        #: ``(requests, seconds)`` per webhook, or ``None`` for no limit.
        self.rate_limit = rate_limit
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        #: Accepted posts, oldest first: ``{"id", "webhook_id", "content", "allowed_mentions",
        #: "flags", "pinged"}``.
        self.posts: list[dict[str, Any]] = []
        #: Every request received, with the status answered.
        self.requests: list[SeenRequest] = []
        #: Asked for an answer when nothing is scripted, with the request's content: a
        #: :class:`Scripted` or ``None`` (answer as Discord would). Called under the lock.
        self.responder: Responder | None = None

    # --- webhooks ---------------------------------------------------------------

    def add_webhook(self, webhook_id: str, token: str) -> str:
        """Another webhook; returns its URL (as Discord shows it)."""
        with self._lock:
            self.webhooks[webhook_id] = token
        return self.webhook_url_for(webhook_id)

    def webhook_url_for(self, webhook_id: str) -> str:
        return f"https://discord.com/api/webhooks/{webhook_id}/{self.webhooks[webhook_id]}"

    @property
    def webhook_url(self) -> str:
        """The default webhook's URL as Discord shows it: what the SSM parameter holds.
        The publisher sends its path to :attr:`base_url`."""
        return self.webhook_url_for(self.webhook_id)

    @property
    def local_webhook_url(self) -> str:
        """The same webhook on this fake (for curl)."""
        return f"{self.base_url}/api/webhooks/{self.webhook_id}/{self.webhooks[self.webhook_id]}"

    # --- scripting --------------------------------------------------------------

    def script(self, *responses: Scripted) -> None:
        """Queue answers for the next webhook requests, in order."""
        with self._lock:
            self._queue.extend(responses)

    @staticmethod
    def rate_limited(
        retry_after: float | None,
        *,
        global_: bool = False,
        retry_after_header: str | None = None,
        scope: str | None = None,
    ) -> Scripted:
        """A 429 like Discord's: ``retry_after`` in the body (``None``: left out), the
        ``Retry-After`` header (default: ``retry_after`` rounded up; ``""``: left out),
        ``X-RateLimit-*``."""
        headers = {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Bucket": "fakebucket"}
        if retry_after is not None:
            headers["X-RateLimit-Reset-After"] = f"{retry_after:.3f}"
            headers["X-RateLimit-Reset"] = f"{time.time() + retry_after:.3f}"
            headers["Retry-After"] = str(math.ceil(retry_after))
        if retry_after_header == "":
            headers.pop("Retry-After", None)
        elif retry_after_header is not None:
            headers["Retry-After"] = retry_after_header
        headers["X-RateLimit-Scope"] = scope or ("global" if global_ else "user")
        if global_:
            headers["X-RateLimit-Global"] = "true"
        body: dict[str, Any] = {"message": "You are being rate limited.", "global": global_}
        if retry_after is not None:
            body["retry_after"] = retry_after
        return Scripted(status=429, headers=headers, body=body)

    @staticmethod
    def server_error(status: int = 503) -> Scripted:
        return Scripted(status=status, body=_error("Service Unavailable", 0))

    @staticmethod
    def unauthorized() -> Scripted:
        return Scripted(status=401, body=_error("Invalid Webhook Token", 50027))

    @staticmethod
    def unknown_webhook() -> Scripted:
        return Scripted(status=404, body=_error("Unknown Webhook", 10015))

    @staticmethod
    def missing_permissions() -> Scripted:
        return Scripted(status=403, body=_error("Missing Permissions", 50013))

    @staticmethod
    def bad_request(message: str = "Invalid Form Body", code: int = 50035, errors: Any = None) -> Scripted:
        return Scripted(status=400, body=_error(message, code, errors))

    @staticmethod
    def normal() -> Scripted:
        """Answer this request as Discord would: ``script(normal(), server_error())``."""
        return Scripted(status=200, normal=True)

    @staticmethod
    def accept_then_drop() -> Scripted:
        return Scripted(status=200, accept_then_drop=True)

    # --- the behaviour of Discord -------------------------------------------------

    def _limited(self, webhook_id: str) -> tuple[int, Any, dict[str, str]] | None:
        """A 429 when the webhook is over its limit; otherwise counts this request. Holds the lock."""
        if self.rate_limit is None:
            return None
        limit, window = self.rate_limit
        now = self._clock()
        recent = self._recent.setdefault(webhook_id, deque())
        while recent and now - recent[0] >= window:
            recent.popleft()
        if len(recent) >= limit:
            wait = round(window - (now - recent[0]), 3)
            scripted = self.rate_limited(wait)
            return scripted.status, scripted.body, dict(scripted.headers)
        recent.append(now)
        return None

    def _limit_headers(self, webhook_id: str) -> dict[str, str]:
        if self.rate_limit is None:
            return {}
        limit, window = self.rate_limit
        recent = self._recent.get(webhook_id) or deque([self._clock()])
        reset_after = max(0.0, window - (self._clock() - recent[0]))
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - len(recent))),
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Bucket": "fakebucket",
        }

    def _answer(
        self, webhook_id: str, token: str, query: Mapping[str, list[str]], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Default answer to an execute-webhook request: ``(status, json body, headers)``. Holds the lock."""
        if webhook_id not in self.webhooks:
            return 404, _error("Unknown Webhook", 10015), {}
        if self.webhooks[webhook_id] != token:
            return 401, _error("Invalid Webhook Token", 50027), {}
        if (limited := self._limited(webhook_id)) is not None:
            return limited
        headers = self._limit_headers(webhook_id)
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            payload = None
        if (refused := _refusal(payload)) is not None:
            return 400, refused, headers
        content, allowed = payload["content"], payload.get("allowed_mentions")
        pinged = would_ping(content, allowed)
        message_id = self._snowflake()
        flags = payload.get("flags", 0)
        self.posts.append(
            {
                "id": message_id,
                "webhook_id": webhook_id,
                "content": content,
                "allowed_mentions": allowed,
                "flags": flags,
                "pinged": pinged,
            }
        )
        if query.get("wait", ["false"])[-1].lower() != "true":
            return 204, None, headers
        return 200, self._message(message_id, webhook_id, content, pinged, flags), headers

    def _snowflake(self) -> str:
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        sequence, self._next_sequence = self._next_sequence, self._next_sequence + 1
        return str((millis << 22) | (sequence & 0xFFF))

    def _message(
        self, message_id: str, webhook_id: str, content: str, pinged: list[str], flags: Any
    ) -> dict[str, Any]:
        return {
            "id": message_id,
            "type": 0,
            "content": content,
            "channel_id": CHANNEL_ID,
            "author": {"id": webhook_id, "username": "bmsuploader", "avatar": None, "bot": True},
            "attachments": [],
            "embeds": [],
            "mentions": [{"id": i} for i in _USER.findall(content)] if "users" in pinged else [],
            "mention_roles": _ROLE.findall(content) if "roles" in pinged else [],
            "mention_everyone": "everyone" in pinged,
            "pinned": False,
            "tts": False,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "flags": flags,
            "components": [],
            "webhook_id": webhook_id,
        }


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeDiscord/1.0"
    protocol_version = "HTTP/1.1"  # keep-alive, like discord.com

    @property
    def fake(self) -> FakeDiscord:
        return cast(FakeDiscord, self.server.service)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet (and the path holds a token): tests read fake.requests instead

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.path == "/fake/posts":
            with self.fake._lock:
                posts = list(self.fake.posts)
            self._send(200, {"posts": posts})
        else:
            self._send(404, _error("404: Not Found", 0))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        route = _ROUTE.match(parts.path)
        fake = self.fake
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            payload = None
        content = payload.get("content") if isinstance(payload, dict) else None

        def seen(status: int | None) -> None:
            fake.requests.append(
                SeenRequest("POST", parts.path, query, payload, status, self.client_address[1])
            )

        if route is None:
            with fake._lock:
                seen(404)
            self._send(404, _error("404: Not Found", 0))
            return
        with fake._lock:
            scripted = next_answer(fake._queue, fake.responder, content if isinstance(content, str) else None)
            if scripted is not None and scripted.replaces_answer:
                seen(scripted.status)
                status, answer, headers = scripted.status, scripted.body, dict(scripted.headers)
            else:
                status, answer, headers = fake._answer(route["id"], route["token"], query, body)
                dropped = scripted is not None and scripted.accept_then_drop and status in (200, 204)
                seen(None if dropped else status)
                if dropped:
                    # Discord took the post; the answer never arrives.
                    self.close_connection = True
                    return
        self._send(status, answer, headers)


FakeDiscord.handler = _Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake Discord webhook API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--webhook-id", default=DEFAULT_WEBHOOK_ID)
    parser.add_argument("--token", default=DEFAULT_WEBHOOK_TOKEN)
    parser.add_argument(
        "--rate-limit", action="store_true", help="answer 429 past 5 requests per 2 s per webhook"
    )
    args = parser.parse_args(argv)
    fake = FakeDiscord(
        args.host,
        args.port,
        webhook_id=args.webhook_id,
        token=args.token,
        rate_limit=(5, 2.0) if args.rate_limit else None,
    )
    with fake:
        print(f"base URL     {fake.base_url}", flush=True)
        print(f"webhook URL  {fake.webhook_url}  (store this as webhook_url)", flush=True)
        print(f"on the fake  {fake.local_webhook_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
