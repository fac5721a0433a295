"""A fake Bluesky PDS on loopback: the far side of the poster's Bluesky edge, for tests and local runs.

It speaks real HTTP and XRPC, so :class:`~bmsuploader.post.networks.bluesky.BlueskyPublisher`
is tested through ``requests`` exactly as in production, with only the server changed.
It answers the four calls the publisher makes the way a PDS does:

* ``com.atproto.server.createSession`` -- the account's handle (or DID) and app password
  give an access and a refresh token; anything else is 401 ``AuthenticationRequired``.
  Every call is counted (:attr:`FakeBluesky.create_session_calls`): a real account may
  log in only a few hundred times a day.
* ``com.atproto.server.refreshSession`` -- a refresh token (never an access token) gives
  a new pair and is revoked (rotation); a revoked or unknown one is 400 ``ExpiredToken`` /
  ``InvalidToken``.
* ``com.atproto.repo.createRecord`` -- needs a live access token (an expired one is 400
  ``ExpiredToken``; tokens expire after ``access_ttl`` seconds, or at once with
  :meth:`FakeBluesky.expire_access_tokens`). It validates what the publisher must get
  right, stricter than a PDS where a PDS would accept a broken post: the record key is a
  TID, the text is at most 300 graphemes and 3,000 UTF-8 bytes (else 400
  ``InvalidRequest``), each facet's byte range lies inside the text *on UTF-8 character
  boundaries* and links an http(s) URI. A record key it already holds answers **500**,
  as a PDS does today.
* ``com.atproto.repo.getRecord`` -- the record, or 400 ``RecordNotFound``.

Anything else can be scripted, per method: ``fake.script(FakeBluesky.rate_limited(reset))``
queues answers for the next createRecord requests, in order (``method=`` another NSID
for the other calls); :meth:`FakeBluesky.normal` answers as above;
:meth:`FakeBluesky.accept_then_drop` accepts the post and closes the connection without
answering (a crash or a network cut after the PDS took the post). When nothing is scripted
for createRecord, :attr:`FakeBluesky.responder` (if set) may answer instead: an outage
window in a test's own (virtual) time.

Run standalone with ``python -m bmsuploader_local.fake_bluesky --port 8131``; it prints
its base URL (use it as ``{"bluesky": URL}`` in ``NETWORK_BASE_URLS``), and
``GET /fake/posts`` lists the accepted posts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from bmsuploader.post.networks.bluesky import (
    COLLECTION,
    CREATE_RECORD,
    CREATE_SESSION,
    GET_RECORD,
    MAX_BYTES,
    MAX_GRAPHEMES,
    REFRESH_SESSION,
    TID_PATTERN,
    encode_tid,
    grapheme_count,
)
from bmsuploader_local.loopback import JsonHandler, LoopbackService, Responder, Scripted, next_answer

LINK_FEATURE = "app.bsky.richtext.facet#link"
DEFAULT_IDENTIFIER = "bmsuploader.test"
#: the shape of a real app password (xxxx-xxxx-xxxx-xxxx); a fake account's, no secret
DEFAULT_APP_PASSWORD = "fake-appp-assw-ord0"  # noqa: S105
DEFAULT_DID = "did:plc:fakebmsuploader0000000000"


@dataclass(frozen=True)
class SeenRequest:
    """One XRPC request the fake received, and what it answered (``None``: dropped)."""

    method: str  # the NSID
    #: the Authorization it carried: "access", "refresh", "expired", "unknown" or None
    token: str | None
    status: int | None
    rkey: str | None = None


def _xrpc_error(error: str, message: str) -> dict[str, str]:
    return {"error": error, "message": message}


def _on_boundary(raw: bytes, index: int) -> bool:
    """``index`` starts a UTF-8 character (or is the end): not a continuation byte."""
    return index == len(raw) or (0 <= index < len(raw) and raw[index] & 0xC0 != 0x80)


class FakeBluesky(LoopbackService):
    """Context manager: ``with FakeBluesky() as fake: ... base_url=fake.base_url``."""

    thread_name = "fake-bluesky"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        identifier: str = DEFAULT_IDENTIFIER,
        app_password: str = DEFAULT_APP_PASSWORD,
        did: str = DEFAULT_DID,
        access_ttl: float = 7200.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host, port)
        self.handle = identifier
        self.app_password = app_password
        self.did = did
        self.access_ttl = access_ttl
        #: what token lifetimes are measured on (the fault test gives its virtual clock)
        self.clock = clock
        self._lock = threading.Lock()
        self._queues: defaultdict[str, deque[Scripted]] = defaultdict(deque)
        self._tokens = itertools.count(1)
        self._access: dict[str, float] = {}  # token -> when it expires (clock)
        self._refresh: set[str] = set()
        self._records: dict[str, dict[str, Any]] = {}  # rkey -> the stored record
        #: Every XRPC request received, with the status answered.
        self.requests: list[SeenRequest] = []
        self.create_session_calls = 0
        self.refresh_session_calls = 0
        #: Asked for an answer to createRecord when nothing is scripted, with the record's text:
        #: a :class:`Scripted` or ``None`` (answer as a PDS would). Lets a test run an outage
        #: window in its own (virtual) time. Called under the fake's lock.
        self.responder: Responder | None = None

    # --- what tests read and set ----------------------------------------------

    @property
    def posts(self) -> list[dict[str, Any]]:
        """Accepted posts, oldest first: ``{"uri", "rkey", "cid", "text", "record"}``."""
        with self._lock:
            return [self._post(rkey) for rkey in self._records]

    def calls(self, method: str) -> list[SeenRequest]:
        with self._lock:
            return [seen for seen in self.requests if seen.method == method]

    def expire_access_tokens(self) -> None:
        """Every access token handed out so far is expired (refresh tokens stay valid)."""
        with self._lock:
            self._access = dict.fromkeys(self._access, float("-inf"))

    def revoke_sessions(self) -> None:
        """Every token handed out so far is revoked (an app password deleted, a takedown lifted)."""
        with self._lock:
            self._access.clear()
            self._refresh.clear()

    def preload_post(self, rkey: str, text: str) -> None:
        """A post already in the repo (from an earlier run, or another entry's)."""
        with self._lock:
            self._records[rkey] = {"$type": COLLECTION, "text": text, "createdAt": "2026-01-01T00:00:00.000Z"}

    def script(self, *responses: Scripted, method: str = CREATE_RECORD) -> None:
        """Queue answers for the next requests of ``method`` (createRecord by default), in order."""
        with self._lock:
            self._queues[method].extend(responses)

    # --- scripted answers -------------------------------------------------------

    @staticmethod
    def normal() -> Scripted:
        return Scripted(status=200, normal=True)

    @staticmethod
    def accept_then_drop() -> Scripted:
        return Scripted(status=200, accept_then_drop=True)

    @staticmethod
    def rate_limited(reset_epoch: int | None, *, retry_after: int | None = None) -> Scripted:
        headers = {"RateLimit-Limit": "5000", "RateLimit-Remaining": "0", "RateLimit-Policy": "5000;w=3600"}
        if reset_epoch is not None:
            headers["RateLimit-Reset"] = str(reset_epoch)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return Scripted(
            status=429, headers=headers, body=_xrpc_error("RateLimitExceeded", "Rate Limit Exceeded")
        )

    @staticmethod
    def server_error(status: int = 500) -> Scripted:
        names = {500: "InternalServerError", 502: "UpstreamFailure", 503: "NotEnoughResources"}
        return Scripted(
            status=status, body=_xrpc_error(names.get(status, "InternalServerError"), "Internal Server Error")
        )

    @staticmethod
    def bad_request(message: str, error: str = "InvalidRequest") -> Scripted:
        return Scripted(status=400, body=_xrpc_error(error, message))

    @staticmethod
    def expired_token() -> Scripted:
        return Scripted(status=400, body=_xrpc_error("ExpiredToken", "Token has expired"))

    @staticmethod
    def unauthorized(
        error: str = "AuthenticationRequired", message: str = "Authentication Required"
    ) -> Scripted:
        return Scripted(status=401, body=_xrpc_error(error, message))

    # --- the behaviour of a PDS (each holds the lock) -----------------------------

    def _new_session(self) -> dict[str, Any]:
        access, refresh = f"access-{next(self._tokens)}", f"refresh-{next(self._tokens)}"
        self._access[access] = self.clock() + self.access_ttl
        self._refresh.add(refresh)
        return {
            "accessJwt": access,
            "refreshJwt": refresh,
            "handle": self.handle,
            "did": self.did,
            "active": True,
        }

    def _token_kind(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token in self._access:
            return "access" if self._access[token] > self.clock() else "expired"
        return "refresh" if token in self._refresh else "unknown"

    def _create_session(self, body: Any) -> tuple[int, Any]:
        self.create_session_calls += 1
        identifier = str(body.get("identifier", "")) if isinstance(body, dict) else ""
        password = body.get("password") if isinstance(body, dict) else None
        if (
            identifier.lower().removeprefix("@") not in (self.handle.lower(), self.did)
            or password != self.app_password
        ):
            return 401, _xrpc_error("AuthenticationRequired", "Invalid identifier or password")
        return 200, self._new_session()

    def _refresh_session(self, authorization: str | None) -> tuple[int, Any]:
        self.refresh_session_calls += 1
        kind = self._token_kind(authorization)
        if kind is None:
            return 401, _xrpc_error("AuthMissing", "Authentication Required")
        if kind != "refresh":
            return 400, _xrpc_error(
                "InvalidToken", "Invalid token type" if kind == "access" else "Token could not be verified"
            )
        assert authorization is not None
        self._refresh.discard(authorization.removeprefix("Bearer ").strip())  # rotation
        return 200, self._new_session()

    def _access_refused(self, kind: str | None) -> tuple[int, Any] | None:
        if kind == "access":
            return None
        if kind is None:
            return 401, _xrpc_error("AuthMissing", "Authentication Required")
        if kind == "expired":
            return 400, _xrpc_error("ExpiredToken", "Token has expired")
        return 400, _xrpc_error("InvalidToken", "Token could not be verified")

    def _create_record(self, kind: str | None, body: Any) -> tuple[int, Any]:  # noqa: PLR0911
        if (refused := self._access_refused(kind)) is not None:
            return refused
        if not isinstance(body, dict):
            return 400, _xrpc_error("InvalidRequest", "Request body must be an object")
        if body.get("repo") not in (self.did, self.handle):
            return 400, _xrpc_error("InvalidRequest", f"Could not find repo: {body.get('repo')}")
        if body.get("collection") != COLLECTION:
            return 400, _xrpc_error("InvalidRequest", f"Unsupported collection: {body.get('collection')}")
        rkey = body.get("rkey")
        if rkey is None:
            rkey = encode_tid(int(time.time() * 1_000_000), 0)
        if not isinstance(rkey, str) or not TID_PATTERN.match(rkey):
            return 400, _xrpc_error("InvalidRequest", f"Invalid record key (must be a TID): {rkey!r}")
        problem = _record_problem(body.get("record"))
        if problem:
            return 400, _xrpc_error("InvalidRequest", problem)
        if rkey in self._records:
            # A PDS's repository refuses a key it holds with an unhandled error.
            return 500, _xrpc_error("InternalServerError", "Internal Server Error")
        self._records[rkey] = body["record"]
        post = self._post(rkey)
        return 200, {
            "uri": post["uri"],
            "cid": post["cid"],
            "commit": {"cid": _cid(f"commit-{rkey}"), "rev": rkey},
            "validationStatus": "valid",
        }

    def _get_record(self, kind: str | None, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        if kind is not None and kind != "access":  # optional auth, but a bad token is refused
            refused = self._access_refused(kind)
            assert refused is not None
            return refused
        params = {name: values[0] for name, values in query.items() if values}
        for name in ("repo", "collection", "rkey"):
            if name not in params:
                return 400, _xrpc_error("InvalidRequest", f'Params must have the property "{name}"')
        rkey = params["rkey"]
        if (
            params["repo"] not in (self.did, self.handle)
            or params["collection"] != COLLECTION
            or rkey not in self._records
        ):
            uri = f"at://{params['repo']}/{params['collection']}/{rkey}"
            return 400, _xrpc_error("RecordNotFound", f"Could not locate record: {uri}")
        post = self._post(rkey)
        return 200, {"uri": post["uri"], "cid": post["cid"], "value": post["record"]}

    def _post(self, rkey: str) -> dict[str, Any]:
        record = self._records[rkey]
        return {
            "uri": f"at://{self.did}/{COLLECTION}/{rkey}",
            "rkey": rkey,
            "cid": _cid(json.dumps(record, sort_keys=True)),
            "text": record.get("text"),
            "record": record,
        }


def _cid(content: str) -> str:
    return "bafyrei" + hashlib.sha256(content.encode()).hexdigest()[:52]


def _record_problem(record: Any) -> str | None:  # noqa: PLR0911 (one return per check)
    """Why a PDS (or this stricter fake) refuses the record, or ``None``."""
    if not isinstance(record, dict) or record.get("$type") != COLLECTION:
        return f"Invalid app.bsky.feed.post record: $type must be {COLLECTION}"
    text = record.get("text")
    if not isinstance(text, str):
        return "Invalid app.bsky.feed.post record: Record/text must be a string"
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_BYTES:
        return (
            f"Invalid app.bsky.feed.post record: Record/text must not be longer than {MAX_BYTES} characters"
        )
    if grapheme_count(text) > MAX_GRAPHEMES:
        return (
            "Invalid app.bsky.feed.post record: Record/text must not be longer than "
            f"{MAX_GRAPHEMES} graphemes"
        )
    created = record.get("createdAt")
    try:
        if not isinstance(created, str) or datetime.fromisoformat(created).tzinfo is None:
            raise ValueError(created)
    except ValueError:
        return "Invalid app.bsky.feed.post record: Record/createdAt must be an valid atproto datetime"
    langs = record.get("langs", [])
    if not isinstance(langs, list) or len(langs) > 3 or not all(isinstance(lang, str) for lang in langs):
        return "Invalid app.bsky.feed.post record: Record/langs must be up to 3 language tags"
    for number, facet in enumerate(record.get("facets", [])):
        if problem := _facet_problem(facet, raw):
            return f"Invalid app.bsky.feed.post record: Record/facets/{number} {problem}"
    return None


def _facet_problem(facet: Any, raw: bytes) -> str | None:
    index = facet.get("index") if isinstance(facet, dict) else None
    start = index.get("byteStart") if isinstance(index, dict) else None
    end = index.get("byteEnd") if isinstance(index, dict) else None
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start < end <= len(raw):
        return f"index must be a byte range inside the text's {len(raw)} bytes: {index}"
    if not (_on_boundary(raw, start) and _on_boundary(raw, end)):
        return f"index {start}..{end} splits a UTF-8 character"
    features = facet.get("features")
    if not isinstance(features, list) or not features:
        return "must have features"
    for feature in features:
        if not isinstance(feature, dict) or feature.get("$type") != LINK_FEATURE:
            return f"feature must be a {LINK_FEATURE} (this fake knows links only)"
        uri = feature.get("uri")
        if (
            not isinstance(uri, str)
            or not uri.startswith(("http://", "https://"))
            or any(c.isspace() for c in uri)
        ):
            return f"link uri must be an http(s) URI: {uri!r}"
    return None


class _Handler(JsonHandler):
    server_version = "FakeBluesky/1.0"
    protocol_version = "HTTP/1.1"  # keep-alive, as a real PDS behind a proxy

    @property
    def fake(self) -> FakeBluesky:
        return cast(FakeBluesky, self.server.service)  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/fake/posts":
            self._send(200, {"posts": self.fake.posts})
            return
        self._xrpc(parts.path.removeprefix("/xrpc/"), parse_qs(parts.query), None)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, _xrpc_error("InvalidRequest", "Request body is not valid JSON"))
            return
        self._xrpc(urlsplit(self.path).path.removeprefix("/xrpc/"), {}, body)

    def _xrpc(self, method: str, query: Mapping[str, list[str]], body: Any) -> None:
        fake = self.fake
        authorization = self.headers.get("Authorization")
        headers: dict[str, str] = {}
        with fake._lock:
            kind = fake._token_kind(authorization)
            sent_key = body.get("rkey") if isinstance(body, dict) else None
            rkey = sent_key if isinstance(sent_key, str) else next(iter(query.get("rkey", [])), None)
            queue = fake._queues[method]
            responder = fake.responder if method == CREATE_RECORD else None  # outages hit posting only
            scripted = next_answer(queue, responder, _record_text(body))
            if scripted is not None and scripted.replaces_answer:
                status, answer, headers = scripted.status, scripted.body, dict(scripted.headers)
            elif method == CREATE_SESSION:
                status, answer = fake._create_session(body)
            elif method == REFRESH_SESSION:
                status, answer = fake._refresh_session(authorization)
            elif method == CREATE_RECORD:
                status, answer = fake._create_record(kind, body)
            elif method == GET_RECORD:
                status, answer = fake._get_record(kind, query)
            else:
                status, answer = 501, _xrpc_error("MethodNotImplemented", "Method Not Implemented")
            dropped = scripted is not None and scripted.accept_then_drop and status == 200
            fake.requests.append(SeenRequest(method, kind, None if dropped else status, rkey))
        if dropped:
            # The PDS took the post; its answer never arrives.
            self.close_connection = True
            return
        self._send(status, answer, headers)


def _record_text(body: Any) -> str | None:
    record = body.get("record") if isinstance(body, dict) else None
    text = record.get("text") if isinstance(record, dict) else None
    return text if isinstance(text, str) else None


FakeBluesky.handler = _Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run a fake Bluesky PDS (sessions, createRecord, getRecord)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--identifier", default=DEFAULT_IDENTIFIER, help="the account's handle")
    parser.add_argument("--app-password", default=DEFAULT_APP_PASSWORD)
    parser.add_argument("--access-ttl", type=float, default=7200.0, help="seconds an access token lives")
    args = parser.parse_args(argv)
    with FakeBluesky(
        args.host,
        args.port,
        identifier=args.identifier,
        app_password=args.app_password,
        access_ttl=args.access_ttl,
    ) as fake:
        print(fake.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
