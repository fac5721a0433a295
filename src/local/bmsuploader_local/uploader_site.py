"""A fake old-style Japanese uploader on loopback, for integration tests and the local demo.

It reproduces what makes real uploaders awkward, so the fetch -> decode -> parse
path is exercised over real HTTP:

* ``/up/upload.cgi[?page=N]``: the classic CGI listing the ``classic-cgi`` preset
  reads, newest first, in **cp932 bytes** whose charset is declared only in
  ``<meta http-equiv>`` (the HTTP header says just ``text/html``, like old servers);
* ``/feed/rss.xml``: an RSS 2.0 feed of the same uploads, in UTF-8;
* ``/up/src/<file>``: the uploaded file (a tiny empty zip), so demo links work;
* ``/table/``: the same uploads as a difficulty table, with the format's pitfalls:
  the meta tag's ``content`` before its ``name``, a relative ``data_url``
  (``data.json``) that redirects (302, like Google Apps Script) to
  ``/table/data/charts.json``, whose JSON has a BOM, CR/LF line ends, a
  ``{"charts": [...]}`` wrapper and numeric levels on every other chart;
* ETag and Last-Modified on the listing and the feed, with 304 answers to a
  matching conditional GET;
* scripting hooks: :meth:`UploaderSite.fail_next` (5xx) and
  :meth:`UploaderSite.break_next` (a maintenance page with no listing rows).

Stdlib only; it serves from a daemon thread on ``127.0.0.1`` and a free port.
"""

from __future__ import annotations

import hashlib
import html
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bmsuploader_local.loopback import LoopbackService

JST = timezone(timedelta(hours=9))
_EPOCH = datetime(2026, 1, 1, 9, 0, tzinfo=JST)
_EMPTY_ZIP = b"PK\x05\x06" + b"\x00" * 18

# Realistic comments: difficulty marks, ～ and ① (cp932-only), ㈱ and 髙 (NEC/IBM
# extensions), half-width kana. All encodable in cp932, as on a real Shift_JIS page.
SAMPLE_COMMENTS = (
    "★5 夜桜～Sakura Night～ [ANOTHER] 追加音源なし",
    "▼1 はじまりの唄 [BEGINNER] 同梱譜面とズレなし",
    "★★2 ㈱ﾋﾞｰﾏﾆ商事 社歌 [INSANE] ①②③ 差分",
    "☆12 髙橋のテーマ [HYPER] ｿﾌﾗﾝ推奨",
    "▼3 ミラージュ～蜃気楼～ (SP) 音ズレ修正版",
    "★10 ｶｵｽ・ｵﾌﾞ・ｻﾞ・ﾜｰﾙﾄﾞ [LEGGENDARIA] ※BGA無し",
    "sl4 彼岸花 ～Re:born～ [EX] 皆伝向け №2",
    "st0 﨑陽軒のうた [7KEYS] ｾﾙﾌ差分 ①",
)


@dataclass(frozen=True)
class Upload:
    entry_id: str
    filename: str
    comment: str
    size: str
    uploaded_at: str
    published: datetime
    downloads: int


class UploaderSite(LoopbackService):
    """The fake uploader. Use as a context manager, or ``start()`` / ``stop()``."""

    thread_name = "uploader-site"

    def __init__(
        self, *, rows_per_page: int = 20, first_id: int = 1, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.rows_per_page = rows_per_page
        super().__init__(host, port)
        self.uploads: list[Upload] = []  # oldest first; listings show them reversed
        self.requests: list[str] = []  # path + query of every request, in order
        self._next_id = first_id
        self._fail: list[int] = []  # statuses for the next requests
        self._broken = 0  # how many next requests get the maintenance page
        #: listing pages answered with the maintenance page until removed from the set
        self.broken_pages: set[int] = set()
        #: paths answered with this HTTP status until removed (e.g. the listing is down, the feed is not)
        self.failing_paths: dict[str, int] = {}
        #: seconds every answer waits before it is sent (a slow old host)
        self.latency = 0.0
        self._lock = threading.Lock()

    @classmethod
    def with_sample_uploads(cls, n: int, **kwargs: Any) -> UploaderSite:  # kwargs: see __init__
        """A site holding ``n`` uploads with deterministic Japanese comments."""
        site = cls(**kwargs)
        for i in range(n):
            site.add_upload(SAMPLE_COMMENTS[i % len(SAMPLE_COMMENTS)], size=f"{(i * 37) % 900 + 10}KB")
        return site

    @property
    def listing_url(self) -> str:
        return f"{self.base_url}/up/upload.cgi"

    @property
    def table_url(self) -> str:
        return f"{self.base_url}/table/"

    @property
    def feed_url(self) -> str:
        return f"{self.base_url}/feed/rss.xml"

    # --- scripting ----------------------------------------------------------------

    def add_upload(
        self, comment: str, filename: str | None = None, size: str = "12KB", uploaded_at: str | None = None
    ) -> str:
        """Add an upload (it becomes the newest) and return its entry id, e.g. ``"00001"``."""
        with self._lock:
            entry_id = f"{self._next_id:05d}"
            self._next_id += 1
            published = _EPOCH + timedelta(minutes=7 * len(self.uploads))
            self.uploads.append(
                Upload(
                    entry_id=entry_id,
                    filename=filename or f"up{entry_id}.zip",
                    comment=comment,
                    size=size,
                    uploaded_at=uploaded_at or published.strftime("%Y/%m/%d %H:%M"),
                    published=published,
                    downloads=(int(entry_id) * 7) % 50,
                )
            )
        return entry_id

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status``."""
        with self._lock:
            self._fail.extend([status] * n)

    def break_next(self, n: int = 1) -> None:
        """Answer the next ``n`` listing/feed requests with a maintenance page (200, no rows)."""
        with self._lock:
            self._broken += n

    # --- rendering ----------------------------------------------------------------

    def _listing(self, page: int) -> bytes:
        newest_first = self.uploads[::-1]
        shown = newest_first[(page - 1) * self.rows_per_page : page * self.rows_per_page]
        rows = "\n".join(
            f'<tr><td><a href="./src/{html.escape(u.filename)}">{html.escape(u.filename)}</a></td>'
            f"<td>{html.escape(u.comment)}</td><td>{html.escape(u.size)}</td>"
            f"<td>{html.escape(u.uploaded_at)}</td><td>{u.downloads}</td></tr>"
            for u in shown
        )
        more = len(newest_first) > page * self.rows_per_page
        pager = f'<a href="./upload.cgi?page={page + 1}">次のページ</a>' if more else ""
        return _shift_jis_page(
            "BMS差分アップローダー",
            '<form method="post" action="./upload.cgi"><input type="file" name="upfile"></form>\n'
            '<table border="1" cellspacing="0">\n'
            '<tr><td colspan="5"><font size="2">最大 10MB まで / ｺﾒﾝﾄ必須</font></td></tr>\n'
            "<tr><th>File</th><th>Comment</th><th>Size</th><th>Date</th><th>DL</th></tr>\n"
            f'{rows}\n<tr><td colspan="5"><hr></td></tr>\n</table>\n<p>{pager}</p>',
        )

    def _feed(self) -> bytes:
        items = "\n".join(
            "<item>"
            f"<title>{html.escape(u.comment)}</title>"
            f"<link>{self.base_url}/up/src/{html.escape(u.filename)}</link>"
            f'<guid isPermaLink="false">up{u.entry_id}</guid>'
            f"<description>{html.escape(f'<b>{u.filename}</b> ({u.size})')}</description>"
            f"<pubDate>{format_datetime(u.published)}</pubDate>"
            "</item>"
            for u in self.uploads[::-1][: self.rows_per_page]
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
            f"<title>BMS差分アップローダー</title><link>{self.listing_url}</link>"
            f"<description>新着</description>\n{items}\n</channel></rss>\n"
        ).encode()

    def _table(self, path: str) -> tuple[bytes, str] | None:
        if path == "/table/":
            page = (
                '<!DOCTYPE html>\r\n<html><head><meta charset="utf-8">\r\n'
                '<meta content="header.json" name="bmstable">\r\n<title>サンプル差分表</title>'
                "</head><body>サンプル差分表</body></html>\r\n"
            )
            return page.encode(), "text/html; charset=utf-8"
        if path == "/table/header.json":
            header = {"name": "サンプル差分表", "symbol": "sl", "data_url": "data.json"}
            return json.dumps(header, ensure_ascii=False).encode(), "application/json"
        if path == "/table/data/charts.json":
            charts = [table_chart(self.base_url, number, u) for number, u in enumerate(self.uploads)]
            body = json.dumps({"charts": charts}, ensure_ascii=False, indent=1).replace("\n", "\r\n")
            return "\ufeff".encode() + body.encode(), "application/json"
        return None

    def _table_route(
        self, handler: BaseHTTPRequestHandler, path: str
    ) -> tuple[int, bytes, str | None, dict[str, str]]:
        if path == "/table/data.json":  # a data_url that redirects, like Google Apps Script's
            return 302, b"", None, {"Location": "/table/data/charts.json"}
        table = self._table(path)
        if table is None:
            return 404, b"Not Found", "text/plain", {}
        body, content_type = table
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        if _not_modified(handler, etag, datetime.max.replace(tzinfo=UTC)):
            return 304, b"", None, {"ETag": etag}
        return 200, body, content_type, {"ETag": etag}

    def _respond(self, handler: BaseHTTPRequestHandler) -> None:
        # Decide under the lock, write to the socket outside it.
        with self._lock:
            status, body, content_type, headers = self._route(handler)
        if self.latency:
            time.sleep(self.latency)
        _send(handler, status, body, content_type, headers)

    def _route(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes, str | None, dict[str, str]]:
        self.requests.append(handler.path)
        parts = urlsplit(handler.path)
        if self._fail or parts.path in self.failing_paths:
            status = self._fail.pop(0) if self._fail else self.failing_paths[parts.path]
            return status, b"Server Error", "text/plain", {}
        if parts.path.startswith("/up/src/"):
            return 200, _EMPTY_ZIP, "application/zip", {}
        if parts.path not in ("/up/upload.cgi", "/feed/rss.xml"):
            table = parts.path.startswith("/table/")  # the same uploads as a difficulty table
            return self._table_route(handler, parts.path) if table else (404, b"Not Found", "text/plain", {})
        page = (parse_qs(parts.query).get("page") or ["1"])[0]
        page_number = max(int(page) if page.isdigit() else 1, 1)
        broken_page = parts.path == "/up/upload.cgi" and page_number in self.broken_pages
        if self._broken or broken_page:
            self._broken -= 0 if broken_page else 1
            body = _shift_jis_page(
                "メンテナンス中", "<p>只今メンテナンス中です。しばらくお待ちください。</p>"
            )
            return 200, body, "text/html", {}
        if parts.path == "/feed/rss.xml":
            body, content_type = self._feed(), "application/rss+xml; charset=UTF-8"
        else:
            body, content_type = self._listing(page_number), "text/html"
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        modified = _EPOCH + timedelta(minutes=7 * len(self.uploads))
        headers = {"ETag": etag, "Last-Modified": format_datetime(modified.astimezone(UTC), usegmt=True)}
        if _not_modified(handler, etag, modified):
            return 304, b"", None, headers
        return 200, body, content_type, headers


def table_chart(base_url: str, number: int, upload: Upload) -> dict[str, Any]:
    """An upload as a difficulty table's chart: md5, level (a number on every other chart), links."""
    level: int | str = number % 12 + 1 if number % 2 else str(number % 12 + 1)
    return {
        "md5": hashlib.md5(upload.entry_id.encode(), usedforsecurity=False).hexdigest(),
        "level": level,
        "title": upload.comment,
        "artist": "sample",
        "url": f"{base_url}/up/",
        "url_diff": f"{base_url}/up/src/{upload.filename}",
    }


def _shift_jis_page(title: str, body: str) -> bytes:
    page = (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN">\n<html><head>\n'
        '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">\n'
        f"<title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n{body}\n</body></html>\n"
    )
    # Characters outside cp932 become numeric references, as a real CGI would store them.
    return page.encode("cp932", errors="xmlcharrefreplace")


def _not_modified(handler: BaseHTTPRequestHandler, etag: str, modified: datetime) -> bool:
    if_none_match = handler.headers.get("If-None-Match")
    if if_none_match is not None:
        return etag in [tag.strip() for tag in if_none_match.split(",")] or if_none_match.strip() == "*"
    if_modified_since = handler.headers.get("If-Modified-Since")
    if if_modified_since:
        try:
            return parsedate_to_datetime(if_modified_since) >= modified
        except (TypeError, ValueError):
            return False
    return False


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str | None,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    if content_type:
        handler.send_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body and handler.command != "HEAD":
        handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        site: UploaderSite = self.server.service  # type: ignore[attr-defined]
        site._respond(self)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests and the demo read ``UploaderSite.requests`` instead."""


UploaderSite.handler = _Handler
