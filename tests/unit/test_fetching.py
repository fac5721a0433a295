"""PageFetcher over real loopback HTTP: the fake uploader, or a tiny scripted server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bmsuploader import USER_AGENT
from bmsuploader.contract.errors import FetchError
from bmsuploader.fetch.fetching import PageFetcher, Validators, default_client
from bmsuploader_local.uploader_site import UploaderSite

Respond = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def site() -> Iterator[UploaderSite]:
    with UploaderSite.with_sample_uploads(5) as running:
        yield running


@pytest.fixture
def fetcher() -> Iterator[PageFetcher]:
    sleeps: list[float] = []
    pages = PageFetcher(sleep=sleeps.append)
    pages.sleeps = sleeps  # type: ignore[attr-defined]
    yield pages
    pages.close()


class TinyServer:
    """A loopback server whose every GET is answered by ``respond``; it records request headers."""

    def __init__(self, respond: Respond) -> None:
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.headers.append(dict(self.headers.items()))
                respond(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/page"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Respond], TinyServer]]:
    servers: list[TinyServer] = []

    def start(respond: Respond) -> TinyServer:
        servers.append(TinyServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Respond:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


# --- the fake uploader ------------------------------------------------------------


def test_listing_is_fetched_decoded_and_its_validators_captured(
    site: UploaderSite, fetcher: PageFetcher
) -> None:
    page = fetcher.fetch(site.listing_url, source="sample")

    assert (page.status, page.not_modified, page.url) == (200, False, site.listing_url)
    assert page.encoding == "cp932"  # declared only in <meta>: the header says just text/html
    assert "㈱ﾋﾞｰﾏﾆ商事" in page.text and "髙橋のテーマ" in page.text
    assert page.validators.etag and page.validators.etag.startswith('"')
    assert page.validators.last_modified and page.validators.last_modified.endswith("GMT")


def test_conditional_get_answers_not_modified(site: UploaderSite, fetcher: PageFetcher) -> None:
    first = fetcher.fetch(site.listing_url, source="sample")

    again = fetcher.fetch(site.listing_url, source="sample", validators=first.validators)

    assert (again.status, again.not_modified, again.text) == (304, True, "")
    assert again.validators == first.validators


def test_a_new_upload_changes_the_page_behind_old_validators(
    site: UploaderSite, fetcher: PageFetcher
) -> None:
    first = fetcher.fetch(site.listing_url, source="sample")
    site.add_upload("★7 新曲 [ANOTHER]")

    again = fetcher.fetch(site.listing_url, source="sample", validators=first.validators)

    assert (again.status, again.not_modified) == (200, False)
    assert "★7 新曲 [ANOTHER]" in again.text
    assert again.validators != first.validators


def test_last_modified_alone_is_sent_as_if_modified_since(site: UploaderSite, fetcher: PageFetcher) -> None:
    first = fetcher.fetch(site.feed_url, source="sample")
    assert first.validators.last_modified is not None

    again = fetcher.fetch(
        site.feed_url, source="sample", validators=Validators(last_modified=first.validators.last_modified)
    )

    assert again.not_modified
    assert again.validators.last_modified == first.validators.last_modified


def test_server_errors_are_retried_with_backoff(site: UploaderSite, fetcher: PageFetcher) -> None:
    site.fail_next(2, status=503)

    page = fetcher.fetch(site.listing_url, source="sample")

    assert page.status == 200
    assert site.requests == ["/up/upload.cgi"] * 3
    assert fetcher.sleeps == [0.5, 1.0]  # type: ignore[attr-defined]


def test_persistent_server_errors_raise_after_the_last_attempt(site: UploaderSite) -> None:
    site.fail_next(5)
    pages = PageFetcher(retries=1, sleep=lambda _: None)

    with pytest.raises(FetchError) as caught:
        pages.fetch(site.listing_url, source="sample")

    assert str(caught.value) == (
        f"source 'sample': GET {site.listing_url}: HTTP 500 Internal Server Error "
        "(after 2 attempts, 20 s allowed)"
    )
    assert len(site.requests) == 2
    pages.close()


def test_not_found_is_not_retried(site: UploaderSite, fetcher: PageFetcher) -> None:
    url = f"{site.base_url}/up/old.cgi"

    with pytest.raises(FetchError, match=r"^source 'sample': GET .*/up/old\.cgi: HTTP 404 Not Found$"):
        fetcher.fetch(url, source="sample")

    assert len(site.requests) == 1


# --- scripted servers -------------------------------------------------------------


def test_user_agent_and_conditional_headers_are_sent(serve: Callable[[Respond], TinyServer]) -> None:
    server = serve(reply(304))
    pages = PageFetcher(sleep=lambda _: None)

    pages.fetch(
        server.url,
        source="s",
        validators=Validators(etag='"abc"', last_modified="Thu, 01 Jan 2026 00:00:00 GMT"),
    )

    sent = server.headers[0]
    assert sent["User-Agent"] == USER_AGENT
    assert sent["If-None-Match"] == '"abc"'
    assert sent["If-Modified-Since"] == "Thu, 01 Jan 2026 00:00:00 GMT"
    pages.close()


def test_a_304_with_a_fresh_etag_updates_only_that_validator(serve: Callable[[Respond], TinyServer]) -> None:
    server = serve(reply(304, headers={"ETag": '"new"'}))
    pages = PageFetcher()

    page = pages.fetch(server.url, source="s", validators=Validators(etag='"old"', last_modified="yesterday"))

    assert page.validators == Validators(etag='"new"', last_modified="yesterday")
    pages.close()


def test_timeout_is_retried_then_raised(serve: Callable[[Respond], TinyServer]) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(0.5)
        reply(200, b"late")(handler)

    server = serve(slow)
    client = httpx.Client(timeout=0.1)
    pages = PageFetcher(client, retries=1, sleep=lambda _: None)

    with pytest.raises(
        FetchError, match=r"GET .*/page: timed out \(ReadTimeout\) \(after 2 attempts, 20 s allowed\)"
    ):
        pages.fetch(server.url, source="s")

    assert len(server.headers) == 2
    client.close()


def test_connection_refused_is_a_fetch_error() -> None:
    # Bind and close a port so nothing listens there.
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()
    pages = PageFetcher(retries=0)

    with pytest.raises(FetchError, match=r"ConnectError"):
        pages.fetch(f"http://127.0.0.1:{port}/", source="s")
    pages.close()


def test_http_charset_header_reaches_the_decoder(serve: Callable[[Respond], TinyServer]) -> None:
    body = "<p>▼1 はじまりの唄 ①</p>".encode("euc_jis_2004")
    server = serve(reply(200, body, {"Content-Type": "text/html; charset=EUC-JP"}))
    pages = PageFetcher()

    page = pages.fetch(server.url, source="s")

    assert (page.encoding, page.text) == ("euc_jis_2004", "<p>▼1 はじまりの唄 ①</p>")
    pages.close()


def test_source_encoding_override_wins(serve: Callable[[Respond], TinyServer]) -> None:
    body = "<p>▼1 はじまりの唄</p>".encode("euc_jis_2004")
    server = serve(reply(200, body, {"Content-Type": "text/html; charset=Shift_JIS"}))
    pages = PageFetcher()

    page = pages.fetch(server.url, source="s", encoding="euc-jp")

    assert (page.encoding, page.text) == ("euc_jis_2004", "<p>▼1 はじまりの唄</p>")
    pages.close()


@pytest.mark.parametrize("declare_length", [True, False])
def test_oversized_body_is_refused(serve: Callable[[Respond], TinyServer], declare_length: bool) -> None:
    def big(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        if declare_length:
            handler.send_header("Content-Length", "4096")
        handler.end_headers()
        handler.wfile.write(b"x" * 4096)

    server = serve(big)
    pages = PageFetcher(max_body_bytes=1000)

    with pytest.raises(FetchError, match=r"response body exceeds 1000 bytes"):
        pages.fetch(server.url, source="s")
    pages.close()


def test_redirects_are_followed_and_the_final_url_reported(serve: Callable[[Respond], TinyServer]) -> None:
    target = serve(reply(200, b"<p>moved</p>"))
    origin = serve(reply(301, headers={"Location": target.url + "?from=old"}))
    pages = PageFetcher()

    page = pages.fetch(origin.url, source="s")

    assert (page.url, page.text) == (target.url + "?from=old", "<p>moved</p>")
    pages.close()


def test_default_client_settings() -> None:
    client = default_client()

    assert client.timeout == httpx.Timeout(15.0, connect=5.0)
    assert client.follow_redirects is True
    assert client.headers["User-Agent"] == USER_AGENT
    client.close()


def test_close_leaves_an_injected_client_open(serve: Callable[[Respond], TinyServer]) -> None:
    server = serve(reply(200, b"ok"))
    client = httpx.Client()

    PageFetcher(client).close()

    assert client.get(server.url).text == "ok"
    client.close()


# --- the fake uploader, fetched and parsed ------------------------------------------


def test_fake_uploader_pages_list_older_uploads_newest_first(fetcher: PageFetcher) -> None:
    from bmsuploader.config.sources import load_sources
    from bmsuploader.fetch.parsing import parse_listing
    from bmsuploader_local.run import SAMPLE_SOURCES

    source = load_sources(SAMPLE_SOURCES).get("sample-uploader")
    with UploaderSite.with_sample_uploads(25, rows_per_page=10) as site:
        ids = []
        for page_number in (1, 2, 3):
            suffix = "" if page_number == 1 else f"?page={page_number}"
            page = fetcher.fetch(site.listing_url + suffix, source=source.name)
            ids.append([e.entry_id for e in parse_listing(source, page.text, page_url=page.url)])

    assert ids[0] == [f"{n:05d}" for n in range(25, 15, -1)]
    assert ids[1] == [f"{n:05d}" for n in range(15, 5, -1)]
    assert ids[2] == [f"{n:05d}" for n in range(5, 0, -1)]


def test_fake_uploader_maintenance_page_is_a_loud_parse_error(
    site: UploaderSite, fetcher: PageFetcher
) -> None:
    from bmsuploader.config.sources import load_sources
    from bmsuploader.contract.errors import SourceFormatError
    from bmsuploader.fetch.parsing import parse_listing
    from bmsuploader_local.run import SAMPLE_SOURCES

    source = load_sources(SAMPLE_SOURCES).get("sample-uploader")
    site.break_next()

    broken = fetcher.fetch(site.listing_url, source=source.name)
    healthy = fetcher.fetch(site.listing_url, source=source.name)

    assert "メンテナンス中" in broken.text
    with pytest.raises(SourceFormatError, match="no rows matched"):
        parse_listing(source, broken.text, page_url=broken.url)
    assert len(parse_listing(source, healthy.text, page_url=healthy.url)) == 5


def test_fake_uploader_feed_parses_with_the_sample_feed_source(
    site: UploaderSite, fetcher: PageFetcher
) -> None:
    from bmsuploader.config.sources import load_sources
    from bmsuploader.fetch.parsing import parse_listing
    from bmsuploader_local.run import SAMPLE_SOURCES

    source = load_sources(SAMPLE_SOURCES).get("sample-feed")
    page = fetcher.fetch(site.feed_url, source=source.name)

    entries = parse_listing(source, page.text, page_url=page.url)

    assert page.encoding == "utf-8"
    assert [e.entry_id for e in entries] == ["up00005", "up00004", "up00003", "up00002", "up00001"]
    assert entries[2].title == "★★2 ㈱ﾋﾞｰﾏﾆ商事 社歌 [INSANE] ①②③ 差分"
    assert entries[0].url == f"{site.base_url}/up/src/up00005.zip"


def test_a_site_that_trickles_is_cut_off_at_the_fetch_deadline(
    serve: Callable[[Respond], TinyServer],
) -> None:
    stop = threading.Event()

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.end_headers()
        while not stop.is_set():  # one byte every 0.2 s: no single read ever times out
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    server = serve(trickle)
    client = httpx.Client(timeout=httpx.Timeout(3.0))
    pages = PageFetcher(client, retries=2, sleep=lambda _: None, deadline_seconds=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match=r"body still arriving at the deadline .*1 s allowed"):
            pages.fetch(server.url, source="s")
    finally:
        stop.set()
        client.close()

    # Bounded by the deadline (plus one read), not by reads x retries.
    assert time.monotonic() - started < 1.0 + 1.0
    assert len(server.headers) == 1  # no retry once the deadline has passed


def test_the_run_budget_caps_a_fetch_below_its_own_deadline(serve: Callable[[Respond], TinyServer]) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(2.0)
        reply(200, b"late")(handler)

    server = serve(slow)
    pages = PageFetcher(sleep=lambda _: None)
    started = time.monotonic()

    with pytest.raises(FetchError, match=r"0.3 s allowed"):
        pages.fetch(server.url, source="s", budget_seconds=0.3)

    assert time.monotonic() - started < 1.5
    pages.close()
