"""A fake X API v2 on loopback: the far side of the poster's X edge, for tests and local runs.

It speaks real HTTP, so :class:`~bmsuploader.post.publishing.XPublisher` is tested
through tweepy, requests and its transport adapter exactly as in production,
with only the host changed (``base_url``). It answers ``POST /2/tweets`` the way
X does:

* 401 unless the ``Authorization`` header is OAuth 1.0a user context;
* 400 for text over 280 weighted characters (twitter-text rules);
* 403 duplicate content for text identical to a post it already accepted;
* otherwise 201 with an increasing numeric id.

Anything else can be scripted: ``fake.script(FakeX.normal(), FakeX.rate_limited(reset))``
queues answers for the next requests, in order (``normal()`` answers as above). The error bodies follow X's
problem JSON (``title``, ``detail``, ``type`` ...). :meth:`FakeX.accept_then_drop`
accepts the post and closes the connection without answering, which is what a
crash or network cut after X accepted a post looks like from our side.

Run standalone with ``python -m bmsuploader_local.fake_x --port 8765``; it prints
its base URL (use it as ``X_API_BASE_URL``), and ``GET /fake/posts`` lists the
accepted posts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

from bmsuploader.post.rendering import weighted_length
from bmsuploader_local.loopback import JsonHandler, LoopbackService, Responder, Scripted, next_answer

MAX_WEIGHTED_LENGTH = 280
FIRST_ID = 1_900_000_000_000_000_001
OAUTH_PARAMS = ("oauth_consumer_key", "oauth_token", "oauth_signature", "oauth_nonce", "oauth_timestamp")
DUPLICATE_DETAIL = "You are not allowed to create a Tweet with duplicate content."


@dataclass(frozen=True)
class SeenRequest:
    """One request the fake received, and what it answered (``None``: dropped)."""

    method: str
    path: str
    authorization: str | None
    text: str | None
    status: int | None


def _problem(
    status: int, title: str, detail: str, type_: str = "about:blank", **extra: Any
) -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": type_, "status": status, **extra}


class FakeX(LoopbackService):
    """Context manager: ``with FakeX() as fake: XPublisher(creds, base_url=fake.base_url)``."""

    thread_name = "fake-x"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._lock = threading.Lock()
        self._queue: deque[Scripted] = deque()
        self._next_id = FIRST_ID
        #: Accepted posts, oldest first: ``{"id": ..., "text": ...}``.
        self.posts: list[dict[str, str]] = []
        #: Every request received, with the status answered.
        self.requests: list[SeenRequest] = []
        #: Asked for an answer when nothing is scripted, with the post's text: a
        #: :class:`Scripted` or ``None`` (answer as X would). Lets a test run an
        #: outage window in its own (virtual) time. Called under the fake's lock:
        #: it must not call back into the fake.
        self.responder: Responder | None = None

    def close(self) -> None:
        self.stop()

    # --- scripting ------------------------------------------------------------

    def script(self, *responses: Scripted) -> None:
        """Queue answers for the next ``POST /2/tweets`` requests, in order."""
        with self._lock:
            self._queue.extend(responses)

    @staticmethod
    def rate_limited(reset_epoch: int | None, *, usage_cap: bool = False) -> Scripted:
        headers = {"x-rate-limit-limit": "100", "x-rate-limit-remaining": "0"}
        if reset_epoch is not None:
            headers["x-rate-limit-reset"] = str(reset_epoch)
        if usage_cap:
            body = {
                "title": "UsageCapExceeded",
                "detail": "Usage cap exceeded: Monthly product cap",
                "type": "https://api.twitter.com/2/problems/usage-capped",
                "period": "Monthly",
                "scope": "Product",
            }
        else:
            body = _problem(429, "Too Many Requests", "Too Many Requests")
        return Scripted(status=429, headers=headers, body=body)

    @staticmethod
    def server_error(status: int = 503) -> Scripted:
        title = {500: "Internal Server Error", 502: "Bad Gateway", 504: "Gateway Timeout"}
        text = title.get(status, "Service Unavailable")
        return Scripted(status=status, body=_problem(status, text, text))

    @staticmethod
    def unauthorized() -> Scripted:
        return Scripted(status=401, body=_problem(401, "Unauthorized", "Unauthorized"))

    @staticmethod
    def forbidden_permissions() -> Scripted:
        return Scripted(
            status=403,
            body=_problem(
                403,
                "Forbidden",
                "Your client app is not configured with the appropriate oauth1 app permissions "
                "for this endpoint.",
                "https://api.twitter.com/2/problems/oauth1-permissions",
            ),
        )

    @staticmethod
    def not_enrolled() -> Scripted:
        return Scripted(
            status=403,
            body={
                "client_id": "00000000",
                "detail": "When authenticating requests to the Twitter API v2 endpoints, you must use "
                "keys and tokens from a Twitter developer App that is attached to a Project. You can "
                "create a project via the developer portal.",
                "registration_url": "https://developer.twitter.com/en/docs/projects/overview",
                "title": "Client Forbidden",
                "required_enrollment": "Appropriate Level of API Access",
                "reason": "client-not-enrolled",
                "type": "https://api.twitter.com/2/problems/client-forbidden",
            },
        )

    @staticmethod
    def forbidden(detail: str) -> Scripted:
        return Scripted(status=403, body=_problem(403, "Forbidden", detail))

    @staticmethod
    def bad_request(detail: str) -> Scripted:
        return Scripted(status=400, body=_invalid_request(detail))

    @staticmethod
    def normal() -> Scripted:
        """Answer this request as X would: ``script(normal(), normal(), server_error())``."""
        return Scripted(status=201, normal=True)

    @staticmethod
    def accept_then_drop() -> Scripted:
        return Scripted(status=201, accept_then_drop=True)

    # --- the behaviour of X ---------------------------------------------------

    def _answer(self, authorization: str | None, body: bytes) -> tuple[int, dict[str, Any], str | None]:
        """Default answer to ``POST /2/tweets``: ``(status, json body, text)``. Holds the lock."""
        if not _is_oauth1(authorization):
            return 401, _problem(401, "Unauthorized", "Unauthorized"), None
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return 400, _invalid_request("Request body is not valid JSON."), None
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text:
            return 400, _invalid_request("The `text` field is required."), None
        if weighted_length(text) > MAX_WEIGHTED_LENGTH:
            return 400, _invalid_request("Your Tweet text is too long.", text=text), text
        if any(post["text"] == text for post in self.posts):
            return 403, _problem(403, "Forbidden", DUPLICATE_DETAIL), text
        # Posts may have been preloaded (run-local keeps them across runs): ids go on from there.
        self._next_id = max([self._next_id, *(int(p["id"]) + 1 for p in self.posts if p["id"].isdigit())])
        tweet_id = str(self._next_id)
        self._next_id += 1
        self.posts.append({"id": tweet_id, "text": text})
        return 201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}}, text


def _invalid_request(message: str, *, text: str | None = None) -> dict[str, Any]:
    return {
        "errors": [{"parameters": {"text": [text] if text is not None else []}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }


def _is_oauth1(authorization: str | None) -> bool:
    if not authorization or not authorization.startswith("OAuth "):
        return False
    present = {name for name, value in re.findall(r'(\w+)="([^"]*)"', authorization) if value}
    return all(name in present for name in OAUTH_PARAMS)


class _Handler(JsonHandler):
    server_version = "FakeX/1.0"

    @property
    def fake(self) -> FakeX:
        return cast(FakeX, self.server.service)  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        if self.path == "/fake/posts":
            with self.fake._lock:
                posts = list(self.fake.posts)
            self._send(200, {"posts": posts})
        else:
            self._send(404, _problem(404, "Not Found Error", f"no route {self.path}"))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        authorization = self.headers.get("Authorization")
        if self.path.split("?")[0] != "/2/tweets":
            self._send(404, _problem(404, "Not Found Error", f"no route {self.path}"))
            return
        fake = self.fake
        with fake._lock:
            scripted = next_answer(fake._queue, fake.responder, _text(body))
            if scripted is not None and scripted.replaces_answer:
                fake.requests.append(
                    SeenRequest("POST", self.path, authorization, _text(body), scripted.status)
                )
                status, answer, headers = scripted.status, scripted.body, dict(scripted.headers)
            else:
                status, answer, text = fake._answer(authorization, body)
                headers = {}
                dropped = scripted is not None and scripted.accept_then_drop and status == 201
                fake.requests.append(
                    SeenRequest("POST", self.path, authorization, text, None if dropped else status)
                )
                if dropped:
                    # X accepted the post; the answer never arrives.
                    self.close_connection = True
                    return
        self._send(status, answer, headers)


def _text(body: bytes) -> str | None:
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        return None
    text = payload.get("text") if isinstance(payload, dict) else None
    return text if isinstance(text, str) else None


FakeX.handler = _Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake X API v2 (POST /2/tweets) on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    with FakeX(args.host, args.port) as fake:
        print(fake.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
