"""Fetcher stage, step 1 of 3 (**fetch** -> decode -> parse): the HTTP edge.

The only module of the listing path that touches the network. :class:`PageFetcher`
wraps one ``httpx.Client`` (build it once per Lambda container; inject a
different one in tests) and adds what uploader pages need:

* conditional GET (``If-None-Match`` / ``If-Modified-Since``), so an unchanged
  listing costs a 304 and no parsing;
* a few quick retries with exponential backoff for 5xx, timeouts and
  connection errors -- old uploader hosts hiccup -- but none for 4xx, which
  will not fix itself within one run;
* a body size cap, because a misconfigured source must not exhaust the
  function's memory;
* decoding by :func:`bmsuploader.fetch.decoding.decode_page`, never by httpx's guess;
  a page where bytes were lost says so (:attr:`Page.lossy`), and the fetch
  cycle logs it with the source and counts ``LossyDecodes``.

Every failure is a :class:`~bmsuploader.contract.errors.FetchError` with a one-line
message, so the handler logs it and moves on to the next source.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bmsuploader import USER_AGENT
from bmsuploader.aws.state import Validators
from bmsuploader.contract.errors import FetchError
from bmsuploader.fetch.decoding import decode_page

#: Largest body accepted. A classic listing is tens of KB; a feed a few hundred.
MAX_BODY_BYTES = 5 * 1024 * 1024
#: Most time one fetch may take, retries included. Per-read timeouts alone do not
#: bound a site that trickles a byte a second; this does.
FETCH_DEADLINE_SECONDS = 20.0


@dataclass(frozen=True)
class Page:
    """A fetched page. ``url`` is the final URL after redirects (resolve links against it)."""

    url: str
    status: int
    not_modified: bool
    text: str
    encoding: str
    validators: Validators
    #: which evidence chose the encoding (see :mod:`bmsuploader.fetch.decoding`); a
    #: ``+replace`` suffix means some bytes did not decode and became U+FFFD
    decoded_by: str = ""

    @property
    def lossy(self) -> bool:
        return self.decoded_by.endswith("+replace")


def default_client() -> httpx.Client:
    """The client the fetcher builds once per container."""
    return httpx.Client(
        timeout=httpx.Timeout(15.0, connect=5.0),
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
    )


class _Retryable(Exception):
    """Internal: this attempt failed in a way worth another try."""


class PageFetcher:
    """GET pages with conditional requests, retries, a size cap and Japanese-aware decoding.

    Worst case per page is ``1 + retries`` attempts, each bounded by the client's
    timeouts, plus the backoff sleeps (0.5 s, 1 s with the defaults): keep the
    Lambda timeout above that times the number of pages walked.
    """

    def __init__(
        self,
        client: httpx.Client | None = None,
        *,
        retries: int = 2,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        max_body_bytes: int = MAX_BODY_BYTES,
        deadline_seconds: float = FETCH_DEADLINE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._owns_client = client is None
        self._client = client if client is not None else default_client()
        self._attempts = 1 + max(0, retries)
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._max_body_bytes = max_body_bytes
        self._deadline_seconds = deadline_seconds
        self._monotonic = monotonic

    def close(self) -> None:
        """Close the client if this fetcher created it (an injected one belongs to the caller)."""
        if self._owns_client:
            self._client.close()

    def fetch(
        self,
        url: str,
        *,
        source: str,
        validators: Validators | None = None,
        encoding: str | None = None,
        budget_seconds: float | None = None,
    ) -> Page:
        """GET ``url``. Raises :class:`FetchError` naming ``source`` on any failure.

        The whole fetch, retries included, ends within the fetcher's deadline or
        ``budget_seconds`` (what the run has left for it), whichever is sooner.
        """
        allowed = min(self._deadline_seconds, budget_seconds if budget_seconds is not None else math.inf)
        deadline = self._monotonic() + max(allowed, 0.0)
        headers = {}
        if validators is not None and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators is not None and validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified

        last_problem = "no attempt made"
        attempts = 0
        for attempt in range(self._attempts):
            if attempt:
                pause = self._backoff * 2 ** (attempt - 1)
                if self._monotonic() + pause >= deadline:
                    break
                self._sleep(pause)
            if self._monotonic() >= deadline:
                break
            attempts += 1
            try:
                return self._attempt(
                    url, source=source, headers=headers, old=validators, encoding=encoding, deadline=deadline
                )
            except _Retryable as exc:
                last_problem = str(exc)
        raise FetchError(
            source,
            f"GET {url}: {last_problem} (after {attempts} attempt{'s' if attempts != 1 else ''}, "
            f"{allowed:g} s allowed)",
        )

    def _attempt(
        self,
        url: str,
        *,
        source: str,
        headers: dict[str, str],
        old: Validators | None,
        encoding: str | None,
        deadline: float,
    ) -> Page:
        # No single wait may outlast the deadline: each timeout is capped by what is left.
        left = max(deadline - self._monotonic(), 0.001)
        configured = self._client.timeout
        timeout = httpx.Timeout(
            connect=min(configured.connect or left, left),
            read=min(configured.read or left, left),
            write=min(configured.write or left, left),
            pool=min(configured.pool or left, left),
        )
        try:
            with self._client.stream("GET", url, headers=headers, timeout=timeout) as response:
                status = response.status_code
                if status >= 500:
                    raise _Retryable(f"HTTP {status} {response.reason_phrase}")
                if status == 304:
                    # A 304 may carry refreshed validators; otherwise the old ones still hold.
                    fresh = _validators(response)
                    kept = Validators(
                        etag=fresh.etag or (old.etag if old else None),
                        last_modified=fresh.last_modified or (old.last_modified if old else None),
                    )
                    return Page(str(response.url), status, True, "", "", kept)
                if not 200 <= status < 300:
                    # 4xx will not fix itself within one run: fail now, let the next run retry.
                    raise FetchError(source, f"GET {url}: HTTP {status} {response.reason_phrase}")
                body = self._read_capped(response, url=url, source=source, deadline=deadline)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out ({type(exc).__name__})") from exc
        except httpx.UnsupportedProtocol as exc:
            raise FetchError(source, f"GET {url}: {_describe(exc)}") from exc
        except httpx.TransportError as exc:
            raise _Retryable(_describe(exc)) from exc
        except (httpx.RequestError, httpx.InvalidURL) as exc:  # too many redirects, bad gzip, bad URL
            raise FetchError(source, f"GET {url}: {_describe(exc)}") from exc

        decoded = decode_page(body, content_type=response.headers.get("content-type"), override=encoding)
        return Page(
            str(response.url),
            status,
            False,
            decoded.text,
            decoded.encoding,
            _validators(response),
            decoded.how,
        )

    def _read_capped(self, response: httpx.Response, *, url: str, source: str, deadline: float) -> bytes:
        too_big = f"GET {url}: response body exceeds {self._max_body_bytes} bytes"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body_bytes:
            raise FetchError(source, too_big)
        # Count decompressed bytes as they arrive: Content-Length can be absent or
        # describe a gzip body that inflates far beyond it.
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            if self._monotonic() > deadline:
                raise _Retryable(f"body still arriving at the deadline ({size} bytes read)")
            size += len(chunk)
            if size > self._max_body_bytes:
                raise FetchError(source, too_big)
            chunks.append(chunk)
        return b"".join(chunks)


def _validators(response: httpx.Response) -> Validators:
    return Validators(
        etag=response.headers.get("etag") or None,
        last_modified=response.headers.get("last-modified") or None,
    )


def _describe(exc: Exception) -> str:
    detail = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
