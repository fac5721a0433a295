"""A fake Mastodon server on loopback: the far side of the poster's Mastodon edge, for tests
and local runs.

It speaks real HTTP, so :class:`~bmsuploader.post.networks.mastodon.MastodonPublisher` is
tested through requests exactly as in production, with only the server changed. It
answers the way Mastodon does:

* ``POST /api/v1/statuses`` (JSON or form): 401 without the bearer token, 403 without
  the ``write:statuses`` scope, 422 for an empty text, an unknown visibility or a text
  over ``max_characters`` (code points; every ``http(s)://`` run counts 23), else 200 with
  the status. A repeated ``Idempotency-Key`` within an hour (of :attr:`FakeMastodon.now`)
  answers the same status and posts nothing;
* ``GET /api/v1/accounts/verify_credentials`` (``read:accounts``) and
  ``GET /api/v1/accounts/{id}/statuses`` (``limit`` up to 40, ``max_id``; ``read:statuses``
  when a token is sent), newest first; ``content`` is HTML as Mastodon renders it: links
  split into ``invisible``/``ellipsis`` spans, mentions and hashtags linked, line breaks
  as ``<br />`` -- and each status lists the ``mentions`` and ``tags`` Mastodon would
  have found in its text;
* ``GET /api/v2/instance`` and ``/api/v1/instance`` with the character limit
  (``instance_api`` chooses which exist).

Answers to ``POST /api/v1/statuses`` can be scripted, in order:
``fake.script(FakeMastodon.rate_limited(reset), FakeMastodon.normal())``;
:meth:`FakeMastodon.accept_then_drop` posts the status and closes the connection
without answering (a crash or a cut after Mastodon accepted it). When nothing is
scripted, :attr:`FakeMastodon.responder` (if set) may answer instead: an outage window
in a test's own (virtual) time.

Run standalone with ``python -m bmsuploader_local.fake_mastodon --port 8132``; it prints
its base URL, and ``GET /fake/posts`` lists the statuses.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from bmsuploader_local.loopback import JsonHandler, LoopbackService, Responder, Scripted, next_answer

DEFAULT_TOKEN = "fake-mastodon-token"  # noqa: S105 -- a fake's well-known test token
ALL_SCOPES = frozenset({"write:statuses", "read:accounts", "read:statuses"})
ACCOUNT_ID = "109000000000000001"
USERNAME = "bmsbot"
FIRST_ID = 110_000_000_000_000_001
IDEMPOTENCY_TTL = timedelta(hours=1)
URL_LENGTH = 23
VISIBILITIES = ("public", "unlisted", "private", "direct")

# The fake's approximations of Mastodon's own patterns (TextFormatter, Account::MENTION_RE,
# Tag::HASHTAG_RE): enough to see whether scraped text came out as a link, mention or tag.
_URL = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![/\w])@([a-z0-9_]+(?:[a-z0-9_.-]+[a-z0-9_]+)?)(?:@([\w.-]+\w))?", re.IGNORECASE)
_HASHTAG = re.compile(r"(?<![/)\w])[#＃](\w*[^\W\d_]\w*)")
_ENTITY = re.compile(f"{_URL.pattern}|{_MENTION.pattern}|{_HASHTAG.pattern}", re.IGNORECASE)


@dataclass(frozen=True)
class SeenRequest:
    """One request the fake received, and what it answered (``None``: dropped)."""

    method: str
    path: str
    authorization: str | None
    idempotency_key: str | None
    text: str | None
    status: int | None


def status_length(text: str) -> int:
    """The fake's count: code points, each ``http(s)://`` run as 23 (Mastodon counts graphemes)."""
    return len(_URL.sub("x" * URL_LENGTH, text))


def _link(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if len(rest) > 30:  # Mastodon shows 30 characters and hides the rest
        shown = (
            f'<span class="ellipsis">{html.escape(rest[:30])}</span>'
            f'<span class="invisible">{html.escape(rest[30:])}</span>'
        )
    else:
        shown = f'<span class="">{html.escape(rest)}</span>'

    return (
        f'<a href="{html.escape(url)}" target="_blank" rel="nofollow noopener" translate="no">'
        f'<span class="invisible">{html.escape(scheme)}://</span>{shown}</a>'
    )


def _render_line(line: str, base_url: str) -> str:
    out: list[str] = []
    position = 0
    for match in _ENTITY.finditer(line):
        out.append(html.escape(line[position : match.start()]))
        found = match.group()
        if _URL.fullmatch(found):
            out.append(_link(found))
        elif found.startswith("@"):
            name = found[1:].split("@")[0]
            out.append(
                f'<span class="h-card" translate="no"><a href="{base_url}/@{html.escape(name)}" '
                f'class="u-url mention">@<span>{html.escape(name)}</span></a></span>'
            )
        else:
            tag = found[1:]
            out.append(
                f'<a href="{base_url}/tags/{html.escape(tag)}" class="mention hashtag" rel="tag">'
                f"{html.escape(found[0])}<span>{html.escape(tag)}</span></a>"
            )
        position = match.end()
    out.append(html.escape(line[position:]))
    return "".join(out)


def content_html(text: str, base_url: str = "https://mastodon.example") -> str:
    """``text`` as Mastodon renders a status's ``content``."""
    paragraphs = re.split(r"\n\n+", text.strip())
    return "".join(
        "<p>" + "<br />".join(_render_line(line, base_url) for line in paragraph.split("\n")) + "</p>"
        for paragraph in paragraphs
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _error(message: str) -> dict[str, Any]:
    return {"error": message}


class FakeMastodon(LoopbackService):
    """Context manager: ``with FakeMastodon() as fake: MastodonPublisher(fake.base_url, token)``."""

    thread_name = "fake-mastodon"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str = DEFAULT_TOKEN,
        scopes: frozenset[str] = ALL_SCOPES,
        max_characters: int = 500,
        instance_api: str = "v2",
    ) -> None:
        super().__init__(host, port)
        self.token = token
        self.scopes = scopes
        self.max_characters = max_characters
        #: ``v2`` (both instance endpoints), ``v1`` (v1 only, with ``max_toot_chars``) or ``none``.
        self.instance_api = instance_api
        #: The most statuses one page holds, whatever ``limit`` asks (Mastodon: 40).
        self.max_page = 40
        #: The fake's clock: status times and the idempotency keys' hour. Tests may replace it.
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._lock = threading.Lock()
        self._queue: deque[Scripted] = deque()
        self._next_id = FIRST_ID
        self._keys: dict[str, tuple[str, datetime]] = {}
        #: Statuses, oldest first, as the API shows them, plus ``text`` and ``idempotency_key``.
        self.statuses: list[dict[str, Any]] = []
        #: Every request received, with the status answered.
        self.requests: list[SeenRequest] = []
        #: Asked for an answer to ``POST /api/v1/statuses`` when nothing is scripted, with the
        #: status's text: a :class:`Scripted` or ``None`` (answer as Mastodon would). Called
        #: under the fake's lock: it must not call back into the fake.
        self.responder: Responder | None = None

    # --- scripting ------------------------------------------------------------

    def script(self, *responses: Scripted) -> None:
        """Queue answers for the next ``POST /api/v1/statuses`` requests, in order."""
        with self._lock:
            self._queue.extend(responses)

    @staticmethod
    def rate_limited(reset: datetime | None) -> Scripted:
        headers = {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0"}
        if reset is not None:
            headers["X-RateLimit-Reset"] = _iso(reset)
        return Scripted(status=429, headers=headers, body=_error("Too many requests"))

    @staticmethod
    def server_error(status: int = 503) -> Scripted:
        return Scripted(status=status, body=_error("Service Unavailable"))

    @staticmethod
    def unauthorized() -> Scripted:
        return Scripted(status=401, body=_error("The access token was revoked"))

    @staticmethod
    def forbidden(message: str = "This action is outside the authorized scopes") -> Scripted:
        return Scripted(status=403, body=_error(message))

    @staticmethod
    def unprocessable(message: str) -> Scripted:
        return Scripted(status=422, body=_error(message))

    @staticmethod
    def normal() -> Scripted:
        return Scripted(status=200, normal=True)

    @staticmethod
    def accept_then_drop() -> Scripted:
        return Scripted(status=200, accept_then_drop=True)

    # --- the state --------------------------------------------------------------

    def add_status(self, text: str, *, created_at: datetime | None = None, visibility: str = "public") -> str:
        """Put a status on the account (one posted earlier, by us or by hand); its id."""
        with self._lock:
            return str(self._create(text, visibility, None, created_at or self.now())["id"])

    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(status) for status in self.statuses]

    def _create(self, text: str, visibility: str, key: str | None, created_at: datetime) -> dict[str, Any]:
        """Holds the lock."""
        status_id = str(self._next_id)
        self._next_id += 1
        base = f"https://{urlsplit(self.base_url).netloc}"
        status = {
            "id": status_id,
            "created_at": _iso(created_at),
            "visibility": visibility,
            "content": content_html(text, base),
            "url": f"{base}/@{USERNAME}/{status_id}",
            "account": {"id": ACCOUNT_ID, "username": USERNAME, "acct": USERNAME},
            "mentions": [
                {"username": m.group(1), "acct": m.group(1) + (f"@{m.group(2)}" if m.group(2) else "")}
                for m in _MENTION.finditer(text)
            ],
            "tags": [{"name": m.group(1)} for m in _HASHTAG.finditer(text)],
            "reblog": None,
            # Not in Mastodon's answer (it returns only content); kept for tests.
            "text": text,
            "idempotency_key": key,
        }
        self.statuses.append(status)
        if key is not None:
            self._keys[key] = (status_id, self.now())
        return status

    @staticmethod
    def shown(status: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in status.items() if k not in ("text", "idempotency_key")}

    # --- the behaviour of Mastodon ------------------------------------------------

    def _scope_error(
        self, authorization: str | None, scope: str, *, optional: bool = False
    ) -> tuple[int, Any] | None:
        """``None`` if the request may go on. Holds the lock."""
        if authorization is None and optional:
            return None
        if authorization != f"Bearer {self.token}":
            return 401, _error("The access token is invalid")
        family = scope.split(":", maxsplit=1)[0]
        if scope not in self.scopes and family not in self.scopes:
            return 403, _error("This action is outside the authorized scopes")
        return None

    def _post_status(
        self, authorization: str | None, key: str | None, form: Mapping[str, Any]
    ) -> tuple[int, Any]:
        """Default answer to ``POST /api/v1/statuses``. Holds the lock."""
        refused = self._scope_error(authorization, "write:statuses")
        if refused:
            return refused
        text = form.get("status")
        visibility = form.get("visibility") or "public"
        if key and key in self._keys:
            status_id, stored = self._keys[key]
            if self.now() - stored < IDEMPOTENCY_TTL:
                return 200, self.shown(next(s for s in self.statuses if s["id"] == status_id))
            del self._keys[key]
        if not isinstance(text, str) or not text.strip():
            return 422, _error("Validation failed: Text can't be blank")
        if visibility not in VISIBILITIES:
            return 422, _error("Validation failed: Visibility is not included in the list")
        if status_length(text) > self.max_characters:
            return 422, _error(f"Validation failed: Text character limit of {self.max_characters} exceeded")
        return 200, self.shown(self._create(text, visibility, key, self.now()))

    def _account_statuses(
        self, authorization: str | None, account_id: str, query: Mapping[str, str]
    ) -> tuple[int, Any]:
        refused = self._scope_error(authorization, "read:statuses", optional=True)
        if refused:
            return refused
        if account_id != ACCOUNT_ID:
            return 404, _error("Record not found")
        try:
            limit = min(int(query.get("limit", "20")), self.max_page)
        except ValueError:
            return 400, _error("limit must be a number")
        visible = ("public", "unlisted") if authorization is None else VISIBILITIES
        found = [s for s in reversed(self.statuses) if s["visibility"] in visible]
        if "max_id" in query:
            found = [s for s in found if int(s["id"]) < int(query["max_id"])]
        return 200, [self.shown(s) for s in found[:limit]]

    def _instance(self, version: str) -> tuple[int, Any]:
        if self.instance_api == "none" or (version == "v2" and self.instance_api == "v1"):
            return 404, _error("Record not found")
        if version == "v2":
            return 200, {
                "domain": "mastodon.example",
                "configuration": {"statuses": {"max_characters": self.max_characters}},
            }
        return 200, {"uri": "mastodon.example", "max_toot_chars": self.max_characters}


class _Handler(JsonHandler):
    server_version = "FakeMastodon/1.0"

    @property
    def fake(self) -> FakeMastodon:
        return cast(FakeMastodon, self.server.service)  # type: ignore[attr-defined]

    def _seen(self, text: str | None, status: int | None) -> None:
        self.fake.requests.append(
            SeenRequest(
                self.command,
                self.path,
                self.headers.get("Authorization"),
                self.headers.get("Idempotency-Key"),
                text,
                status,
            )
        )

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        authorization = self.headers.get("Authorization")
        fake = self.fake
        with fake._lock:
            if parts.path == "/fake/posts":
                status, body = 200, {"posts": [dict(s) for s in fake.statuses]}
            elif parts.path in ("/api/v2/instance", "/api/v1/instance"):
                status, body = fake._instance(parts.path.split("/")[2])
            elif parts.path == "/api/v1/accounts/verify_credentials":
                refused = fake._scope_error(authorization, "read:accounts")
                status, body = refused or (200, {"id": ACCOUNT_ID, "username": USERNAME, "acct": USERNAME})
            elif match := re.fullmatch(r"/api/v1/accounts/([^/]+)/statuses", parts.path):
                status, body = fake._account_statuses(authorization, match.group(1), query)
            else:
                status, body = 404, _error("Record not found")
            self._seen(None, status)
        self._send(status, body)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path != "/api/v1/statuses":
            self._send(404, _error("Record not found"))
            return
        form = _form(raw, self.headers.get("Content-Type") or "")
        text = form.get("status") if isinstance(form.get("status"), str) else None
        authorization = self.headers.get("Authorization")
        key = self.headers.get("Idempotency-Key")
        fake = self.fake
        headers: Mapping[str, str] = {}
        with fake._lock:
            scripted = next_answer(fake._queue, fake.responder, text)
            if scripted is not None and scripted.replaces_answer:
                status, body, headers = scripted.status, scripted.body, scripted.headers
                self._seen(text, status)
            else:
                status, body = fake._post_status(authorization, key, form)
                dropped = scripted is not None and scripted.accept_then_drop and status == 200
                self._seen(text, None if dropped else status)
                if dropped:
                    self.close_connection = True  # Mastodon posted it; the answer never arrives
                    return
        self._send(status, body, headers)


def _form(raw: bytes, content_type: str) -> dict[str, Any]:
    if content_type.startswith("application/json"):
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}


FakeMastodon.handler = _Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake Mastodon server on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--max-characters", type=int, default=500)
    args = parser.parse_args(argv)
    with FakeMastodon(args.host, args.port, token=args.token, max_characters=args.max_characters) as fake:
        print(fake.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
