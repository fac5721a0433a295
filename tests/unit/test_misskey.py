"""The Misskey edge, proved over real HTTP: MisskeyPublisher -> requests -> FakeMisskey on loopback.

Nothing in requests is mocked; only the server differs from production. The token comes
from SSM on a moto server, also over HTTP, in the test that goes through
:func:`bmsuploader.post.destinations.publisher_for`.
"""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mypy_boto3_ssm import SSMClient

from bmsuploader.config.destinations import Destination
from bmsuploader.config.templates import DEFAULT_TEMPLATE
from bmsuploader.contract.errors import (
    AuthError,
    MaybePostedError,
    PermanentPublishError,
    RateLimitedError,
    TransientPublishError,
    UnknownOutcomeError,
)
from bmsuploader.contract.message import EntryMessage
from bmsuploader.contract.settings import PosterSettings
from bmsuploader.post import destinations
from bmsuploader.post.networks import misskey
from bmsuploader.post.networks.base import NetworkContext, PostRequest, PublishResult, post_key
from bmsuploader.post.networks.misskey import MisskeyPublisher, escape_mfm, note_length
from bmsuploader.post.rendering import render_post
from bmsuploader_local.fake_misskey import FakeMisskey, live_mfm

TOKEN = "misskey-LEAKCHECK-token-2b7e"
FETCHED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
URL = "https://uploader.example.jp/bms/upload.cgi?get=00123"


def _post(
    text: str = "【新着差分】星の欠片 / https://uploader.example.jp/bms/upload.cgi?get=00123", **kw: Any
) -> PostRequest:
    fields: dict[str, Any] = {
        "text": text,
        "link": None,
        "key": post_key("misskey-io", "example", "00123"),
        "created_at": FETCHED,
    }
    fields.update(kw)
    return PostRequest(**fields)


def assert_no_token(exc: BaseException) -> None:
    logged = "".join(traceback.format_exception(exc))
    assert TOKEN not in str(exc)
    assert TOKEN not in logged


@pytest.fixture
def fake() -> Iterator[FakeMisskey]:
    with FakeMisskey(token=TOKEN) as server:
        server.now = lambda: FETCHED + timedelta(minutes=5)
        yield server


@pytest.fixture
def publisher(fake: FakeMisskey) -> MisskeyPublisher:
    return MisskeyPublisher(
        fake.base_url, TOKEN, parameter="/bmsuploader/destinations/misskey-io/token", timeout=(2, 5)
    )


def creates(fake: FakeMisskey) -> int:
    return sum(r.endpoint == "notes/create" for r in fake.requests)


# --- posting ------------------------------------------------------------------


def test_a_post_is_a_note_with_the_token_as_i(publisher: MisskeyPublisher, fake: FakeMisskey) -> None:
    result = publisher.publish(_post())
    assert result == PublishResult(tweet_id=fake.notes[0]["id"])
    assert fake.notes[0]["text"] == _post().text
    assert fake.notes[0]["visibility"] == "public"
    assert fake.requests[0].token == TOKEN


@pytest.mark.parametrize(("ours", "theirs"), [("unlisted", "home"), ("followers", "followers")])
def test_visibility_is_mapped(fake: FakeMisskey, ours: str, theirs: str) -> None:
    MisskeyPublisher(fake.base_url, TOKEN, visibility=ours).publish(_post())
    assert fake.notes[0]["visibility"] == theirs


def test_misskey_has_no_idempotency_a_repeat_posts_twice(
    publisher: MisskeyPublisher, fake: FakeMisskey
) -> None:
    # Why the check exists: the fake, like Misskey, posts the same request twice.
    first = publisher.publish(_post())
    second = publisher.publish(_post())
    assert first != second and len(fake.notes) == 2


def test_the_fakes_responder_answers_when_nothing_is_scripted(
    publisher: MisskeyPublisher, fake: FakeMisskey
) -> None:
    # How the fault test runs an outage window in virtual time: a script comes first.
    seen: list[str | None] = []

    def responder(text: str | None) -> Any:
        seen.append(text)
        return FakeMisskey.accept_then_drop() if len(seen) == 1 else None

    fake.responder = responder
    fake.script(FakeMisskey.server_error())
    with pytest.raises(UnknownOutcomeError):
        publisher.publish(_post())
    with pytest.raises(UnknownOutcomeError):  # the responder's drop: the note exists
        publisher.publish(_post())
    assert publisher.publish(_post("another")).duplicate is False
    assert seen == [_post().text, "another"]
    assert [r.status for r in fake.requests] == [500, None, 200]
    assert [n["text"] for n in fake.notes] == [_post().text, "another"]


# --- a crash after Misskey accepted the note -----------------------------------


def test_crash_after_accept_then_retry_posts_nothing_new(
    publisher: MisskeyPublisher, fake: FakeMisskey
) -> None:
    text = "【新着差分】<plain>**A** & B</plain> / https://uploader.example.jp/bms/upload.cgi?get=00123"
    fake.script(FakeMisskey.accept_then_drop())
    with pytest.raises(UnknownOutcomeError) as caught:
        publisher.publish(_post(text))
    assert_no_token(caught.value)
    assert len(fake.notes) == 1

    result = publisher.publish(_post(text, maybe_posted=True))
    assert result == PublishResult(tweet_id=fake.notes[0]["id"], duplicate=True)
    assert len(fake.notes) == 1
    assert [r.endpoint for r in fake.requests] == ["notes/create", "i", "users/notes"]


def test_the_check_posts_when_the_earlier_attempt_did_not(
    publisher: MisskeyPublisher, fake: FakeMisskey
) -> None:
    # An identical note from before the entry was fetched is not ours for this entry.
    fake.add_note(_post().text, created_at=FETCHED - timedelta(days=3))
    fake.add_note("something else", created_at=FETCHED + timedelta(minutes=1))
    result = publisher.publish(_post(maybe_posted=True))
    assert result.duplicate is False
    assert result.tweet_id == fake.notes[-1]["id"] and len(fake.notes) == 3


def test_the_check_pages_back_with_until_id(publisher: MisskeyPublisher, fake: FakeMisskey) -> None:
    target = fake.add_note(_post().text, created_at=FETCHED + timedelta(minutes=1))
    for n in range(25):
        fake.add_note(f"later {n}", created_at=FETCHED + timedelta(minutes=2 + n))
    assert publisher.publish(_post(maybe_posted=True)) == PublishResult(tweet_id=target, duplicate=True)
    assert [r.endpoint for r in fake.requests].count("users/notes") == 2
    assert creates(fake) == 0


def test_the_check_gives_up_when_too_much_was_posted_since(
    publisher: MisskeyPublisher, fake: FakeMisskey
) -> None:
    for n in range(5 * 20 + 1):
        fake.add_note(f"later {n}", created_at=FETCHED + timedelta(minutes=1, seconds=n))
    with pytest.raises(MaybePostedError, match="redrive"):
        publisher.publish(_post(maybe_posted=True))
    assert creates(fake) == 0


def test_the_check_needs_read_account() -> None:
    with FakeMisskey(token=TOKEN, permissions=frozenset({"write:notes"})) as fake:
        publisher = MisskeyPublisher(fake.base_url, TOKEN)
        assert publisher.publish(_post()).tweet_id  # posting needs only write:notes
        with pytest.raises(AuthError, match="read:account") as caught:
            publisher.publish(_post(maybe_posted=True))
        assert_no_token(caught.value)
        assert len(fake.notes) == 1


# --- errors -------------------------------------------------------------------


def test_a_wrong_token_is_an_auth_error_naming_the_fix_not_the_token(fake: FakeMisskey) -> None:
    publisher = MisskeyPublisher(
        fake.base_url, TOKEN + "-wrong", parameter="/bmsuploader/destinations/misskey-io/token"
    )
    with pytest.raises(AuthError) as caught:
        publisher.publish(_post())
    message = str(caught.value)
    assert "AUTHENTICATION_FAILED" in message and "Settings > API" in message and "write:notes" in message
    assert "/bmsuploader/destinations/misskey-io/token" in message
    assert TOKEN not in message and TOKEN not in "".join(traceback.format_exception(caught.value))
    assert fake.notes == []


def test_an_older_misskeys_403_authentication_failed_is_an_auth_error(
    publisher: MisskeyPublisher, fake: FakeMisskey
) -> None:
    fake.script(FakeMisskey.error(403, "AUTHENTICATION_FAILED", "Authentication failed."))
    with pytest.raises(AuthError, match="wrong or revoked"):
        publisher.publish(_post())


def test_a_token_without_write_notes_is_an_auth_error() -> None:
    with FakeMisskey(token=TOKEN, permissions=frozenset({"read:account"})) as fake:
        with pytest.raises(AuthError, match=r"PERMISSION_DENIED.*lacks write:notes") as caught:
            MisskeyPublisher(fake.base_url, TOKEN).publish(_post())
        assert_no_token(caught.value)


@pytest.mark.parametrize(
    ("scripted", "delay"),
    [
        (FakeMisskey.rate_limited(retry_after=42, reset=41.2), 42),
        (FakeMisskey.rate_limited(reset=12.3), 13),
        (FakeMisskey.rate_limited(reset_ms=5500), 6),
        (FakeMisskey.rate_limited(), misskey.DEFAULT_RATE_LIMIT_DELAY),
    ],
)
def test_429_waits_as_long_as_misskey_says(
    publisher: MisskeyPublisher, fake: FakeMisskey, scripted: Any, delay: int
) -> None:
    fake.script(scripted)
    with pytest.raises(RateLimitedError, match="RATE_LIMIT_EXCEEDED") as caught:
        publisher.publish(_post())
    assert caught.value.delay_seconds == delay
    assert fake.notes == []


def test_a_note_over_3000_is_permanent_with_misskeys_error(
    publisher: MisskeyPublisher, fake: FakeMisskey
) -> None:
    with pytest.raises(PermanentPublishError, match=r"INVALID_PARAM.*param=text"):
        publisher.publish(_post("あ" * 3001))
    fake.script(
        FakeMisskey.error(
            400, "CONTAINS_PROHIBITED_WORDS", "Cannot post because it contains prohibited words."
        )
    )
    with pytest.raises(PermanentPublishError, match="CONTAINS_PROHIBITED_WORDS"):
        publisher.publish(_post())
    assert fake.notes == []


def test_a_5xx_may_hide_a_created_note(publisher: MisskeyPublisher, fake: FakeMisskey) -> None:
    fake.script(FakeMisskey.server_error(500))
    with pytest.raises(UnknownOutcomeError, match="INTERNAL_ERROR"):
        publisher.publish(_post())


def test_a_server_that_is_not_misskey_is_transient_and_named(fake: FakeMisskey) -> None:
    publisher = MisskeyPublisher(fake.base_url + "/not-here", TOKEN)
    with pytest.raises(TransientPublishError, match="a Misskey server") as caught:
        publisher.publish(_post())
    assert not isinstance(caught.value, UnknownOutcomeError)


def test_a_refused_connection_sent_nothing() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens
    with pytest.raises(TransientPublishError, match="could not reach") as caught:
        MisskeyPublisher(f"http://127.0.0.1:{port}", TOKEN, timeout=(0.5, 0.5)).publish(_post())
    assert not isinstance(caught.value, UnknownOutcomeError)
    assert_no_token(caught.value)


def test_a_server_that_never_answers_is_an_unknown_outcome() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host, port = silent.getsockname()
        with pytest.raises(UnknownOutcomeError, match="in time") as caught:
            MisskeyPublisher(f"http://{host}:{port}", TOKEN, timeout=(0.5, 0.5)).publish(_post())
    assert_no_token(caught.value)


# --- length, markup and rendering --------------------------------------------------


def entry(**overrides: Any) -> EntryMessage:
    fields: dict[str, Any] = {
        "source": "example",
        "entry_id": "00123",
        "title": "星の欠片",
        "url": URL,
        "comment": "",
        "fetched_at": FETCHED,
    }
    fields.update(overrides)
    return EntryMessage(**fields)


HOSTILE_TITLE = "**太字** $[x2 大] :awesome: <center>c</center> [x](https://evil.example)"


def test_escape_mfm_wraps_a_field_in_plain_and_breaks_a_closing_tag() -> None:
    assert escape_mfm("") == ""  # an empty field stays empty: its segment can be dropped
    assert escape_mfm("★10 ｶｵｽ・ｵﾌﾞ [ANOTHER]") == "<plain>★10 ｶｵｽ・ｵﾌﾞ [ANOTHER]</plain>"
    assert escape_mfm("星の欠片 SP") == "星の欠片 SP"  # nothing MFM reads: shown as written
    assert escape_mfm("BMS 検索").startswith("<plain>")  # a search box's keyword at the end
    for title in ("a*b*", "x_y_", "~~s~~", "`c`", ":emoji:", "$[x2 a]", "<b>b</b>", "\\(x\\)"):
        assert live_mfm(escape_mfm(title)) == [], title
    escaped = escape_mfm("x</plain>**y**")
    assert escaped.count("</plain>") == 1 and escaped.endswith("</plain>")
    assert live_mfm(escaped) == []
    assert ("bold", "**y**") in live_mfm("<plain>x</plain>**y**</plain>")  # what the break prevents


def test_note_length_counts_utf16_units() -> None:
    assert note_length("日本語") == 3
    assert note_length("🎵") == 2
    assert misskey.RULES.limit == 3000 and misskey.RULES.network == "misskey"


def test_scraped_mfm_posts_inert(publisher: MisskeyPublisher, fake: FakeMisskey) -> None:
    message = entry(title=f"{HOSTILE_TITLE} @everyone@misskey.io #tag", comment="> 引用 検索")
    unescaped = replace(misskey.RULES, escape=lambda value: value)
    # The fake's check sees the markup when nothing escapes it...
    raw = render_post(message, template=DEFAULT_TEMPLATE, include_link=True, rules=unescaped)
    assert {kind for kind, _ in live_mfm(raw.text)} >= {"bold", "emoji", "tag", "link"}
    assert ("url", "https://evil.example)") in live_mfm(raw.text)

    post = render_post(message, template=DEFAULT_TEMPLATE, include_link=True, rules=misskey.RULES)
    assert "$[" not in post.text and "＄[" in post.text  # the renderer's full-width dollar
    publisher.publish(_post(post.text))
    # ...and only the entry URL once each field is in <plain>.
    assert fake.notes[0]["mfm"] == [("url", URL)]
    assert post.link is not None and post.text[post.link[0] : post.link[1]] == URL


def test_a_field_cannot_close_its_own_plain(publisher: MisskeyPublisher, fake: FakeMisskey) -> None:
    post = render_post(
        entry(title="a</plain>**b** :awesome:"),
        template="{title} {url}",
        include_link=True,
        rules=misskey.RULES,
    )
    publisher.publish(_post(post.text))
    assert fake.notes[0]["mfm"] == [("url", URL)]


def test_a_long_japanese_post_fits_3000_with_the_url_whole(
    publisher: MisskeyPublisher, fake: FakeMisskey
) -> None:
    long_url = URL + "&name=" + "x" * 200
    post = render_post(
        entry(title="星の欠片" * 500, comment="差分です。" * 800, url=long_url),
        template=DEFAULT_TEMPLATE,
        include_link=True,
        rules=misskey.RULES,
    )
    assert 2990 <= note_length(post.text) <= 3000  # fitted to Misskey's 3,000
    assert post.link is not None and post.text[post.link[0] : post.link[1]] == long_url
    assert post.text.endswith(long_url) and post.text.count("…") == 2
    publisher.publish(_post(post.text))
    assert fake.notes[0]["text"] == post.text and fake.notes[0]["mfm"] == [("url", long_url)]


# --- the module contract, with the token from SSM (moto server over HTTP) ---------


class Sessions:
    def load(self, destination: str) -> dict[str, str] | None:
        return None

    def save(self, destination: str, session: dict[str, str]) -> None:
        pass


def test_the_destination_posts_with_the_token_from_ssm(ssm: SSMClient, fake: FakeMisskey) -> None:
    ssm.put_parameter(
        Name="/bmsuploader/destinations/misskey-io/token", Value=TOKEN + "\n", Type="SecureString"
    )
    settings = PosterSettings.from_env(
        {
            "TABLE_NAME": "state",
            "QUEUE_URL": "http://q",
            "DLQ_URL": "http://dlq",
            "IDEMPOTENCY_TABLE": "idem",
            "X_PARAMETER_PATH": "/bmsuploader/x",
            "NETWORK_BASE_URLS": json.dumps({"misskey": fake.base_url}),
        }
    )
    destination = Destination(
        name="misskey-io",
        kind="misskey",
        instance="https://misskey.io",
        secret="/bmsuploader/destinations/misskey-io",
        visibility="unlisted",
    )
    context = NetworkContext(sessions=Sessions(), base_urls=settings.network_base_urls)
    publisher = destinations.publisher_for(settings, destination, context)
    assert destinations.rules_for("misskey") is misskey.RULES
    assert publisher.publish(_post()).tweet_id == fake.notes[0]["id"]
    assert fake.notes[0]["visibility"] == "home"
    assert fake.requests[0].token == TOKEN  # stripped of the pasted newline
    assert TOKEN not in repr(publisher)
