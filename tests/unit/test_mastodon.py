"""The Mastodon edge, proved over real HTTP: MastodonPublisher -> requests -> FakeMastodon on loopback.

Nothing in requests is mocked; only the server differs from production. The token comes
from SSM on a moto server, also over HTTP, in the test that goes through
:func:`bmsuploader.post.destinations.publisher_for`.
"""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mypy_boto3_ssm import SSMClient

from bmsuploader.config.destinations import Destination
from bmsuploader.config.templates import DEFAULT_TEMPLATE
from bmsuploader.contract import clock as contract_clock
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
from bmsuploader.post.networks import mastodon
from bmsuploader.post.networks.base import NetworkContext, PostRequest, PublishResult, post_key
from bmsuploader.post.networks.mastodon import MastodonPublisher, content_text, status_length
from bmsuploader.post.rendering import render_post
from bmsuploader_local.fake_mastodon import FakeMastodon
from bmsuploader_local.loopback import Scripted

TOKEN = "mastodon-LEAKCHECK-token-6d1f"
FETCHED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
URL = "https://uploader.example.jp/bms/upload.cgi?get=00123"


class Clock:
    """One clock for the fake and the publisher, moved by the test."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _post(
    text: str = "【新着差分】星の欠片 / https://uploader.example.jp/bms/upload.cgi?get=00123", **kw: Any
) -> PostRequest:
    fields: dict[str, Any] = {
        "text": text,
        "link": None,
        "key": post_key("mstdn", "example", "00123"),
        "created_at": FETCHED,
    }
    fields.update(kw)
    return PostRequest(**fields)


def assert_no_token(exc: BaseException) -> None:
    logged = "".join(traceback.format_exception(exc))
    assert TOKEN not in str(exc)
    assert TOKEN not in logged


@pytest.fixture
def clock() -> Clock:
    return Clock(FETCHED + timedelta(minutes=5))


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeMastodon]:
    with FakeMastodon(token=TOKEN) as server:
        server.now = clock
        yield server


@pytest.fixture
def publisher(fake: FakeMastodon, clock: Clock) -> MastodonPublisher:
    return MastodonPublisher(
        fake.base_url,
        TOKEN,
        parameter="/bmsuploader/destinations/mstdn/access_token",
        clock=clock,
        timeout=(2, 5),
    )


def posts_to_statuses(fake: FakeMastodon) -> list[str]:
    return [r.path for r in fake.requests if r.method == "POST"]


# --- posting ------------------------------------------------------------------


def test_a_post_is_a_status_with_the_bearer_token_and_visibility(
    publisher: MastodonPublisher, fake: FakeMastodon
) -> None:
    result = publisher.publish(_post())
    assert result == PublishResult(tweet_id=fake.statuses[0]["id"])
    assert fake.statuses[0]["text"] == _post().text
    assert fake.statuses[0]["visibility"] == "public"
    assert fake.requests[0].authorization == f"Bearer {TOKEN}"


@pytest.mark.parametrize(("ours", "theirs"), [("unlisted", "unlisted"), ("followers", "private")])
def test_visibility_is_mapped(fake: FakeMastodon, ours: str, theirs: str) -> None:
    MastodonPublisher(fake.base_url, TOKEN, visibility=ours).publish(_post())
    assert fake.statuses[0]["visibility"] == theirs


def test_the_idempotency_key_is_the_posts_key_on_every_attempt(
    publisher: MastodonPublisher, fake: FakeMastodon
) -> None:
    fake.script(FakeMastodon.server_error(503))
    with pytest.raises(TransientPublishError):
        publisher.publish(_post())
    publisher.publish(_post())
    other = _post("another entry", key=post_key("mstdn", "example", "00124"))
    publisher.publish(other)
    keys = [r.idempotency_key for r in fake.requests]
    assert keys == [_post().key, _post().key, other.key]
    assert len(set(keys)) == 2 and len(keys[0] or "") == 64


def test_a_repeated_key_within_the_hour_is_the_same_status(
    publisher: MastodonPublisher, fake: FakeMastodon
) -> None:
    first = publisher.publish(_post())
    assert publisher.publish(_post()) == first
    assert len(fake.statuses) == 1


def test_the_fakes_responder_answers_when_nothing_is_scripted(
    publisher: MastodonPublisher, fake: FakeMastodon
) -> None:
    # How the fault test runs an outage window in virtual time: a script comes first.
    down = True
    fake.responder = lambda text: FakeMastodon.server_error(503) if down else None
    fake.script(FakeMastodon.normal())
    assert publisher.publish(_post()).duplicate is False
    with pytest.raises(UnknownOutcomeError):
        publisher.publish(_post("another entry", key=post_key("mstdn", "example", "00124")))
    down = False
    publisher.publish(_post("another entry", key=post_key("mstdn", "example", "00124")))
    assert [r.status for r in fake.requests] == [200, 503, 200]
    assert [s["text"] for s in fake.statuses] == [_post().text, "another entry"]


# --- a crash after Mastodon accepted the post ---------------------------------


def test_crash_after_accept_then_retry_within_the_hour_posts_nothing_new(
    publisher: MastodonPublisher, fake: FakeMastodon
) -> None:
    fake.script(FakeMastodon.accept_then_drop())
    with pytest.raises(UnknownOutcomeError) as caught:
        publisher.publish(_post())
    assert_no_token(caught.value)
    assert len(fake.statuses) == 1

    result = publisher.publish(_post(maybe_posted=True))
    assert result.tweet_id == fake.statuses[0]["id"]
    assert len(fake.statuses) == 1
    # Within the key's hour the key alone answers: no read of the account.
    assert [r.path for r in fake.requests] == ["/api/v1/statuses", "/api/v1/statuses"]


def test_the_publisher_reads_the_pipelines_clock(fake: FakeMastodon, clock: Clock) -> None:
    # contract.clock is the one clock (the fault test makes it virtual): by it the retry is
    # within the key's hour, so the key alone answers; by the system clock it would not be.
    publisher = MastodonPublisher(fake.base_url, TOKEN)
    fake.script(FakeMastodon.accept_then_drop())
    contract_clock.use(clock)
    try:
        with pytest.raises(UnknownOutcomeError):
            publisher.publish(_post())
        assert publisher.publish(_post(maybe_posted=True)).tweet_id == fake.statuses[0]["id"]
    finally:
        contract_clock.use(None)
    assert [r.path for r in fake.requests] == ["/api/v1/statuses", "/api/v1/statuses"]


def test_crash_after_accept_then_retry_after_the_hour_is_found_by_the_check(
    publisher: MastodonPublisher, fake: FakeMastodon, clock: Clock
) -> None:
    text = "【新着差分】A & B <c>\n♯x https://uploader.example.jp/bms/upload.cgi?get=00123&download=1 #BMS"
    fake.script(FakeMastodon.accept_then_drop())
    with pytest.raises(UnknownOutcomeError):
        publisher.publish(_post(text))
    clock.now += timedelta(hours=2)  # Mastodon has forgotten the key

    result = publisher.publish(_post(text, maybe_posted=True))
    assert result == PublishResult(tweet_id=fake.statuses[0]["id"], duplicate=True)
    assert len(fake.statuses) == 1
    assert posts_to_statuses(fake) == ["/api/v1/statuses"]


def test_after_the_hour_only_the_check_stops_a_second_post(
    publisher: MastodonPublisher, fake: FakeMastodon, clock: Clock
) -> None:
    # The control for the test above: without maybe_posted the expired key lets a repeat through.
    fake.script(FakeMastodon.accept_then_drop())
    with pytest.raises(UnknownOutcomeError):
        publisher.publish(_post())
    clock.now += timedelta(hours=2)
    assert publisher.publish(_post()).duplicate is False
    assert len(fake.statuses) == 2


def test_the_check_posts_when_the_earlier_attempt_did_not(
    publisher: MastodonPublisher, fake: FakeMastodon, clock: Clock
) -> None:
    # An identical status from before the entry was fetched is not ours for this entry.
    fake.add_status(_post().text, created_at=FETCHED - timedelta(days=3))
    clock.now += timedelta(hours=2)
    result = publisher.publish(_post(maybe_posted=True))
    assert result.duplicate is False
    assert len(fake.statuses) == 2
    assert result.tweet_id == fake.statuses[1]["id"]


def test_the_check_pages_back_past_newer_statuses(
    publisher: MastodonPublisher, fake: FakeMastodon, clock: Clock
) -> None:
    target = fake.add_status(_post().text, created_at=FETCHED + timedelta(minutes=6))
    for n in range(45):
        fake.add_status(f"later {n}", created_at=FETCHED + timedelta(minutes=10 + n))
    clock.now += timedelta(hours=2)
    assert publisher.publish(_post(maybe_posted=True)) == PublishResult(tweet_id=target, duplicate=True)
    reads = [r.path for r in fake.requests if "/statuses?" in r.path]
    assert len(reads) == 2 and "max_id=" in reads[1]


def test_the_check_reads_on_past_a_server_that_sends_short_pages(
    publisher: MastodonPublisher, fake: FakeMastodon, clock: Clock
) -> None:
    fake.max_page = 10  # fewer than the 40 asked for: a short page is not the last one
    target = fake.add_status(_post().text, created_at=FETCHED + timedelta(minutes=6))
    for n in range(15):
        fake.add_status(f"later {n}", created_at=FETCHED + timedelta(minutes=10 + n))
    clock.now += timedelta(hours=2)
    assert publisher.publish(_post(maybe_posted=True)) == PublishResult(tweet_id=target, duplicate=True)
    assert len(fake.statuses) == 16


def test_the_check_gives_up_when_too_much_was_posted_since(
    publisher: MastodonPublisher, fake: FakeMastodon, clock: Clock
) -> None:
    for n in range(5 * 40 + 1):
        fake.add_status(f"later {n}", created_at=FETCHED + timedelta(minutes=1, seconds=n))
    clock.now += timedelta(hours=2)
    with pytest.raises(MaybePostedError, match="redrive"):
        publisher.publish(_post(maybe_posted=True))
    assert posts_to_statuses(fake) == []


def test_a_token_that_cannot_read_its_statuses_fails_the_check(clock: Clock) -> None:
    with FakeMastodon(token=TOKEN, scopes=frozenset({"write:statuses"})) as fake:
        fake.now = clock
        publisher = MastodonPublisher(fake.base_url, TOKEN, clock=clock)
        assert publisher.publish(_post()).tweet_id  # posting needs only write:statuses
        clock.now += timedelta(hours=2)
        with pytest.raises(AuthError, match="read:accounts and read:statuses") as caught:
            publisher.publish(_post(maybe_posted=True))
        assert_no_token(caught.value)
        assert len(fake.statuses) == 1


def test_content_text_gives_back_the_text_of_mastodon_html() -> None:
    html = (
        '<p>A &amp; B<br /><a href="https://e.jp/x" rel="nofollow noopener" translate="no">'
        '<span class="invisible">https://</span><span class="ellipsis">e.jp/aaaaaaaaa</span>'
        '<span class="invisible">bbbb</span></a></p>'
        '<p><a class="mention hashtag" rel="tag">#<span>BMS</span></a></p>'
    )
    assert content_text(html).split() == ["A", "&", "B", "https://e.jp/aaaaaaaaabbbb", "#BMS"]


# --- errors -------------------------------------------------------------------


def test_a_wrong_token_is_an_auth_error_naming_the_fix_not_the_token(fake: FakeMastodon) -> None:
    publisher = MastodonPublisher(
        fake.base_url, TOKEN + "-wrong", parameter="/bmsuploader/destinations/mstdn/access_token"
    )
    with pytest.raises(AuthError) as caught:
        publisher.publish(_post())
    message = str(caught.value)
    assert "401" in message and "Preferences > Development" in message and "write:statuses" in message
    assert "/bmsuploader/destinations/mstdn/access_token" in message
    assert TOKEN not in message and TOKEN not in "".join(traceback.format_exception(caught.value))
    assert fake.statuses == []


def test_a_token_without_write_statuses_is_an_auth_error() -> None:
    with FakeMastodon(token=TOKEN, scopes=frozenset({"read"})) as fake:
        with pytest.raises(AuthError, match="lacks write:statuses") as caught:
            MastodonPublisher(fake.base_url, TOKEN).publish(_post())
        assert_no_token(caught.value)


def test_429_waits_until_x_ratelimit_reset(
    publisher: MastodonPublisher, fake: FakeMastodon, clock: Clock
) -> None:
    fake.script(FakeMastodon.rate_limited(clock.now + timedelta(seconds=120, milliseconds=300)))
    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(_post())
    assert caught.value.delay_seconds == 121
    fake.script(FakeMastodon.rate_limited(None))
    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(_post())
    assert caught.value.delay_seconds == mastodon.DEFAULT_RATE_LIMIT_DELAY == 300
    assert fake.statuses == []


@pytest.mark.parametrize(
    ("instance_api", "expected", "reads"), [("v2", 400, 1), ("v1", 400, 2), ("none", 500, 2)]
)
def test_422_is_permanent_with_mastodons_text_and_the_servers_limit(
    clock: Clock, instance_api: str, expected: int, reads: int
) -> None:
    with FakeMastodon(token=TOKEN, max_characters=400, instance_api=instance_api) as fake:
        publisher = MastodonPublisher(fake.base_url, TOKEN, clock=clock)
        for _ in range(2):
            with pytest.raises(PermanentPublishError) as caught:
                publisher.publish(_post("あ" * 450))
        message = str(caught.value)
        assert "422" in message and "Text character limit of 400 exceeded" in message
        assert f"allows {expected} characters" in message
        assert ("shorten the destination's template" in message) == (expected < 500)
        # Read once per publisher (per container), however many posts are refused: v2, then v1.
        assert sum("/instance" in r.path for r in fake.requests) == reads
        assert fake.statuses == []


def test_a_5xx_may_hide_an_accepted_post(publisher: MastodonPublisher, fake: FakeMastodon) -> None:
    fake.script(FakeMastodon.server_error(502))
    with pytest.raises(UnknownOutcomeError, match="502"):
        publisher.publish(_post())


def test_a_server_that_is_not_mastodon_is_transient_and_named(fake: FakeMastodon) -> None:
    publisher = MastodonPublisher(fake.base_url + "/not-here", TOKEN)
    with pytest.raises(TransientPublishError, match="a Mastodon server") as caught:
        publisher.publish(_post())
    assert not isinstance(caught.value, UnknownOutcomeError)


def test_a_redirect_is_not_followed_and_names_the_new_address(
    publisher: MastodonPublisher, fake: FakeMastodon
) -> None:
    fake.script(Scripted(status=301, headers={"Location": "https://social.example/api/v1/statuses"}))
    with pytest.raises(TransientPublishError, match=r"redirected to https://social\.example") as caught:
        publisher.publish(_post())
    assert not isinstance(caught.value, UnknownOutcomeError)  # nothing was posted
    assert [r.method for r in fake.requests] == ["POST"]


def test_a_refused_connection_sent_nothing() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens
    with pytest.raises(TransientPublishError, match="could not reach") as caught:
        MastodonPublisher(f"http://127.0.0.1:{port}", TOKEN, timeout=(0.5, 0.5)).publish(_post())
    assert not isinstance(caught.value, UnknownOutcomeError)
    assert_no_token(caught.value)


def test_a_server_that_never_answers_is_an_unknown_outcome() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host, port = silent.getsockname()
        with pytest.raises(UnknownOutcomeError, match="in time") as caught:
            MastodonPublisher(f"http://{host}:{port}", TOKEN, timeout=(0.5, 0.5)).publish(_post())
    assert_no_token(caught.value)


# --- length and rendering ----------------------------------------------------------


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


def test_status_length_counts_urls_as_23_and_never_less_than_mastodon() -> None:
    assert status_length("日本語") == 3
    assert status_length("a https://example.com/" + "x" * 100) == 2 + 23
    assert status_length("https://example.com/") == 23  # shorter URLs count 23 too
    assert status_length("https://example.com/a=") == 24  # Mastodon ends the URL before "="
    assert status_length("http://127.0.0.1/ x") == 25  # no TLD for X's rules: still 23 at least
    assert status_length("http://127.0.0.1:8765/" + "p" * 30) == 52
    assert mastodon.RULES.limit == 500 and mastodon.RULES.network == "mastodon"


def test_a_long_japanese_title_fits_500_with_the_url_whole(
    publisher: MastodonPublisher, fake: FakeMastodon
) -> None:
    long_url = URL + "&name=" + "x" * 120
    post = render_post(
        entry(title="星の欠片" * 200, comment="差分です" * 50, url=long_url),
        template=DEFAULT_TEMPLATE,
        include_link=True,
        rules=mastodon.RULES,
    )
    assert 490 <= status_length(post.text) <= 500  # fitted to Mastodon's 500, not X's 280
    assert post.weighted_length == status_length(post.text)
    assert post.link is not None and post.text[post.link[0] : post.link[1]] == long_url
    assert post.text.endswith(long_url) and "…" in post.text
    publisher.publish(_post(post.text))
    assert long_url in content_text(fake.statuses[0]["content"])


def test_mentions_and_hashtags_in_scraped_text_are_inert(
    publisher: MastodonPublisher, fake: FakeMastodon
) -> None:
    hostile = "@everyone@mastodon.social #tag ＠admin ＃拡散希望"
    # The fake sees mentions and tags where Mastodon would: in the raw title.
    publisher.publish(_post(f"raw {hostile}", key="1" * 64))
    assert fake.statuses[0]["mentions"] and fake.statuses[0]["tags"]

    post = render_post(
        entry(title=hostile), template="{title} #BMS {url}", include_link=True, rules=mastodon.RULES
    )
    publisher.publish(_post(post.text))
    status = fake.statuses[1]
    assert status["mentions"] == []
    assert [tag["name"] for tag in status["tags"]] == ["BMS"]  # the template's own tag stays live


# --- the module contract, with the token from SSM (moto server over HTTP) ---------


class Sessions:
    def load(self, destination: str) -> dict[str, str] | None:
        return None

    def save(self, destination: str, session: dict[str, str]) -> None:
        pass


def _poster_settings(fake: FakeMastodon) -> PosterSettings:
    return PosterSettings.from_env(
        {
            "TABLE_NAME": "state",
            "QUEUE_URL": "http://q",
            "DLQ_URL": "http://dlq",
            "IDEMPOTENCY_TABLE": "idem",
            "X_PARAMETER_PATH": "/bmsuploader/x",
            "NETWORK_BASE_URLS": json.dumps({"mastodon": fake.base_url}),
        }
    )


def test_the_destination_posts_with_the_token_from_ssm(ssm: SSMClient, fake: FakeMastodon) -> None:
    ssm.put_parameter(
        Name="/bmsuploader/destinations/mstdn/access_token", Value=TOKEN + "\n", Type="SecureString"
    )
    settings = _poster_settings(fake)
    destination = Destination(
        name="mstdn",
        kind="mastodon",
        instance="https://mastodon.example",
        secret="/bmsuploader/destinations/mstdn",
        visibility="unlisted",
    )
    context = NetworkContext(sessions=Sessions(), base_urls=settings.network_base_urls)
    publisher = destinations.publisher_for(settings, destination, context)
    assert destinations.rules_for("mastodon") is mastodon.RULES
    result = publisher.publish(_post())
    assert result.tweet_id == fake.statuses[0]["id"]
    assert fake.statuses[0]["visibility"] == "unlisted"
    assert TOKEN not in repr(publisher)


def test_a_missing_token_parameter_names_it_and_where_the_token_comes_from(
    ssm: SSMClient, fake: FakeMastodon
) -> None:
    destination = Destination(
        name="mstdn2",
        kind="mastodon",
        instance="https://m.example",
        secret="/bmsuploader/destinations/mstdn2",
    )
    context = NetworkContext(sessions=Sessions())
    with pytest.raises(AuthError) as caught:
        destinations.publisher_for(_poster_settings(fake), destination, context)
    message = str(caught.value)
    assert "/bmsuploader/destinations/mstdn2/access_token" in message and "write:statuses" in message
