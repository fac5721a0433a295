"""The Discord edge, proved over real HTTP: DiscordPublisher -> requests -> FakeDiscord on loopback.

Nothing in requests is mocked; only the host differs from production (the
context's ``base_urls["discord"]``). The webhook URL comes from SSM on a moto
server in the wiring tests, also over HTTP. The renderer is the real one, with
the Discord rules.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mypy_boto3_ssm import SSMClient

import bmsuploader as discord_package
import bmsuploader_local
from bmsuploader.config.destinations import Destination
from bmsuploader.contract.errors import (
    AuthError,
    Disposition,
    MaybePostedError,
    PermanentPublishError,
    PublishError,
    RateLimitedError,
    TransientPublishError,
    UnknownOutcomeError,
)
from bmsuploader.contract.message import EntryMessage
from bmsuploader.contract.settings import PosterSettings
from bmsuploader.post import destinations
from bmsuploader.post.cycle import decide
from bmsuploader.post.networks import discord
from bmsuploader.post.networks.base import NetworkContext, PostRequest, PublishResult
from bmsuploader.post.rendering import neutralise, render_post
from bmsuploader_local.fake_discord import FakeDiscord
from bmsuploader_local.loopback import Scripted

# Distinctive values, so a leak into any message, traceback or log line is easy to spot.
WEBHOOK_ID = "1234567890123456789"
TOKEN = "tok-LEAKCHECK-discord-webhook-7f3a91bc55de0a0a-ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"
WEBHOOK_URL = f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{TOKEN}"
ENTRY_URL = "https://up.example/d/42"
MENTIONS = "@everyone <@123> @here <@!124> <@&456> <#789>"
MARKDOWN = "**bold** ||spoiler|| [x](https://evil.example) `code`"


def _post(text: str, *, maybe_posted: bool = False) -> PostRequest:
    return PostRequest(
        text=text,
        link=None,
        key="0" * 64,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        maybe_posted=maybe_posted,
    )


def _message(**fields: Any) -> EntryMessage:
    base: dict[str, Any] = {
        "source": "stella",
        "entry_id": "42",
        "title": "星の欠片 [ANOTHER]",
        "url": ENTRY_URL,
        "fetched_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return EntryMessage(**{**base, **fields})


def assert_no_webhook(exc: BaseException) -> None:
    """Neither the message nor the whole logged traceback (with causes) holds the token."""
    logged = "".join(traceback.format_exception(exc))
    for shown in (str(exc), repr(exc), logged):
        assert TOKEN not in shown
        assert WEBHOOK_URL not in shown


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord(webhook_id=WEBHOOK_ID, token=TOKEN) as server:
        yield server


@pytest.fixture
def publisher(fake: FakeDiscord) -> discord.DiscordPublisher:
    return discord.DiscordPublisher(discord.parse_webhook_url(WEBHOOK_URL), base_url=fake.base_url)


# --- what Discord's markup could do: a small model of it, for the renderer tests ------

_ESCAPE = re.compile(r"\\([^0-9A-Za-z\s])")  # Discord renders "\" + punctuation as that character
_LINE_MARKUP = re.compile(r"(\d+\.|[-+*>]|#+|-#)(\s|$)")


def displayed(text: str) -> str:
    """What a reader sees: the text with Discord's backslash escapes resolved."""
    return _ESCAPE.sub(r"\1", text)


def active_markup(text: str, url: tuple[int, int] | None) -> list[str]:
    """Markup Discord would act on outside the entry URL: unescaped markup characters,
    ``://`` (an autolink), and a list, quote or heading opening a line."""
    found: list[str] = []
    index, line_start = 0, True
    while index < len(text):
        inside_url = url is not None and url[0] <= index < url[1]
        if _ESCAPE.match(text, index):
            index, line_start = index + 2, False
            continue
        if not inside_url:
            if text[index] in "*_~|`[]()<>#":
                found.append(text[index])
            if text.startswith("://", index):
                found.append("://")
            if line_start and _LINE_MARKUP.match(text, index):
                found.append(f"line start {text[index : index + 3]!r}")
        line_start = text[index] == "\n"
        index += 1
    return found


def test_the_markup_model_sees_markup() -> None:
    # The model below the renderer tests must be able to fail them.
    assert set(active_markup(MARKDOWN, None)) == {"*", "|", "[", "]", "(", ")", "`", "://"}
    assert active_markup("1. list", None) == ["line start '1. '"]
    assert active_markup("see https://x.example", None) == ["://"]
    assert active_markup("see https://x.example", (4, 21)) == []
    assert active_markup(r"\*\*not bold\*\*", None) == []


# --- posting, and nobody pinged ---------------------------------------------------------


def test_a_post_returns_the_message_id(publisher: discord.DiscordPublisher, fake: FakeDiscord) -> None:
    result = publisher.publish(_post("【新着差分】星の欠片 [ANOTHER] https://up.example/d/42"))
    [post] = fake.posts
    assert result == PublishResult(tweet_id=post["id"])
    assert result.tweet_id is not None and result.tweet_id.isdigit()
    [seen] = fake.requests
    assert seen.path == f"/api/webhooks/{WEBHOOK_ID}/{TOKEN}"  # the real path, only the host differs
    assert seen.query == {"wait": ["true"]}
    # Exactly this: no flags (link previews stay), no username or avatar overrides.
    assert seen.payload == {
        "content": "【新着差分】星の欠片 [ANOTHER] https://up.example/d/42",
        "allowed_mentions": {"parse": []},
    }


def test_mentions_sent_as_they_are_ping_no_one(
    publisher: discord.DiscordPublisher, fake: FakeDiscord
) -> None:
    # Bypasses the renderer: allowed_mentions alone must keep these silent.
    publisher.publish(_post(MENTIONS))
    [post] = fake.posts
    assert post["content"] == MENTIONS
    assert post["pinged"] == []
    assert fake.requests[0].payload["allowed_mentions"] == {"parse": []}


def test_the_fake_reports_a_ping_when_mentions_are_allowed(fake: FakeDiscord) -> None:
    # The fake's own judgement, so a publisher that dropped allowed_mentions fails above.
    url = fake.local_webhook_url + "?wait=true"
    for allowed in (None, {"parse": ["everyone"]}, {"parse": [], "users": ["123"]}):
        body = (
            {"content": MENTIONS} if allowed is None else {"content": MENTIONS, "allowed_mentions": allowed}
        )
        requests.post(url, json=body, timeout=5)
    assert [p["pinged"] for p in fake.posts] == [["everyone", "users", "roles"], ["everyone"], ["users"]]


def test_a_title_with_mentions_renders_inert_and_pings_no_one(
    publisher: discord.DiscordPublisher, fake: FakeDiscord
) -> None:
    post = render_post(
        _message(title=MENTIONS), template="{title} {url}", include_link=True, rules=discord.RULES
    )
    for trigger in ("@everyone", "@here", "<@", "<#", "@"):
        assert trigger not in post.text
    assert displayed(post.text) == f"{neutralise(MENTIONS)} {ENTRY_URL}"  # reads the same, ﹫ and ♯
    publisher.publish(_post(post.text))
    assert fake.posts[0]["pinged"] == []
    assert fake.requests[0].payload["allowed_mentions"] == {"parse": []}


# --- markdown -------------------------------------------------------------------------


def test_markdown_in_a_title_renders_inert() -> None:
    post = render_post(
        _message(title=MARKDOWN), template="{title} {url}", include_link=True, rules=discord.RULES
    )
    assert active_markup(post.text, post.link) == []
    # The reader sees the title as scraped (neutralised as on every network), nothing lost.
    assert displayed(post.text) == f"{neutralise(MARKDOWN)} {ENTRY_URL}"
    assert "https\\://evil" in post.text  # not autolinked, whatever its look-alike dot
    assert post.link is not None and post.text[post.link[0] : post.link[1]] == ENTRY_URL


@pytest.mark.parametrize(
    ("title", "escaped"),
    [
        ("# heading", "♯ heading"),  # neutralised before any escape
        ("-# subtext", "\\-♯ subtext"),
        ("> quote", "\\> quote"),
        ("- item", "\\- item"),
        ("* item", "\\* item"),
        ("+ item", "\\+ item"),
        ("1. item", "1\\. item"),
        ("```py\ncode```", "\\`\\`\\`py code\\`\\`\\`"),
        ("__under__ ~~strike~~", "\\_\\_under\\_\\_ \\~\\~strike\\~\\~"),
        ("<t:1700000000:R> <:emoji:123>", "\\<t:1700000000:R\\> \\<:emoji:123\\>"),
        ("back\\slash*", "back\\\\slash\\*"),
        ("3.5 stars", "3.5 stars"),  # not a list
    ],
)
def test_each_markdown_construct_is_escaped(title: str, escaped: str) -> None:
    post = render_post(_message(title=title), template="{title}", include_link=False, rules=discord.RULES)
    assert post.text == escaped
    assert active_markup(post.text, None) == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=st.text(alphabet="*_~|`>#-+[]()<>\\:/.1 ax@&!", min_size=1, max_size=40).filter(str.strip),
    comment=st.text(alphabet="*_~|`>#-+[]()<>\\:/.1 ax", max_size=20),
)
def test_no_scraped_text_is_ever_markup(title: str, comment: str) -> None:
    post = render_post(
        _message(title=title, comment=comment),
        template="{title}{comment}\n{comment} {url}",
        include_link=True,
        rules=discord.RULES,
    )
    assert active_markup(post.text, post.link) == []
    assert post.link is not None and post.text[post.link[0] : post.link[1]] == ENTRY_URL


def test_a_very_long_title_is_cut_to_2000_and_the_url_kept_whole() -> None:
    title = ("長い曲名 **x** " * 200)[:2000]  # markdown doubles in length when escaped
    message = _message(title=title, comment="コメント_" * 400)
    post = render_post(message, template="{title} / {comment} {url}", include_link=True, rules=discord.RULES)
    assert len(title) + len(message.comment) > discord.MAX_CONTENT_LENGTH  # it had to be cut
    assert post.weighted_length == len(post.text) <= discord.MAX_CONTENT_LENGTH
    assert len(post.text) > discord.MAX_CONTENT_LENGTH - 20  # and not cut much more than needed
    assert "…" in post.text
    assert post.text.endswith(f" {ENTRY_URL}")
    assert post.link == (len(post.text) - len(ENTRY_URL), len(post.text))
    assert active_markup(post.text, post.link) == []


def test_the_fake_refuses_content_over_2000_as_discord_does(
    publisher: discord.DiscordPublisher, fake: FakeDiscord
) -> None:
    publisher.publish(_post("あ" * 2000))
    with pytest.raises(PermanentPublishError) as caught:
        publisher.publish(_post("あ" * 2001))
    assert "Must be 2000 or fewer in length." in str(caught.value)
    assert "code 50035" in str(caught.value)
    assert_no_webhook(caught.value)
    assert len(fake.posts) == 1


# --- every error Discord gives, mapped ------------------------------------------------


@pytest.mark.parametrize(
    ("scripted", "error", "needle"),
    [
        (FakeDiscord.server_error(503), TransientPublishError, "503"),
        (FakeDiscord.server_error(500), TransientPublishError, "500"),
        (Scripted(status=502, body=None), TransientPublishError, "502 Bad Gateway"),
        (Scripted(status=302, headers={"Location": "https://x.example/"}), TransientPublishError, "302"),
        (FakeDiscord.unauthorized(), AuthError, "Invalid Webhook Token"),
        (FakeDiscord.unknown_webhook(), AuthError, "Unknown Webhook"),
        (FakeDiscord.missing_permissions(), AuthError, "Missing Permissions"),
        (FakeDiscord.bad_request("Cannot send an empty message", 50006), PermanentPublishError, "50006"),
        (Scripted(status=413, body={"message": "Request entity too large"}), PermanentPublishError, "413"),
    ],
    ids=["503", "500", "502-empty", "302", "401", "404", "403", "400", "413"],
)
def test_scripted_errors_map_to_typed_errors(
    publisher: discord.DiscordPublisher,
    fake: FakeDiscord,
    scripted: Scripted,
    error: type[PublishError],
    needle: str,
) -> None:
    fake.script(scripted)
    with pytest.raises(error) as caught:
        publisher.publish(_post("text"))
    assert type(caught.value) is error
    assert needle in str(caught.value)
    assert_no_webhook(caught.value)
    assert fake.posts == []


def test_a_wrong_token_is_an_auth_error_naming_the_fix(fake: FakeDiscord) -> None:
    wrong = discord.parse_webhook_url(WEBHOOK_URL.replace("LEAKCHECK", "LEAKCHECX"))
    publisher = discord.DiscordPublisher(wrong, parameter="/b/d/discord/webhook_url", base_url=fake.base_url)
    with pytest.raises(AuthError) as caught:
        publisher.publish(_post("text"))
    message = str(caught.value)
    assert "401" in message and "Invalid Webhook Token" in message and "token is wrong" in message
    assert "Server Settings > Integrations > Webhooks" in message
    assert "--name /b/d/discord/webhook_url" in message
    assert "LEAKCHECX" not in message and "LEAKCHECX" not in "".join(traceback.format_exception(caught.value))
    assert fake.posts == []


def test_a_deleted_webhook_is_an_auth_error(fake: FakeDiscord) -> None:
    gone = discord.parse_webhook_url(WEBHOOK_URL.replace(WEBHOOK_ID, "1234567890123456780"))
    with pytest.raises(
        AuthError, match=r"404: Unknown Webhook; code 10015\): the webhook does not exist"
    ) as caught:
        discord.DiscordPublisher(gone, base_url=fake.base_url).publish(_post("text"))
    assert "create a new webhook" in str(caught.value)
    assert_no_webhook(caught.value)


@pytest.mark.parametrize(
    ("scripted", "delay"),
    [
        (FakeDiscord.rate_limited(64.57), 65),  # retry_after and Retry-After agree
        (FakeDiscord.rate_limited(0.2), 1),  # rounded up, never 0
        (FakeDiscord.rate_limited(3.2, retry_after_header=""), 4),  # body only
        (FakeDiscord.rate_limited(None, retry_after_header="30"), 30),  # header only
        (FakeDiscord.rate_limited(1.0, retry_after_header="42"), 42),  # an internal limit: the longer
        (FakeDiscord.rate_limited(None, retry_after_header=""), 60),  # neither: a minute
        (Scripted(status=429, body=None, headers={"Retry-After": "7"}), 7),  # not JSON (Cloudflare)
    ],
    ids=["both", "sub-second", "body-only", "header-only", "header-longer", "neither", "cloudflare"],
)
def test_429_waits_for_retry_after(
    publisher: discord.DiscordPublisher, fake: FakeDiscord, scripted: Scripted, delay: int
) -> None:
    fake.script(scripted)
    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(_post("text"))
    assert caught.value.delay_seconds == delay
    assert f"waiting {delay}s" in str(caught.value)
    assert decide(caught.value, receive_count=1).disposition is Disposition.PARK
    assert_no_webhook(caught.value)


def test_a_global_rate_limit_is_named(publisher: discord.DiscordPublisher, fake: FakeDiscord) -> None:
    fake.script(FakeDiscord.rate_limited(2.5, global_=True))
    with pytest.raises(RateLimitedError, match="Discord global rate limit") as caught:
        publisher.publish(_post("text"))
    assert caught.value.delay_seconds == 3


@pytest.fixture
def limited_fake() -> Iterator[tuple[FakeDiscord, list[float]]]:
    """A fake that enforces 5 requests per 2 s per webhook, on a clock the test moves."""
    now = [1000.0]
    with FakeDiscord(webhook_id=WEBHOOK_ID, token=TOKEN, rate_limit=(5, 2.0), clock=lambda: now[0]) as fake:
        yield fake, now


def test_the_fakes_limit_of_5_per_2_seconds(limited_fake: tuple[FakeDiscord, list[float]]) -> None:
    fake, now = limited_fake
    publisher = discord.DiscordPublisher(discord.parse_webhook_url(WEBHOOK_URL), base_url=fake.base_url)
    for index in range(5):
        publisher.publish(_post(f"post {index}"))
        now[0] += 0.1
    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(_post("post 5"))
    assert caught.value.delay_seconds == 2  # 1.5 s until the first of the five leaves the window
    assert fake.requests[-1].status == 429
    now[0] += 1.5
    assert publisher.publish(_post("post 5")).tweet_id is not None
    assert [p["content"] for p in fake.posts] == [f"post {i}" for i in range(6)]


def test_after_a_scripted_error_the_fake_behaves_normally(
    publisher: discord.DiscordPublisher, fake: FakeDiscord
) -> None:
    fake.script(FakeDiscord.normal(), FakeDiscord.server_error())
    publisher.publish(_post("one"))
    with pytest.raises(TransientPublishError):
        publisher.publish(_post("two"))
    publisher.publish(_post("two"))
    assert [r.status for r in fake.requests] == [200, 503, 200]


@pytest.mark.parametrize(
    "scripted",
    [Scripted(status=204), Scripted(status=200, body={"no": "id"}), Scripted(status=200, body=["x"])],
    ids=["204", "no-id", "not-an-object"],
)
def test_a_success_without_an_id_is_still_posted(
    publisher: discord.DiscordPublisher, fake: FakeDiscord, scripted: Scripted
) -> None:
    # Raising would make the next attempt post it again.
    fake.script(scripted)
    assert publisher.publish(_post("text")) == PublishResult(tweet_id=None)


# --- the network failing ----------------------------------------------------------------


def test_accepted_then_dropped_is_an_unknown_outcome(
    publisher: discord.DiscordPublisher, fake: FakeDiscord
) -> None:
    fake.script(FakeDiscord.accept_then_drop())
    with pytest.raises(UnknownOutcomeError, match="may have been posted") as caught:
        publisher.publish(_post("【新着差分】crash after accept"))
    assert_no_webhook(caught.value)
    assert [p["content"] for p in fake.posts] == ["【新着差分】crash after accept"]  # it is in the channel
    assert [r.status for r in fake.requests] == [None]


def test_a_discord_that_never_answers_is_an_unknown_outcome() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host, port = silent.getsockname()
        slow = discord.DiscordPublisher(
            discord.parse_webhook_url(WEBHOOK_URL), base_url=f"http://{host}:{port}", timeout=(0.5, 0.5)
        )
        started = time.monotonic()
        with pytest.raises(UnknownOutcomeError, match=r"did not answer within 0.5s") as caught:
            slow.publish(_post("text"))
        assert time.monotonic() - started < 5
    assert_no_webhook(caught.value)


def test_a_refused_connection_is_transient_and_names_no_token() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the request: nothing listens
    gone = discord.DiscordPublisher(
        discord.parse_webhook_url(WEBHOOK_URL), base_url=f"http://127.0.0.1:{port}", timeout=(0.5, 0.5)
    )
    with pytest.raises(TransientPublishError, match="nothing was sent") as caught:
        gone.publish(_post("text"))
    assert type(caught.value) is TransientPublishError  # not "unknown": nothing reached Discord
    # requests' own message names the URL; ours says which webhook without the token.
    assert f"webhooks/{WEBHOOK_ID}/***" in str(caught.value)
    assert_no_webhook(caught.value)


def test_a_connect_timeout_is_transient() -> None:
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        address = full.getsockname()
        fillers = []
        for _ in range(8):  # fill the accept queue: the next connection attempt hangs
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        time.sleep(0.1)
        try:
            with socket.create_connection(address, timeout=0.3):
                pytest.skip("this system's loopback accepts past a full backlog")
        except TimeoutError:
            pass
        slow = discord.DiscordPublisher(
            discord.parse_webhook_url(WEBHOOK_URL),
            base_url=f"http://{address[0]}:{address[1]}",
            timeout=(0.3, 5),
        )
        try:
            with pytest.raises(TransientPublishError, match="nothing was sent") as caught:
                slow.publish(_post("text"))
        finally:
            for filler in fillers:
                filler.close()
    assert type(caught.value) is TransientPublishError
    assert_no_webhook(caught.value)


def test_each_post_opens_a_fresh_connection(publisher: discord.DiscordPublisher, fake: FakeDiscord) -> None:
    # A pooled connection Discord closed while the Lambda slept would fail after sending
    # and read as "maybe posted": a post on Discord never reuses one.
    publisher.publish(_post("one"))
    publisher.publish(_post("two"))
    first, second = (r.client_port for r in fake.requests)
    assert first != second


def test_the_fake_keeps_connections_alive(fake: FakeDiscord) -> None:
    # The fake's side of the test above: a client that pools would reuse its connection.
    with requests.Session() as session:
        session.post(fake.local_webhook_url, json={"content": "one"}, timeout=5)
        session.post(fake.local_webhook_url, json={"content": "two"}, timeout=5)
    first, second = (r.client_port for r in fake.requests)
    assert first == second


# --- maybe posted: the trade-off ----------------------------------------------------------


def test_maybe_posted_is_dead_lettered_without_any_request(
    publisher: discord.DiscordPublisher, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a maybe-posted attempt opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(MaybePostedError) as caught:
        publisher.publish(_post("text", maybe_posted=True))
    assert fake.requests == [] and fake.posts == []
    decision = decide(caught.value, receive_count=2)
    assert decision.disposition is Disposition.DEAD_LETTER
    assert "look for it in the channel" in decision.reason and "bmsuploader redrive" in decision.reason
    assert_no_webhook(caught.value)


# --- the secret --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path", "thread"),
    [
        (WEBHOOK_URL, f"/api/webhooks/{WEBHOOK_ID}/{TOKEN}", None),
        (WEBHOOK_URL.replace("discord.com", "discordapp.com"), f"/api/webhooks/{WEBHOOK_ID}/{TOKEN}", None),
        (
            WEBHOOK_URL.replace("discord.com", "canary.discord.com"),
            f"/api/webhooks/{WEBHOOK_ID}/{TOKEN}",
            None,
        ),
        (WEBHOOK_URL.replace("/api/", "/api/v10/"), f"/api/v10/webhooks/{WEBHOOK_ID}/{TOKEN}", None),
        (f"{WEBHOOK_URL}/?thread_id=42", f"/api/webhooks/{WEBHOOK_ID}/{TOKEN}", "42"),
        (f"  {WEBHOOK_URL}\n", f"/api/webhooks/{WEBHOOK_ID}/{TOKEN}", None),
    ],
    ids=["discord.com", "discordapp.com", "canary", "api-v10", "thread", "pasted-with-spaces"],
)
def test_webhook_urls_discord_shows_are_accepted(url: str, path: str, thread: str | None) -> None:
    webhook = discord.parse_webhook_url(url)
    assert (webhook.id, webhook.token, webhook.path, webhook.thread_id) == (WEBHOOK_ID, TOKEN, path, thread)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (WEBHOOK_URL.replace("https", "http"), "does not start with https://"),
        (TOKEN, "does not start with https://"),
        (WEBHOOK_URL.replace("discord.com", "evil.example"), "its host 'evil.example' is not discord.com"),
        (WEBHOOK_URL.replace("discord.com", "discord.com:8443"), "is not discord.com"),
        (WEBHOOK_URL.replace(f"/{TOKEN}", ""), "its path is not /api/webhooks/<numeric id>/<token>"),
        (WEBHOOK_URL.replace(WEBHOOK_ID, "abc"), "its path is not"),
        (WEBHOOK_URL.replace(TOKEN, "short"), "its path is not"),
        (f"{WEBHOOK_URL}?wait=true", "more than ?thread_id= after the token (wait)"),
        (f"{WEBHOOK_URL}#frag", "more than ?thread_id="),
        (f"{WEBHOOK_URL}?thread_id=x", "its thread_id is not one numeric id"),
    ],
    ids=[
        "http",
        "token-only",
        "host",
        "port",
        "no-token",
        "id",
        "short-token",
        "query",
        "fragment",
        "thread",
    ],
)
def test_a_malformed_webhook_url_is_an_auth_error_naming_the_fix(url: str, problem: str) -> None:
    with pytest.raises(AuthError) as caught:
        discord.parse_webhook_url(url, parameter="/b/d/discord/webhook_url")
    message = str(caught.value)
    assert problem in message
    assert "/b/d/discord/webhook_url" in message and "New Webhook > Copy Webhook URL" in message
    assert_no_webhook(caught.value)


def test_reprs_never_show_the_token(publisher: discord.DiscordPublisher) -> None:
    webhook = discord.parse_webhook_url(WEBHOOK_URL)
    for shown in (repr(webhook), str(webhook), f"{webhook}", repr(publisher), str(publisher)):
        assert TOKEN not in shown
        assert WEBHOOK_ID in shown and "'***'" in shown


def test_the_token_never_reaches_the_logs(
    publisher: discord.DiscordPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    # urllib3 itself at DEBUG too: a poster loaded earlier in the run holds it at INFO
    # (bmsuploader.aws.observability), and this test is about what it would log.
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="urllib3"):
        publisher.publish(_post("text"))
    request_lines = [r.getMessage() for r in caplog.records if "/api/webhooks/" in r.getMessage()]
    assert request_lines, "urllib3 logs each request's path at DEBUG: the check below must see it"
    assert all(f"webhooks/{WEBHOOK_ID}/***" in line for line in request_lines)
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_a_thread_id_is_sent_along(fake: FakeDiscord) -> None:
    webhook = discord.parse_webhook_url(f"{WEBHOOK_URL}?thread_id=777")
    discord.DiscordPublisher(webhook, base_url=fake.base_url).publish(_post("in a thread"))
    assert fake.requests[0].query == {"wait": ["true"], "thread_id": ["777"]}


# --- wiring: the destination, its SSM parameter and the context -----------------------


class _NoSessions:
    def load(self, destination: str) -> dict[str, str] | None:
        return None

    def save(self, destination: str, session: dict[str, str]) -> None:
        raise AssertionError("Discord keeps no session")


@pytest.fixture
def destination(request: pytest.FixtureRequest) -> Destination:
    """A destination whose SSM path no other test uses (the moto server lives for the module)."""
    return Destination(
        name="discord", kind="discord", secret=f"/bmsuploader/destinations/{request.node.name}/discord"
    )


def _publisher_for(destination: Destination, fake: FakeDiscord) -> Any:
    settings = PosterSettings.model_construct(dry_run=False)
    context = NetworkContext(sessions=_NoSessions(), base_urls={"discord": fake.base_url})
    return destinations.publisher_for(settings, destination, context)


def test_the_webhook_url_is_read_from_ssm_and_posted_to(
    ssm: SSMClient, destination: Destination, fake: FakeDiscord
) -> None:
    ssm.put_parameter(
        Name=f"{destination.secret}/webhook_url",
        Value=WEBHOOK_URL + "\n",
        Type="SecureString",
        Overwrite=True,
    )
    publisher = _publisher_for(destination, fake)
    assert isinstance(publisher, discord.DiscordPublisher)
    assert publisher.publish(_post("from SSM")).tweet_id == fake.posts[0]["id"]
    assert fake.requests[0].path == f"/api/webhooks/{WEBHOOK_ID}/{TOKEN}"
    assert destinations.rules_for("discord") is discord.RULES


def test_a_missing_webhook_parameter_names_it(
    ssm: SSMClient, destination: Destination, fake: FakeDiscord
) -> None:
    with pytest.raises(AuthError) as caught:
        _publisher_for(destination, fake)
    message = str(caught.value)
    assert f"{destination.secret}/webhook_url" in message
    assert "--type SecureString" in message and "Copy Webhook URL" in message


def test_a_malformed_webhook_parameter_names_it_not_its_value(
    ssm: SSMClient, destination: Destination, fake: FakeDiscord
) -> None:
    ssm.put_parameter(
        Name=f"{destination.secret}/webhook_url",
        Value=WEBHOOK_URL.replace("https://discord.com", "https://discord.example"),
        Type="SecureString",
        Overwrite=True,
    )
    with pytest.raises(AuthError, match=r"is not discord\.com") as caught:
        _publisher_for(destination, fake)
    assert f"--name {destination.secret}/webhook_url" in str(caught.value)
    assert_no_webhook(caught.value)
    assert fake.requests == []


# --- the fake, standalone -------------------------------------------------------------------


def test_the_fake_runs_standalone() -> None:
    # The very modules this test imports (a worktree's, not another checkout's).
    here = [str(Path(module.__file__ or "").parent.parent) for module in (discord_package, bmsuploader_local)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*here, os.environ.get("PYTHONPATH", "")])}
    with subprocess.Popen(
        [sys.executable, "-m", "bmsuploader_local.fake_discord", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().split()[-1]
            webhook_url = process.stdout.readline().split()[2]
            local = process.stdout.readline().split()[-1]
            assert webhook_url.startswith("https://discord.com/api/webhooks/")
            answer = requests.post(f"{local}?wait=true", json={"content": "hi"}, timeout=5)
            assert answer.status_code == 200 and answer.json()["content"] == "hi"
            posts = requests.get(f"{base_url}/fake/posts", timeout=5).json()["posts"]
            assert [p["content"] for p in posts] == ["hi"]
        finally:
            process.terminate()
            process.wait(timeout=10)
