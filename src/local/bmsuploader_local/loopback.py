"""A small HTTP service on a loopback port, on a daemon thread.

The fake uploader site and the fake X are both one of these: start/stop,
context manager, ``base_url``. Request handlers reach their service as
``self.server.service``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Scripted:
    """One queued answer of a fake network. ``body`` is sent as JSON (``None``: empty body)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    #: Answer as the network would (auth, length, duplicates); lets a queue reach a later request.
    normal: bool = False
    #: Take the post as usual, then close the connection without answering.
    accept_then_drop: bool = False

    @property
    def replaces_answer(self) -> bool:
        """Answered as scripted, instead of as the network would."""
        return not (self.normal or self.accept_then_drop)


#: Asked for an answer to a fake's create call when nothing is scripted, with the post's text:
#: a :class:`Scripted`, or ``None`` to answer as the network would.
type Responder = Callable[[str | None], Scripted | None]


def next_answer(queue: deque[Scripted], responder: Responder | None, text: str | None) -> Scripted | None:
    """What a fake answers its next create call: the next scripted answer, else its responder's."""
    if queue:
        return queue.popleft()
    return responder(text) if responder is not None else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    service: Any

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a simulated crash, a dropped keep-alive connection) is
        # ordinary here; anything else is printed as usual.
        if not isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            super().handle_error(request, client_address)


class LoopbackService:
    """Base for the local stand-ins. Subclasses set ``handler`` and call ``super().__init__``."""

    handler: type[BaseHTTPRequestHandler]
    thread_name = "loopback-service"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        server = _Server(self._address, self.handler)
        server.service = self
        self._server = server
        # A short poll interval keeps stop() fast (the default makes it take 0.5 s).
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(
                f"{type(self).__name__} is not running; use it as a context manager or start()"
            )
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"


class JsonHandler(BaseHTTPRequestHandler):
    """A fake API's request handler: quiet (tests read the fake's own request log) and
    answering JSON (``None``: an empty body) with any extra headers."""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read fake.requests instead

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)
