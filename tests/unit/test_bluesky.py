"""The Bluesky edge, proved over real HTTP: BlueskyPublisher -> requests -> FakeBluesky on loopback.

Nothing in requests is mocked; only the server differs from production. Sessions are
kept in a dict here, and in the state table on a moto server (over HTTP) in the last
tests, which also read the secrets from SSM the way the poster does.
"""

from __future__ import annotations

import re
import socket
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters

from bmsuploader.config.destinations import Destination
from bmsuploader.contract import clock as contract_clock
from bmsuploader.contract.errors import (
    AuthError,
    ConfigError,
    PermanentPublishError,
    RateLimitedError,
    TransientPublishError,
    UnknownOutcomeError,
)
from bmsuploader.contract.message import EntryMessage
from bmsuploader.post import destinations
from bmsuploader.post.networks import bluesky
from bmsuploader.post.networks.base import NetworkContext, PostRequest, PublishResult, post_key
from bmsuploader.post.networks.bluesky import (
    CREATE_RECORD,
    CREATE_SESSION,
    GET_RECORD,
    REFRESH_SESSION,
    BlueskyPublisher,
    grapheme_count,
    tid_for,
)
from bmsuploader.post.rendering import render_post
from bmsuploader_local.fake_bluesky import FakeBluesky
from bmsuploader_local.loopback import Scripted

TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
NOW = 1_800_000_000.0
FETCHED = datetime(2026, 11, 29, 3, 4, 5, 678_901, tzinfo=UTC)
#: Distinctive, so a leak into any message or traceback is easy to spot.
PASSWORD = "leak-chec-kpas-sw0d"
URL = "https://uploader.example.jp/up/%E6%98%9F%E3%81%AE%E6%AC%A0%E7%89%87.zip?dl=1"
JAPANESE = (
    f"【新着差分】星の欠片 ～Fragments of Stars～ [ANOTHER★12] / 発狂難易度の差分です🎹 / {URL} / 作者: かな゙"
)


class MemorySessions:
    """A SessionStore in a dict; counts saves."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, str]] = {}
        self.saves = 0

    def load(self, destination: str) -> dict[str, str] | None:
        found = self.stored.get(destination)
        return dict(found) if found else None

    def save(self, destination: str, session: dict[str, str]) -> None:
        self.saves += 1
        self.stored[destination] = dict(session)


def post(
    text: str = JAPANESE,
    *,
    entry: str = "1",
    maybe_posted: bool = False,
    created_at: datetime = FETCHED,
) -> PostRequest:
    start = text.find(URL)
    return PostRequest(
        text=text,
        link=(start, start + len(URL)) if start >= 0 else None,
        key=post_key("bsky", "uploader", entry),
        created_at=created_at,
        maybe_posted=maybe_posted,
    )


def assert_no_secrets(exc: BaseException, *tokens: str) -> None:
    """Neither the message nor the whole logged traceback (with causes) has a secret."""
    logged = "".join(traceback.format_exception(exc))
    for secret in (PASSWORD, *tokens):
        assert secret not in str(exc)
        assert secret not in logged
    assert "Bearer" not in logged


@pytest.fixture
def fake() -> Iterator[FakeBluesky]:
    with FakeBluesky(app_password=PASSWORD) as running:
        yield running


@pytest.fixture
def sessions() -> MemorySessions:
    return MemorySessions()


def publisher_for(fake: FakeBluesky, sessions: Any, *, password: str = PASSWORD) -> BlueskyPublisher:
    return BlueskyPublisher(
        destination="bsky",
        identifier=fake.handle,
        app_password=password,
        base_url=fake.base_url,
        sessions=sessions,
        timeout=(2.0, 5.0),
        secret_path="/bmsuploader/destinations/bsky",
        clock=lambda: NOW,
    )


@pytest.fixture
def publisher(fake: FakeBluesky, sessions: MemorySessions) -> BlueskyPublisher:
    return publisher_for(fake, sessions)


# --- the post -------------------------------------------------------------------


def test_a_post_is_a_record_under_its_tid_with_the_at_uri_as_id(
    publisher: BlueskyPublisher, fake: FakeBluesky
) -> None:
    contract_clock.use(lambda: datetime(2026, 11, 29, 9, 30, tzinfo=UTC))  # hours after the fetch
    try:
        result = publisher.publish(post())
    finally:
        contract_clock.use(None)
    [stored] = fake.posts
    assert result == PublishResult(tweet_id=f"at://{fake.did}/app.bsky.feed.post/{tid_for(post())}")
    assert stored["uri"] == result.tweet_id
    record = stored["record"]
    assert record["$type"] == "app.bsky.feed.post"
    assert record["text"] == JAPANESE
    assert record["createdAt"] == "2026-11-29T09:30:00.000Z"  # when posted: never backdated
    assert record["langs"] == ["ja"]  # the post has kana


def test_the_link_facet_covers_exactly_the_urls_bytes_in_japanese_text(
    publisher: BlueskyPublisher, fake: FakeBluesky
) -> None:
    publisher.publish(post())
    record = fake.posts[0]["record"]
    [facet] = record["facets"]
    start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
    raw = record["text"].encode("utf-8")
    assert raw[start:end].decode("utf-8") == URL
    assert start == len(JAPANESE[: JAPANESE.index(URL)].encode())  # bytes, not characters
    assert start != JAPANESE.index(URL)
    assert facet["features"] == [{"$type": "app.bsky.richtext.facet#link", "uri": URL}]


def test_scraped_text_gets_no_facet_and_a_post_without_link_none(
    publisher: BlueskyPublisher, fake: FakeBluesky
) -> None:
    text = "@someone.bsky.social #BMS https://example.com/not-the-entry"  # no entry link span
    publisher.publish(PostRequest(text, None, "a" * 64, FETCHED))
    record = fake.posts[0]["record"]
    assert "facets" not in record  # only facets make mentions, tags and links live
    assert "langs" not in record  # no kana: shown to readers of every language


def test_the_record_key_is_a_valid_tid_stable_and_distinct() -> None:
    first = tid_for(post())
    assert TID.match(first)
    assert tid_for(post()) == first  # every attempt
    assert tid_for(post(maybe_posted=True)) == first
    # Every entry of one fetch run shares created_at: the key alone must tell them apart.
    keys = {tid_for(post(entry=str(n))) for n in range(2000)}
    assert len(keys) == 2000
    assert all(TID.match(key) for key in keys)
    other_destination = PostRequest("t", None, post_key("bsky2", "uploader", "1"), FETCHED)
    assert tid_for(other_destination) != first


def test_the_tids_time_is_the_second_before_the_fetch() -> None:
    for entry in ("1", "2", "3"):
        value = sum(
            bluesky.TID_ALPHABET.index(c) << (5 * (12 - i)) for i, c in enumerate(tid_for(post(entry=entry)))
        )
        moment = datetime.fromtimestamp((value >> 10) / 1_000_000, UTC)
        assert (
            FETCHED.replace(microsecond=0) - timedelta(seconds=1) <= moment < FETCHED.replace(microsecond=0)
        )
    naive = post(created_at=FETCHED.replace(tzinfo=None))
    assert tid_for(naive) == tid_for(post())  # a naive time is UTC


def test_tid_encoding_matches_the_reference_implementations() -> None:
    # @atcute/tid's README: TID.create(1724171495793000, 512) -> "3l25zusnsfck2"
    assert bluesky.encode_tid(1_724_171_495_793_000, 512) == "3l25zusnsfck2"
    assert bluesky.encode_tid(0, 0) == "2222222222222"  # the spec's zero
    assert TID.match(bluesky.encode_tid(2**53 - 1, 1023))
    with pytest.raises(ValueError, match="out of range"):
        bluesky.encode_tid(2**53, 0)


# --- exactly once ---------------------------------------------------------------


def test_a_crash_after_the_pds_took_the_post_is_found_on_the_retry(
    publisher: BlueskyPublisher, fake: FakeBluesky
) -> None:
    fake.script(FakeBluesky.accept_then_drop())
    with pytest.raises(UnknownOutcomeError) as caught:
        publisher.publish(post())
    assert_no_secrets(caught.value)
    assert len(fake.posts) == 1  # it did post
    again = publisher.publish(post(maybe_posted=True))
    assert again == PublishResult(tweet_id=fake.posts[0]["uri"], duplicate=True)
    assert len(fake.posts) == 1
    assert len(fake.calls(CREATE_RECORD)) == 1  # found with getRecord, never sent again
    assert [c.status for c in fake.calls(GET_RECORD)] == [200]


def test_a_retry_that_forgot_it_may_have_posted_is_still_a_duplicate(
    publisher: BlueskyPublisher, fake: FakeBluesky
) -> None:
    fake.script(FakeBluesky.accept_then_drop())
    with pytest.raises(UnknownOutcomeError):
        publisher.publish(post())
    # maybe_posted lost: the repeated record key answers 500, getRecord finds the post
    assert publisher.publish(post()) == PublishResult(tweet_id=fake.posts[0]["uri"], duplicate=True)
    assert len(fake.posts) == 1
    assert [c.status for c in fake.calls(CREATE_RECORD)] == [None, 500]


def test_maybe_posted_with_nothing_there_posts_once(publisher: BlueskyPublisher, fake: FakeBluesky) -> None:
    result = publisher.publish(post(maybe_posted=True))
    assert not result.duplicate
    assert [c.status for c in fake.calls(GET_RECORD)] == [400]  # RecordNotFound
    assert len(fake.posts) == 1


def test_another_post_at_our_key_is_a_collision_not_done(
    publisher: BlueskyPublisher, fake: FakeBluesky
) -> None:
    fake.preload_post(tid_for(post()), "a different entry's post")
    with pytest.raises(PermanentPublishError, match="already holds a different post"):
        publisher.publish(post())
    assert [p["text"] for p in fake.posts] == ["a different entry's post"]


def test_a_5xx_with_nothing_at_our_key_is_transient(publisher: BlueskyPublisher, fake: FakeBluesky) -> None:
    fake.script(FakeBluesky.server_error(503))
    with pytest.raises(TransientPublishError, match="503") as caught:
        publisher.publish(post())
    assert type(caught.value) is TransientPublishError
    assert [c.status for c in fake.calls(GET_RECORD)] == [400]  # looked, nothing there
    assert fake.posts == []
    assert publisher.publish(post()).tweet_id is not None  # the next attempt posts


# --- sessions -------------------------------------------------------------------


def test_one_login_serves_many_posts_and_cold_starts(fake: FakeBluesky, sessions: MemorySessions) -> None:
    for entry in range(5):  # a new publisher each time: a new container
        publisher_for(fake, sessions).publish(post(entry=str(entry)))
    assert fake.create_session_calls == 1
    assert len(fake.posts) == 5
    stored = sessions.stored["bsky"]
    assert set(stored) == {"accessJwt", "refreshJwt", "did", "handle", "identifier"}
    assert stored["did"] == fake.did


def test_an_expired_access_token_is_refreshed_not_logged_in_again(
    fake: FakeBluesky, sessions: MemorySessions
) -> None:
    publisher_for(fake, sessions).publish(post(entry="1"))
    before = sessions.stored["bsky"]
    fake.expire_access_tokens()
    publisher_for(fake, sessions).publish(post(entry="2"))  # a cold start with the stored session
    assert (fake.create_session_calls, fake.refresh_session_calls) == (1, 1)
    assert [c.status for c in fake.calls(CREATE_RECORD)] == [200, 400, 200]  # ExpiredToken, then sent again
    after = sessions.stored["bsky"]
    assert after["accessJwt"] != before["accessJwt"] and after["refreshJwt"] != before["refreshJwt"]
    assert len(fake.posts) == 2


def test_access_tokens_that_expire_by_time_are_refreshed(sessions: MemorySessions) -> None:
    now = [0.0]
    with FakeBluesky(app_password=PASSWORD, access_ttl=60, clock=lambda: now[0]) as fake:
        publisher = publisher_for(fake, sessions)
        publisher.publish(post(entry="1"))
        now[0] = 61.0
        publisher.publish(post(entry="2"))  # the same container, its session in memory
        assert (fake.create_session_calls, fake.refresh_session_calls) == (1, 1)


def test_a_refused_refresh_logs_in_again(fake: FakeBluesky, sessions: MemorySessions) -> None:
    publisher = publisher_for(fake, sessions)
    publisher.publish(post(entry="1"))
    fake.revoke_sessions()
    publisher.publish(post(entry="2"))
    assert (fake.create_session_calls, fake.refresh_session_calls) == (2, 1)
    assert [c.status for c in fake.calls(REFRESH_SESSION)] == [400]  # the revoked token
    assert len(fake.posts) == 2


def test_a_session_another_container_refreshed_is_used_not_a_login(
    fake: FakeBluesky, sessions: MemorySessions
) -> None:
    first, second = publisher_for(fake, sessions), publisher_for(fake, sessions)
    first.publish(post(entry="1"))
    second.publish(post(entry="2"))  # loads the stored session: both hold the same tokens
    fake.expire_access_tokens()
    first.publish(post(entry="3"))  # refreshes, rotating the refresh token second holds
    second.publish(post(entry="4"))  # its refresh is refused; the stored one works
    assert fake.create_session_calls == 1
    assert len(fake.posts) == 4


def test_a_stored_session_of_another_identifier_is_not_used(
    fake: FakeBluesky, sessions: MemorySessions
) -> None:
    sessions.stored["bsky"] = {
        "accessJwt": "old-account-access",
        "refreshJwt": "old-account-refresh",
        "did": "did:plc:someoneelse",
        "handle": "old.bsky.social",
        "identifier": "old.bsky.social",
    }
    publisher_for(fake, sessions).publish(post())
    assert fake.create_session_calls == 1
    assert fake.posts[0]["uri"].startswith(f"at://{fake.did}/")


def test_a_wrong_app_password_is_an_auth_error_naming_the_fix(
    fake: FakeBluesky, sessions: MemorySessions
) -> None:
    wrong = "wron-gpas-swor-d123"
    with pytest.raises(AuthError) as caught:
        publisher_for(fake, sessions, password=wrong).publish(post())
    message = str(caught.value)
    assert "App passwords" in message and "/bmsuploader/destinations/bsky/app_password" in message
    assert "AuthenticationRequired" in message
    assert wrong not in message and wrong not in "".join(traceback.format_exception(caught.value))
    assert fake.posts == [] and sessions.saves == 0


def test_the_account_password_with_email_2fa_is_named(publisher: BlueskyPublisher, fake: FakeBluesky) -> None:
    fake.script(
        FakeBluesky.unauthorized(
            "AuthFactorTokenRequired", "A sign in code has been sent to your email address"
        ),
        method=CREATE_SESSION,
    )
    with pytest.raises(AuthError, match="not an app password") as caught:
        publisher.publish(post())
    assert_no_secrets(caught.value)


def test_tokens_never_appear_in_errors_or_reprs(
    publisher: BlueskyPublisher, fake: FakeBluesky, sessions: MemorySessions
) -> None:
    publisher.publish(post(entry="1"))
    tokens = (sessions.stored["bsky"]["accessJwt"], sessions.stored["bsky"]["refreshJwt"])
    for shown in (repr(publisher), str(publisher), repr(publisher._session)):
        for secret in (PASSWORD, *tokens):
            assert secret not in shown
    fake.script(FakeBluesky.server_error(500))
    with pytest.raises(TransientPublishError) as caught:
        publisher.publish(post(entry="2"))
    assert_no_secrets(caught.value, *tokens)


# --- every other answer, mapped ---------------------------------------------------


@pytest.mark.parametrize(
    ("scripted", "delay"),
    [
        (FakeBluesky.rate_limited(int(NOW) + 120), 120),
        (FakeBluesky.rate_limited(int(NOW) - 50), 1),
        (FakeBluesky.rate_limited(None, retry_after=300), 300),
        (FakeBluesky.rate_limited(None), bluesky.DEFAULT_RATE_LIMIT_DELAY),
    ],
    ids=["reset-in-two-minutes", "reset-past", "retry-after", "no-header"],
)
def test_429_waits_until_the_reset(
    publisher: BlueskyPublisher, fake: FakeBluesky, scripted: Scripted, delay: int
) -> None:
    fake.script(scripted)
    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(post())
    assert caught.value.delay_seconds == delay
    assert_no_secrets(caught.value)


def test_429_is_read_against_the_pipelines_clock(fake: FakeBluesky, sessions: MemorySessions) -> None:
    # contract.clock is the one clock (the fault test makes it virtual), also for a reset.
    publisher = BlueskyPublisher(
        destination="bsky",
        identifier=fake.handle,
        app_password=PASSWORD,
        base_url=fake.base_url,
        sessions=sessions,
        timeout=(2.0, 5.0),
    )
    fake.script(FakeBluesky.rate_limited(int(NOW) + 120))
    contract_clock.use(lambda: datetime.fromtimestamp(NOW, UTC))
    try:
        with pytest.raises(RateLimitedError) as caught:
            publisher.publish(post())
    finally:
        contract_clock.use(None)
    assert caught.value.delay_seconds == 120


def test_the_fakes_responder_answers_create_record_when_nothing_is_scripted(
    publisher: BlueskyPublisher, fake: FakeBluesky
) -> None:
    # How the fault test runs an outage window in virtual time: a script comes first.
    seen: list[str | None] = []

    def responder(text: str | None) -> Scripted | None:
        seen.append(text)
        return FakeBluesky.server_error(503) if len(seen) == 1 else None

    fake.responder = responder
    fake.script(FakeBluesky.normal())
    publisher.publish(post(entry="1"))
    with pytest.raises(TransientPublishError):
        publisher.publish(post(entry="2"))
    publisher.publish(post(entry="2"))
    assert len(seen) == 2 and seen[0] == post(entry="2").text
    assert [r.status for r in fake.calls(CREATE_RECORD)] == [200, 503, 200]
    assert len(fake.posts) == 2


def test_429_on_login_is_a_rate_limit_that_says_so(publisher: BlueskyPublisher, fake: FakeBluesky) -> None:
    fake.script(FakeBluesky.rate_limited(int(NOW) + 3600), method=CREATE_SESSION)
    with pytest.raises(RateLimitedError, match="logging in") as caught:
        publisher.publish(post())
    assert caught.value.delay_seconds == 3600


@pytest.mark.parametrize(
    ("scripted", "error", "needle"),
    [
        (
            FakeBluesky.bad_request("Invalid app.bsky.feed.post record"),
            PermanentPublishError,
            "Invalid app.bsky",
        ),
        (Scripted(status=413, body={"error": "PayloadTooLarge"}), PermanentPublishError, "413"),
        (FakeBluesky.server_error(500), TransientPublishError, "500"),
        (FakeBluesky.server_error(502), TransientPublishError, "502"),
        (Scripted(status=403, body={"error": "Forbidden", "message": "no"}), AuthError, "403"),
        (Scripted(status=404, body=None), TransientPublishError, "404"),
    ],
    ids=["400", "413", "500", "502", "403", "404"],
)
def test_scripted_answers_map_to_typed_errors(
    publisher: BlueskyPublisher, fake: FakeBluesky, scripted: Scripted, error: type[Exception], needle: str
) -> None:
    fake.script(scripted)
    with pytest.raises(error) as caught:
        publisher.publish(post())
    assert type(caught.value) is error
    assert needle in str(caught.value)
    assert_no_secrets(caught.value)
    assert fake.posts == []


@pytest.mark.parametrize(
    "refusal",
    [FakeBluesky.expired_token(), FakeBluesky.unauthorized("AccountTakedown", "Account has been taken down")],
    ids=["400-ExpiredToken", "401-AccountTakedown"],
)
def test_a_token_refused_twice_is_an_auth_error_after_one_renewal(
    publisher: BlueskyPublisher, fake: FakeBluesky, refusal: Scripted
) -> None:
    fake.script(refusal, refusal)
    with pytest.raises(AuthError, match="fresh session"):
        publisher.publish(post())
    assert fake.refresh_session_calls == 1  # renewed once, not in a loop
    assert fake.posts == []


def test_text_over_300_graphemes_is_refused_for_good(publisher: BlueskyPublisher, fake: FakeBluesky) -> None:
    with pytest.raises(PermanentPublishError, match="300 graphemes"):
        publisher.publish(post("あ" * 301))  # the fake's own check: 903 bytes, 301 graphemes
    publisher.publish(post("あ" * 300, entry="2"))
    assert len(fake.posts) == 1


def test_the_fake_refuses_what_the_publisher_must_get_right(fake: FakeBluesky) -> None:
    import requests

    login = requests.post(
        f"{fake.base_url}/xrpc/{CREATE_SESSION}",
        json={"identifier": fake.handle, "password": PASSWORD},
        timeout=5,
    ).json()
    auth = {"Authorization": f"Bearer {login['accessJwt']}"}
    text = "星 https://a.example/"
    good = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-01-01T00:00:00.000Z"}

    def create(rkey: str, **record: Any) -> requests.Response:
        body = {
            "repo": fake.did,
            "collection": "app.bsky.feed.post",
            "rkey": rkey,
            "record": {**good, **record},
        }
        return requests.post(f"{fake.base_url}/xrpc/{CREATE_RECORD}", json=body, headers=auth, timeout=5)

    link = {"$type": "app.bsky.richtext.facet#link", "uri": "https://a.example/"}
    assert "must be a TID" in create("not-a-tid").json()["message"]
    assert (
        "splits a UTF-8"
        in create(
            "3l25zusnsfck2", facets=[{"index": {"byteStart": 1, "byteEnd": 22}, "features": [link]}]
        ).json()["message"]
    )
    assert (
        "inside the text"
        in create(
            "3l25zusnsfck2", facets=[{"index": {"byteStart": 4, "byteEnd": 26}, "features": [link]}]
        ).json()["message"]
    )
    assert "3000" in create("3l25zusnsfck2", text="😀" * 751).json()["message"]  # 3,004 bytes
    assert (
        create(
            "3l25zusnsfck2", facets=[{"index": {"byteStart": 4, "byteEnd": 22}, "features": [link]}]
        ).status_code
        == 200
    )
    assert create("3l25zusnsfck2").status_code == 500  # the key is taken
    assert requests.post(f"{fake.base_url}/xrpc/{CREATE_RECORD}", json={}, timeout=5).status_code == 401
    assert [p["rkey"] for p in requests.get(f"{fake.base_url}/fake/posts", timeout=5).json()["posts"]] == [
        "3l25zusnsfck2"
    ]


# --- the network failing ---------------------------------------------------------


def _logged_in(fake: FakeBluesky, sessions: MemorySessions) -> None:
    """Store a session, so the next publisher's first request is createRecord."""
    publisher_for(fake, sessions).publish(post(entry="login"))


def test_a_pds_that_never_answers_a_post_is_an_unknown_outcome(
    fake: FakeBluesky, sessions: MemorySessions
) -> None:
    _logged_in(fake, sessions)
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host, port = silent.getsockname()
        slow = BlueskyPublisher(
            destination="bsky",
            identifier=fake.handle,
            app_password=PASSWORD,
            base_url=f"http://{host}:{port}",
            sessions=sessions,
            timeout=(0.5, 0.5),
        )
        with pytest.raises(UnknownOutcomeError, match="ReadTimeout") as caught:
            slow.publish(post())
    assert_no_secrets(caught.value, sessions.stored["bsky"]["accessJwt"])


def test_a_refused_connection_is_transient_nothing_was_sent(
    fake: FakeBluesky, sessions: MemorySessions
) -> None:
    _logged_in(fake, sessions)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the request: nothing listens
    gone = BlueskyPublisher(
        destination="bsky",
        identifier=fake.handle,
        app_password=PASSWORD,
        base_url=f"http://127.0.0.1:{port}",
        sessions=sessions,
        timeout=(0.5, 0.5),
    )
    with pytest.raises(TransientPublishError, match="could not reach Bluesky") as caught:
        gone.publish(post())
    assert not isinstance(caught.value, UnknownOutcomeError)


def test_a_session_store_that_cannot_save_still_posts(fake: FakeBluesky) -> None:
    class Broken(MemorySessions):
        def save(self, destination: str, session: dict[str, str]) -> None:
            raise RuntimeError("DynamoDB is down")

    assert publisher_for(fake, Broken()).publish(post()).tweet_id is not None


# --- rules: the renderer fits a post to Bluesky -------------------------------------


def _message(title: str, comment: str = "") -> EntryMessage:
    return EntryMessage(
        source="uploader",
        entry_id="42",
        title=title,
        url="https://uploader.example.jp/up/星の欠片.zip",
        comment=comment,
        fetched_at=FETCHED,
    )


@pytest.mark.parametrize(
    ("title", "binds"),
    [("星の欠片～" * 400, "graphemes"), ("👨\u200d👩\u200d👧\u200d👦" * 250, "bytes")],
    ids=["long-japanese-title", "emoji-family-title"],
)
def test_a_long_title_is_cut_to_fit_bluesky_and_the_url_stays_whole(
    publisher: BlueskyPublisher, fake: FakeBluesky, title: str, binds: str
) -> None:
    rendered = render_post(
        _message(title, comment="発狂差分"),
        template="【新着差分】{title} / {comment} / {url}",
        include_link=True,
        rules=bluesky.RULES,
    )
    url = "https://uploader.example.jp/up/%E6%98%9F%E3%81%AE%E6%AC%A0%E7%89%87.zip"
    assert rendered.link is not None
    assert rendered.text[rendered.link[0] : rendered.link[1]] == url
    assert rendered.text.endswith(f" / {url}") and "…" in rendered.text
    graphemes, size = grapheme_count(rendered.text), len(rendered.text.encode())
    assert graphemes <= 300 and size <= 3000
    # the binding limit is nearly used up (the renderer cuts no more than it must)
    assert (graphemes if binds == "graphemes" else size / 10) > 290
    assert rendered.weighted_length == bluesky.bluesky_length(rendered.text)
    request = PostRequest(rendered.text, rendered.link, "b" * 64, FETCHED)
    publisher.publish(request)  # and the PDS takes it
    raw = fake.posts[0]["text"].encode()
    index = fake.posts[0]["record"]["facets"][0]["index"]
    assert raw[index["byteStart"] : index["byteEnd"]].decode() == url


def test_bluesky_length_is_graphemes_or_bytes_over_ten() -> None:
    assert bluesky.bluesky_length("あ" * 300) == 300  # 900 bytes
    family = "👨\u200d👩\u200d👧\u200d👦"  # 1 grapheme, 25 bytes
    assert bluesky.bluesky_length(family * 120) == 300  # 3,000 bytes: just fits
    assert bluesky.bluesky_length(family * 121) == 303  # 3,025 bytes: does not
    assert bluesky.bluesky_length("a" * 301) == 301
    assert bluesky.bluesky_length("") == 0
    assert bluesky.RULES.limit == 300 and bluesky.RULES.unit == "graphemes"
    assert destinations.rules_for("bluesky") is bluesky.RULES


# --- build, secrets from SSM and the session in DynamoDB (moto server over HTTP) -----


def test_build_talks_to_the_fake_when_told_and_to_the_pds_otherwise() -> None:
    destination = Destination(name="bsky", kind="bluesky", secret="/bmsuploader/destinations/bsky")
    secrets = {"identifier": "bot.bsky.social", "app_password": PASSWORD}
    to_fake = bluesky.build(
        destination, secrets, NetworkContext(MemorySessions(), base_urls={"bluesky": "http://127.0.0.1:1"})
    )
    assert "http://127.0.0.1:1" in repr(to_fake) and PASSWORD not in repr(to_fake)
    assert "https://bsky.social" in repr(
        bluesky.build(destination, secrets, NetworkContext(MemorySessions()))
    )
    own_pds = destination.model_copy(update={"instance": "https://pds.example.org/"})
    assert "https://pds.example.org'" in repr(
        bluesky.build(own_pds, secrets, NetworkContext(MemorySessions()))
    )
    with pytest.raises(ConfigError):
        BlueskyPublisher(
            destination="bsky",
            identifier="x",
            app_password="y",
            base_url="bsky.social",
            sessions=MemorySessions(),
        )


def test_the_poster_path_reads_ssm_and_keeps_the_session_in_dynamodb(
    stack: Any, fake: FakeBluesky, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bmsuploader.aws.state import Sessions
    from bmsuploader.contract.settings import PosterSettings

    ssm = boto3.client("ssm")
    for name, value in (("identifier", fake.handle), ("app_password", PASSWORD)):
        ssm.put_parameter(
            Name=f"/bmsuploader/destinations/bsky/{name}", Value=value, Type="SecureString", Overwrite=True
        )
    parameters.clear_caches()
    settings = PosterSettings.from_env()
    destination = Destination(name="bsky", kind="bluesky", secret="/bmsuploader/destinations/bsky")
    for entry in range(3):  # three cold starts: new context, store and publisher each time
        context = NetworkContext(Sessions(stack.table_name), base_urls={"bluesky": fake.base_url})
        publisher = destinations.publisher_for(settings, destination, context)
        assert isinstance(publisher, BlueskyPublisher)
        publisher.publish(post(entry=str(entry)))
    assert fake.create_session_calls == 1
    stored = Sessions(stack.table_name).load("bsky")
    assert stored is not None and stored["did"] == fake.did and stored["identifier"] == fake.handle
    fake.expire_access_tokens()
    context = NetworkContext(Sessions(stack.table_name), base_urls={"bluesky": fake.base_url})
    destinations.publisher_for(settings, destination, context).publish(post(entry="after-expiry"))
    assert (fake.create_session_calls, fake.refresh_session_calls) == (1, 1)
    renewed = Sessions(stack.table_name).load("bsky")
    assert renewed is not None and renewed["accessJwt"] != stored["accessJwt"]
    assert len(fake.posts) == 4
    parameters.clear_caches()
