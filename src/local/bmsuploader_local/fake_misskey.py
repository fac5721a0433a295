"""A fake Misskey server on loopback: the far side of the poster's Misskey edge, for tests
and local runs.

It speaks real HTTP, so :class:`~bmsuploader.post.networks.misskey.MisskeyPublisher` is
tested through requests exactly as in production, with only the server changed. Every
call is ``POST /api/<endpoint>`` with a JSON body carrying the token as ``i``, and errors
are ``{"error": {"message", "code", "id", "kind"}}``, as Misskey answers:

* ``notes/create`` (permission ``write:notes``): 401 ``AUTHENTICATION_FAILED`` for a wrong
  token, 403 ``PERMISSION_DENIED`` without the permission, 400 ``INVALID_PARAM`` for an
  empty text, a text over 3,000 code points or an unknown visibility, else 200
  ``{"createdNote": ...}``. There is **no idempotency**: the same request twice posts
  twice, as on Misskey, so tests prove the publisher's own check;
* ``i`` (``read:account``) and ``users/notes`` (``userId``, ``limit`` up to 100,
  ``untilId``; newest first; any token sees its own notes).

Each note also records what a naive MFM reading of its text finds live
(:func:`live_mfm`): ``**bold**``, ``$[fn ...]``, ``:emoji:``, ``<center>`` and the other
tags, ``[label](url)`` links, quotes, search boxes, mentions, hashtags, URLs... outside
``<plain>...</plain>``. Tests compare it with what the template meant to be live.

Answers to ``notes/create`` can be scripted, in order:
``fake.script(FakeMisskey.rate_limited(retry_after=60), FakeMisskey.normal())``;
:meth:`FakeMisskey.accept_then_drop` posts the note and closes the connection without
answering. When nothing is scripted, :attr:`FakeMisskey.responder` (if set) may answer
instead: an outage window in a test's own (virtual) time.

Run standalone with ``python -m bmsuploader_local.fake_misskey --port 8133``; it prints
its base URL, and ``GET /fake/posts`` lists the notes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

from bmsuploader_local.loopback import JsonHandler, LoopbackService, Responder, Scripted, next_answer

DEFAULT_TOKEN = "fake-misskey-token"  # noqa: S105 -- a fake's well-known test token
ALL_PERMISSIONS = frozenset({"write:notes", "read:account"})
USER_ID = "9fakeuser01"
USERNAME = "bmsbot"
MAX_NOTE_LENGTH = 3000
VISIBILITIES = ("public", "home", "followers", "specified")

RATE_LIMIT_EXCEEDED = {
    "message": "Rate limit exceeded. Please try again later.",
    "code": "RATE_LIMIT_EXCEEDED",
    "id": "d5826d14-3982-4d2e-8011-b9e9f02499ef",
    "kind": "client",
}
AUTHENTICATION_FAILED = {
    "message": "Authentication failed. Please ensure your token is correct.",
    "code": "AUTHENTICATION_FAILED",
    "id": "b0a7f5f8-dc2f-4171-b91f-de88ad238e14",
    "kind": "client",
}
PERMISSION_DENIED = {
    "message": "Your app does not have the necessary permissions to use this endpoint.",
    "code": "PERMISSION_DENIED",
    "id": "1370e5b7-d4eb-4566-bb1d-7748ee6a1838",
    "kind": "permission",
}
INTERNAL_ERROR = {
    "message": "Internal error occurred. Please contact us if the error persists.",
    "code": "INTERNAL_ERROR",
    "id": "5d37dbcb-891e-41ca-a3d6-e690c97775ac",
    "kind": "server",
}
NO_SUCH_ENDPOINT = {"message": "No such endpoint.", "code": "NO_SUCH_ENDPOINT", "id": "", "kind": "client"}


def invalid_param(param: str, reason: str) -> dict[str, Any]:
    return {
        "message": "Invalid param.",
        "code": "INVALID_PARAM",
        "id": "3d81ceae-475f-4600-b2a8-2bc116157532",
        "kind": "client",
        "info": {"param": param, "reason": reason},
    }


# --- a naive reading of MFM ----------------------------------------------------

_PLAIN = re.compile(r"<plain>\n?.+?\n?</plain>", re.DOTALL)
#: (name, pattern) of what mfm.js makes live; deliberately broad: a false alarm fails a
#: test loudly, a miss would let markup through.
_MFM: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("fn", re.compile(r"\$\[[a-z0-9_]+[ .]", re.IGNORECASE)),
    ("bold", re.compile(r"\*\*.+?\*\*|__[a-z0-9 ]+__", re.IGNORECASE)),
    ("big", re.compile(r"\*\*\*.+?\*\*\*")),
    ("italic", re.compile(r"(?<![a-z0-9])[*_][a-z0-9 \u3000\t]+[*_]", re.IGNORECASE)),
    ("tag", re.compile(r"<(?:b|i|s|small|center)>", re.IGNORECASE)),
    ("strike", re.compile(r"~~[^\n]+?~~")),
    ("code", re.compile(r"`[^`´\n]+`")),
    ("quote", re.compile(r"(?:^|\n)>")),
    ("math", re.compile(r"\\\(|\\\[")),
    ("emoji", re.compile(r"(?<![a-z0-9]):[a-z0-9_+-]+:(?![a-z0-9])", re.IGNORECASE)),
    ("link", re.compile(r"\??\[[^\]\n]+\]\(\s*<?https?://", re.IGNORECASE)),
    ("url", re.compile(r"<?https?://[.,a-z0-9_/:%#@$&?!~=+\-()\[\]]+", re.IGNORECASE)),
    ("mention", re.compile(r"(?<![a-z0-9])@[a-z0-9_-]+", re.IGNORECASE)),
    (
        "hashtag",
        re.compile(
            r"(?<![a-z0-9])#[^\s.,!?'\"#:/\[\]【】()「」（）<>]*[^\s\d.,!?'\"#:/\[\]【】()「」（）<>]"
        ),
    ),
    ("search", re.compile(r"(?:^|\n)[^\n]+[ \u3000\t](?:\[?(?:検索|search)\]?)(?:\n|$)", re.IGNORECASE)),
)


def live_mfm(text: str) -> list[tuple[str, str]]:
    """``(kind, text)`` of every MFM construct a naive reading finds outside ``<plain>``."""
    outside = _PLAIN.sub(" ", text)
    return [(name, match.group()) for name, pattern in _MFM for match in pattern.finditer(outside)]


# --- the fake ------------------------------------------------------------------


@dataclass(frozen=True)
class SeenRequest:
    """One request the fake received, and what it answered (``None``: dropped)."""

    endpoint: str
    token: str | None
    text: str | None
    status: int | None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class FakeMisskey(LoopbackService):
    """Context manager: ``with FakeMisskey() as fake: MisskeyPublisher(fake.base_url, token)``."""

    thread_name = "fake-misskey"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str = DEFAULT_TOKEN,
        permissions: frozenset[str] = ALL_PERMISSIONS,
    ) -> None:
        super().__init__(host, port)
        self.token = token
        self.permissions = permissions
        #: The fake's clock for note times. Tests may replace it.
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._lock = threading.Lock()
        self._queue: deque[Scripted] = deque()
        self._next = 1
        #: Notes, oldest first, as the API shows them, plus ``mfm``: :func:`live_mfm` of the text.
        self.notes: list[dict[str, Any]] = []
        #: Every request received, with the status answered.
        self.requests: list[SeenRequest] = []
        #: Asked for an answer to ``notes/create`` when nothing is scripted, with the note's
        #: text: a :class:`Scripted` or ``None`` (answer as Misskey would). Called under the
        #: fake's lock: it must not call back into the fake.
        self.responder: Responder | None = None

    # --- scripting ------------------------------------------------------------

    def script(self, *responses: Scripted) -> None:
        """Queue answers for the next ``notes/create`` requests, in order."""
        with self._lock:
            self._queue.extend(responses)

    @staticmethod
    def rate_limited(
        *, retry_after: int | None = None, reset: float | None = None, reset_ms: int | None = None
    ) -> Scripted:
        headers = {"X-RateLimit-Remaining": "0"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if reset is not None:
            headers["X-RateLimit-Reset"] = f"{reset:.3f}"
        body: dict[str, Any] = dict(RATE_LIMIT_EXCEEDED)
        if reset_ms is not None:
            body["info"] = {"resetMs": reset_ms, "fullResetMs": reset_ms * 2}
        return Scripted(status=429, headers=headers, body={"error": body})

    @staticmethod
    def server_error(status: int = 500) -> Scripted:
        return Scripted(status=status, body={"error": INTERNAL_ERROR} if status == 500 else None)

    @staticmethod
    def unauthorized() -> Scripted:
        return Scripted(status=401, body={"error": AUTHENTICATION_FAILED})

    @staticmethod
    def error(status: int, code: str, message: str) -> Scripted:
        return Scripted(
            status=status, body={"error": {"message": message, "code": code, "id": "", "kind": "client"}}
        )

    @staticmethod
    def normal() -> Scripted:
        return Scripted(status=200, normal=True)

    @staticmethod
    def accept_then_drop() -> Scripted:
        return Scripted(status=200, accept_then_drop=True)

    # --- the state --------------------------------------------------------------

    def add_note(self, text: str, *, created_at: datetime | None = None, visibility: str = "public") -> str:
        """Put a note on the account (one posted earlier, by us or by hand); its id."""
        with self._lock:
            return str(self._create(text, visibility, created_at or self.now())["id"])

    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(note) for note in self.notes]

    def _create(self, text: str, visibility: str, created_at: datetime) -> dict[str, Any]:
        """Holds the lock."""
        # Sortable ids, later ones greater, as Misskey's aid/aidx are.
        note_id = f"9{self._next:011d}"
        self._next += 1
        stored = text.strip()  # Misskey trims the text
        note = {
            "id": note_id,
            "createdAt": _iso(created_at),
            "userId": USER_ID,
            "user": {"id": USER_ID, "username": USERNAME, "host": None},
            "text": stored,
            "cw": None,
            "visibility": visibility,
            "renoteId": None,
            "replyId": None,
            "mfm": live_mfm(stored),
        }
        self.notes.append(note)
        return note

    @staticmethod
    def shown(note: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in note.items() if k != "mfm"}

    # --- the behaviour of Misskey ------------------------------------------------

    def _refused(self, token: Any, permission: str | None) -> tuple[int, Any] | None:
        """``None`` if the call may go on. Holds the lock."""
        if token != self.token:
            return 401, {"error": AUTHENTICATION_FAILED}
        if permission is not None and permission not in self.permissions:
            return 403, {"error": PERMISSION_DENIED}
        return None

    def _notes_create(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        """Default answer to ``notes/create``. Holds the lock."""
        refused = self._refused(body.get("i"), "write:notes")
        if refused:
            return refused
        text = body.get("text")
        visibility = body.get("visibility", "public")
        if not isinstance(text, str) or not text:
            return 400, {"error": invalid_param("text", "must NOT have fewer than 1 characters")}
        if len(text) > MAX_NOTE_LENGTH:  # ajv counts code points
            return 400, {
                "error": invalid_param("text", f"must NOT have more than {MAX_NOTE_LENGTH} characters")
            }
        if visibility not in VISIBILITIES:
            return 400, {"error": invalid_param("visibility", "must be equal to one of the allowed values")}
        return 200, {"createdNote": self.shown(self._create(text, visibility, self.now()))}

    def _users_notes(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        token = body.get("i")
        if token is not None:
            refused = self._refused(token, None)
            if refused:
                return refused
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            return 400, {"error": invalid_param("limit", "must be <= 100")}
        if body.get("userId") != USER_ID:
            return 400, {
                "error": {"message": "No such user.", "code": "NO_SUCH_USER", "id": "", "kind": "client"}
            }
        visible = VISIBILITIES if token is not None else ("public", "home")
        found = [n for n in reversed(self.notes) if n["visibility"] in visible]
        if isinstance(body.get("untilId"), str):
            found = [n for n in found if n["id"] < body["untilId"]]
        return 200, [self.shown(n) for n in found[:limit]]

    def _answer(self, endpoint: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """Every endpoint but ``notes/create``. Holds the lock."""
        if endpoint == "i":
            refused = self._refused(body.get("i"), "read:account")
            return refused or (200, {"id": USER_ID, "username": USERNAME, "host": None})
        if endpoint == "users/notes":
            return self._users_notes(body)
        return 404, {"error": NO_SUCH_ENDPOINT}


class _Handler(JsonHandler):
    server_version = "FakeMisskey/1.0"

    @property
    def fake(self) -> FakeMisskey:
        return cast(FakeMisskey, self.server.service)  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/fake/posts":
            self._send(200, {"posts": self.fake.posts()})
        else:
            self._send(404, {"error": NO_SUCH_ENDPOINT})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        if not path.startswith("/api/"):
            self._send(404, {"error": NO_SUCH_ENDPOINT})
            return
        endpoint = path[len("/api/") :]
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send(400, {"error": invalid_param("body", "must be a JSON object")})
            return
        token = body.get("i") if isinstance(body.get("i"), str) else None
        text = body.get("text") if isinstance(body.get("text"), str) else None
        fake = self.fake
        headers: Mapping[str, str] = {}
        with fake._lock:
            if endpoint != "notes/create":
                status, answer = fake._answer(endpoint, body)
                fake.requests.append(SeenRequest(endpoint, token, None, status))
            else:
                scripted = next_answer(fake._queue, fake.responder, text)
                if scripted is not None and scripted.replaces_answer:
                    status, answer, headers = scripted.status, scripted.body, scripted.headers
                    fake.requests.append(SeenRequest(endpoint, token, text, status))
                else:
                    status, answer = fake._notes_create(body)
                    dropped = scripted is not None and scripted.accept_then_drop and status == 200
                    fake.requests.append(SeenRequest(endpoint, token, text, None if dropped else status))
                    if dropped:
                        self.close_connection = True  # Misskey created the note; the answer never arrives
                        return
        self._send(status, answer, headers)


FakeMisskey.handler = _Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake Misskey server on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    args = parser.parse_args(argv)
    with FakeMisskey(args.host, args.port, token=args.token) as fake:
        print(fake.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
