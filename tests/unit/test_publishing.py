"""The X edge, proved over real HTTP: XPublisher -> tweepy -> requests -> FakeX on loopback.

Nothing in tweepy or requests is mocked; only the host differs from production
(``base_url``). Credentials come from SSM on a moto server, also over HTTP.
"""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from aws_lambda_powertools.utilities import parameters
from mypy_boto3_ssm import SSMClient

from bmsuploader.contract.errors import (
    AuthError,
    ConfigError,
    PermanentPublishError,
    PublishError,
    RateLimitedError,
    TransientPublishError,
)
from bmsuploader.post.networks.base import PostRequest
from bmsuploader.post.publishing import (
    CREDENTIAL_NAMES,
    DryRunPublisher,
    PublishResult,
    XCredentials,
    XPublisher,
    load_credentials,
)
from bmsuploader_local.fake_x import FakeX
from bmsuploader_local.loopback import Scripted

# Distinctive values, so a leak into any message or traceback is easy to spot.
CREDENTIALS = XCredentials(
    consumer_key="ck-LEAKCHECK-consumer-key-7f3a",
    consumer_secret="cs-LEAKCHECK-consumer-secret-91bc",
    access_token="at-LEAKCHECK-access-token-55de",
    access_token_secret="ats-LEAKCHECK-access-secret-0a0a",
)
SECRETS = (CREDENTIALS.consumer_secret, CREDENTIALS.access_token_secret)
ALL_VALUES = (CREDENTIALS.consumer_key, CREDENTIALS.access_token, *SECRETS)
NOW = 1_800_000_000.0


def _post(text: str) -> PostRequest:
    return PostRequest(text=text, link=None, key="0" * 64, created_at=datetime(2026, 1, 1, tzinfo=UTC))


def assert_no_credentials(exc: BaseException) -> None:
    """Neither the message nor the whole logged traceback (with causes) has a value."""
    logged = "".join(traceback.format_exception(exc))
    for value in ALL_VALUES:
        assert value not in str(exc)
        assert value not in logged
    assert "Authorization" not in logged


@pytest.fixture
def fake_x() -> Iterator[FakeX]:
    with FakeX() as fake:
        yield fake


@pytest.fixture
def publisher(fake_x: FakeX) -> XPublisher:
    return XPublisher(CREDENTIALS, base_url=fake_x.base_url, clock=lambda: NOW)


# --- success and duplicates ---------------------------------------------------


def test_a_post_returns_xs_id_and_is_signed_with_oauth1(publisher: XPublisher, fake_x: FakeX) -> None:
    result = publisher.publish(_post("【新着差分】星の欠片 [ANOTHER]"))
    assert result == PublishResult(tweet_id=fake_x.posts[0]["id"])
    assert result.tweet_id is not None and result.tweet_id.isdigit()
    assert fake_x.posts == [{"id": result.tweet_id, "text": "【新着差分】星の欠片 [ANOTHER]"}]
    [seen] = fake_x.requests
    assert seen.status == 201
    assert seen.authorization is not None and seen.authorization.startswith("OAuth ")
    assert f'oauth_consumer_key="{CREDENTIALS.consumer_key}"' in seen.authorization
    assert f'oauth_token="{CREDENTIALS.access_token}"' in seen.authorization
    assert 'oauth_signature="' in seen.authorization
    for secret in SECRETS:  # signed with them, never sent
        assert secret not in seen.authorization


def test_ids_increase(publisher: XPublisher) -> None:
    first, second = publisher.publish(_post("one")), publisher.publish(_post("two"))
    assert first.tweet_id is not None and second.tweet_id is not None
    assert int(second.tweet_id) > int(first.tweet_id)


def test_identical_text_is_a_duplicate_not_an_error(publisher: XPublisher, fake_x: FakeX) -> None:
    publisher.publish(_post("same text"))
    again = publisher.publish(_post("same text"))
    assert again == PublishResult(tweet_id=None, duplicate=True)
    assert len(fake_x.posts) == 1
    assert [r.status for r in fake_x.requests] == [201, 403]


def test_without_oauth1_the_fake_answers_401(fake_x: FakeX) -> None:
    # The fake's own check, so a publisher that stopped signing would fail above.
    response = requests.post(f"{fake_x.base_url}/2/tweets", json={"text": "x"}, timeout=5)
    assert response.status_code == 401
    assert fake_x.posts == []


# --- every error X gives, mapped ----------------------------------------------


@pytest.mark.parametrize(
    ("scripted", "error", "needle"),
    [
        (FakeX.server_error(503), TransientPublishError, "503"),
        (FakeX.server_error(500), TransientPublishError, "500"),
        (Scripted(status=404, body={"title": "Not Found Error"}), TransientPublishError, "404"),
        (FakeX.unauthorized(), AuthError, "regenerate the access token and secret"),
        (FakeX.forbidden_permissions(), AuthError, "set the app to Read and Write, then regenerate"),
        (FakeX.not_enrolled(), AuthError, "attach the app to a Project in the developer portal"),
        (
            FakeX.forbidden("You are not permitted to perform this action."),
            AuthError,
            "You are not permitted to perform this action.",
        ),
        (
            FakeX.bad_request("Your media IDs are invalid."),
            PermanentPublishError,
            "Your media IDs are invalid.",
        ),
    ],
    ids=["503", "500", "404", "401", "oauth1-permissions", "client-not-enrolled", "403-other", "400"],
)
def test_scripted_errors_map_to_typed_errors(
    publisher: XPublisher, fake_x: FakeX, scripted: Scripted, error: type[PublishError], needle: str
) -> None:
    fake_x.script(scripted)
    with pytest.raises(error) as caught:
        publisher.publish(_post("text"))
    assert type(caught.value) is error
    assert needle in str(caught.value)
    assert_no_credentials(caught.value)
    assert fake_x.posts == []


@pytest.mark.parametrize(
    ("reset", "delay"),
    [(int(NOW) + 120, 120), (int(NOW) - 50, 1), (int(NOW) + 86_400, 86_400), (None, 900)],
    ids=["in-two-minutes", "already-past", "clamped-to-12h", "no-header"],
)
def test_429_waits_until_the_reset(
    publisher: XPublisher, fake_x: FakeX, reset: int | None, delay: int
) -> None:
    fake_x.script(FakeX.rate_limited(reset))
    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(_post("text"))
    assert caught.value.delay_seconds == delay
    assert "UsageCapExceeded" not in str(caught.value)
    assert_no_credentials(caught.value)


def test_usage_cap_is_named(publisher: XPublisher, fake_x: FakeX) -> None:
    fake_x.script(FakeX.rate_limited(int(NOW) + 600, usage_cap=True))
    with pytest.raises(RateLimitedError, match="UsageCapExceeded") as caught:
        publisher.publish(_post("text"))
    assert caught.value.delay_seconds == 600


def test_text_over_280_weighted_is_rejected_for_good(publisher: XPublisher, fake_x: FakeX) -> None:
    with pytest.raises(PermanentPublishError, match="too long") as caught:
        publisher.publish(_post("あ" * 141))  # 282 weighted
    assert_no_credentials(caught.value)
    assert fake_x.posts == []


def test_normal_entries_let_a_script_reach_a_later_request(publisher: XPublisher, fake_x: FakeX) -> None:
    fake_x.script(FakeX.normal(), FakeX.normal(), FakeX.server_error(503))
    publisher.publish(_post("one"))
    publisher.publish(_post("one"))  # normal() still applies X's rules: a duplicate
    with pytest.raises(TransientPublishError):
        publisher.publish(_post("two"))
    assert [r.status for r in fake_x.requests] == [201, 403, 503]
    assert [p["text"] for p in fake_x.posts] == ["one"]


def test_ids_go_on_after_preloaded_posts(publisher: XPublisher, fake_x: FakeX) -> None:
    fake_x.posts.append({"id": "2000000000000000000", "text": "from an earlier run"})
    assert publisher.publish(_post("new")) == PublishResult(tweet_id="2000000000000000001")
    assert publisher.publish(_post("from an earlier run")).duplicate


def test_after_a_scripted_error_the_fake_behaves_normally_again(publisher: XPublisher, fake_x: FakeX) -> None:
    fake_x.script(FakeX.server_error())
    with pytest.raises(TransientPublishError):
        publisher.publish(_post("retry me"))
    assert publisher.publish(_post("retry me")).tweet_id is not None
    assert [r.status for r in fake_x.requests] == [503, 201]


# --- the network failing ------------------------------------------------------


def test_an_x_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host, port = silent.getsockname()
        slow = XPublisher(CREDENTIALS, base_url=f"http://{host}:{port}", timeout=(0.5, 0.5))
        started = time.monotonic()
        with pytest.raises(TransientPublishError, match="in time") as caught:
            slow.publish(_post("text"))
        assert time.monotonic() - started < 5
    assert_no_credentials(caught.value)


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the request: nothing listens
    gone = XPublisher(CREDENTIALS, base_url=f"http://127.0.0.1:{port}", timeout=(0.5, 0.5))
    with pytest.raises(TransientPublishError, match="could not reach X") as caught:
        gone.publish(_post("text"))
    assert_no_credentials(caught.value)


def test_accepted_then_dropped_is_retried_as_a_duplicate(publisher: XPublisher, fake_x: FakeX) -> None:
    fake_x.script(FakeX.accept_then_drop())
    with pytest.raises(TransientPublishError) as caught:
        publisher.publish(_post("【新着差分】crash after accept"))
    assert_no_credentials(caught.value)
    # The retry sends the same bytes; X's duplicate check closes the gap.
    assert publisher.publish(_post("【新着差分】crash after accept")) == PublishResult(
        tweet_id=None, duplicate=True
    )
    assert len(fake_x.posts) == 1
    assert [r.status for r in fake_x.requests] == [None, 403]


# --- configuration and dry runs -------------------------------------------------


def test_credentials_repr_shows_no_values() -> None:
    for shown in (repr(CREDENTIALS), str(CREDENTIALS), f"{CREDENTIALS}"):
        for value in ALL_VALUES:
            assert value not in shown
    assert "consumer_key='***'" in repr(CREDENTIALS)


def test_base_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="X_API_BASE_URL"):
        XPublisher(CREDENTIALS, base_url="127.0.0.1:8080")


def test_dry_run_makes_no_network_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("DryRunPublisher opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    first = DryRunPublisher().publish(_post("【新着差分】dry"))
    assert first.tweet_id is not None and first.tweet_id.startswith("dry-run-")
    assert len(first.tweet_id) == len("dry-run-") + 16
    assert DryRunPublisher().publish(_post("【新着差分】dry")) == first  # stable for the same text
    assert DryRunPublisher().publish(_post("other")).tweet_id != first.tweet_id


# --- credentials from SSM (moto server over HTTP) -------------------------------


def put_credentials(ssm: SSMClient, path: str, names: tuple[str, ...] = CREDENTIAL_NAMES) -> None:
    for name in names:
        ssm.put_parameter(
            Name=f"{path}/{name}",
            Value=getattr(CREDENTIALS, name) + "\n",
            Type="SecureString",
            Overwrite=True,
        )


def test_load_credentials_reads_the_four_securestrings(ssm: SSMClient) -> None:
    put_credentials(ssm, "/bmsuploader/test-load/x")
    assert load_credentials("/bmsuploader/test-load/x/") == CREDENTIALS  # trailing "/" and "\n" tolerated


def test_a_missing_parameter_is_an_auth_error_naming_it(ssm: SSMClient) -> None:
    put_credentials(ssm, "/bmsuploader/test-missing/x", CREDENTIAL_NAMES[:3])
    with pytest.raises(AuthError) as caught:
        load_credentials("/bmsuploader/test-missing/x")
    message = str(caught.value)
    assert "/bmsuploader/test-missing/x/access_token_secret" in message
    assert "/bmsuploader/test-missing/x/consumer_key" not in message
    assert "aws ssm put-parameter" in message and "--type SecureString" in message
    assert_no_credentials(caught.value)


def test_credentials_are_cached_for_max_age(ssm: SSMClient) -> None:
    path = "/bmsuploader/test-cache/x"
    put_credentials(ssm, path)
    load_credentials(path)
    ssm.put_parameter(Name=f"{path}/access_token", Value="rotated", Type="SecureString", Overwrite=True)
    assert load_credentials(path).access_token == CREDENTIALS.access_token  # still cached
    # max_age is the lifetime given to values when they are stored: a later call
    # with max_age=0 does not bypass them. Only expiry or clear_caches() does.
    assert load_credentials(path, max_age=0).access_token == CREDENTIALS.access_token
    parameters.clear_caches()
    assert load_credentials(path).access_token == "rotated"


def test_a_relative_parameter_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must start with '/'"):
        load_credentials("bmsuploader/x")
