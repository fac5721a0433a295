"""Publishing: the poster's edge to X (post text -> X), and its credentials.

:class:`XPublisher` posts through tweepy's v2 ``Client`` with OAuth 1.0a user
context. Every outcome X can give is mapped to a result or a typed error from
:mod:`bmsuploader.contract.errors` in one place (:meth:`XPublisher.publish`), so the
poster decides retry / park / dead-letter without knowing about HTTP:

======================================  ==========================================
X says                                  we return / raise
======================================  ==========================================
201                                     ``PublishResult(tweet_id)``
403 "duplicate content"                 ``PublishResult(None, duplicate=True)``
429 (rate limit or ``UsageCapExceeded``)  :class:`RateLimitedError` until the reset
401                                     :class:`AuthError` (regenerate the token)
403 ``oauth1-permissions``              :class:`AuthError` (Read and Write, regenerate)
403 ``client-not-enrolled``             :class:`AuthError` (attach the app to a Project)
any other 403                           :class:`AuthError` with X's detail
400                                     :class:`PermanentPublishError` with X's detail
5xx, timeout, connection error, other   :class:`TransientPublishError`
======================================  ==========================================

Credentials come from SSM Parameter Store (:func:`load_credentials`); no error
message or repr ever contains a credential value.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, override

import requests
import tweepy
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response

from bmsuploader.contract import clock as contract_clock
from bmsuploader.contract.errors import (
    AuthError,
    ConfigError,
    PermanentPublishError,
    RateLimitedError,
    TransientPublishError,
)
from bmsuploader.contract.settings import PosterSettings
from bmsuploader.post.networks.base import PostRequest, Publisher, PublishResult, json_object
from bmsuploader.post.secrets import load_secrets

__all__ = ["DryRunPublisher", "PostRequest", "PublishResult", "Publisher", "XPublisher", "publisher_for"]

logger = logging.getLogger(__name__)

#: Parameter names under the X parameter path, one SecureString each.
CREDENTIAL_NAMES = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")

#: Hosts tweepy talks to. tweepy 4.x hard-codes https://api.twitter.com; api.x.com is
#: mounted too so a future tweepy that switches hosts is still redirected and timed out.
X_API_HOSTS = ("https://api.twitter.com/", "https://api.x.com/")

DEFAULT_RATE_LIMIT_DELAY = 900  # no x-rate-limit-reset header: one 15-minute window

_DUPLICATE_RE = re.compile(r"duplicate content|status is a duplicate", re.IGNORECASE)
_DETAIL_LIMIT = 300

_REGENERATE = (
    "regenerate the access token and secret in the X developer portal "
    "(Keys and tokens), then update the access_token and access_token_secret "
    "SecureString parameters (aws ssm put-parameter --type SecureString --overwrite ...)"
)


@dataclass(frozen=True, repr=False)
class XCredentials:
    """OAuth 1.0a user-context keys. ``repr`` shows which are set, never their values."""

    consumer_key: str = field(repr=False)
    consumer_secret: str = field(repr=False)
    access_token: str = field(repr=False)
    access_token_secret: str = field(repr=False)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={'***' if getattr(self, name) else ''!r}" for name in CREDENTIAL_NAMES)
        return f"XCredentials({shown})"

    __str__ = __repr__


# --- credentials --------------------------------------------------------------


def load_credentials(parameter_path: str, *, max_age: int = 300) -> XCredentials:
    """Read the four SecureStrings under ``parameter_path`` (Powertools-cached).

    A missing parameter raises :class:`AuthError` naming the parameter and the
    command that creates it; values never appear in any message.
    """
    found = load_secrets(
        parameter_path,
        CREDENTIAL_NAMES,
        network="X",
        hint="value from the X developer portal",
        max_age=max_age,
    )
    return XCredentials(**found)


# --- transport ----------------------------------------------------------------


class _XTransport(HTTPAdapter):
    """Mounted on tweepy's session for X's hosts.

    tweepy hard-codes the API host and passes no timeout to ``requests``, so this
    adapter (a) sends the request to ``base_url`` instead when one is given (a
    fake X on loopback in tests and local runs), and (b) applies a default
    timeout so a stalled X cannot hold the Lambda until its own timeout.

    It never retries: a POST that reached X may have been accepted, and only the
    duplicate-content check on a later, deliberate retry can tell.
    """

    def __init__(self, *, base_url: str | None, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=0)
        self._base_url = base_url.rstrip("/") if base_url else None
        self._timeout = timeout

    @override
    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        if self._base_url and request.url:
            for host in X_API_HOSTS:
                if request.url.startswith(host):
                    # The OAuth signature was computed for the real URL; a fake
                    # X only checks that one is there.
                    request.url = f"{self._base_url}/{request.url[len(host) :]}"
                    proxies = requests.utils.get_environ_proxies(request.url)
                    break
        return super().send(
            request,
            stream=stream,
            timeout=self._timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


# --- X ------------------------------------------------------------------------


def _problem(exc: tweepy.HTTPException) -> dict[str, Any]:
    """X's problem JSON (``title``, ``detail``, ``type``, ``reason``...), or {}."""
    return json_object(exc.response)


def _detail(exc: tweepy.HTTPException, problem: Mapping[str, Any]) -> str:
    parts = [str(problem["detail"])] if problem.get("detail") else []
    # A 400 "invalid-request" puts the useful part in errors[].message.
    parts += [str(m) for m in exc.api_messages if str(m) not in parts]
    text = "; ".join(parts) or f"{exc.response.status_code} {exc.response.reason}"
    return text[:_DETAIL_LIMIT]


class XPublisher:
    """Posts to X with OAuth 1.0a user context. Build once per container."""

    def __init__(
        self,
        credentials: XCredentials,
        *,
        base_url: str | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        clock: Callable[[], float] = contract_clock.epoch,
    ) -> None:
        if base_url is not None and not re.match(r"^https?://[^/\s]+", base_url):
            raise ConfigError(f"X_API_BASE_URL {base_url!r} must be an http(s) URL")
        # Never wait_on_rate_limit: tweepy would sleep up to 15 minutes inside Lambda.
        self._client = tweepy.Client(
            consumer_key=credentials.consumer_key,
            consumer_secret=credentials.consumer_secret,
            access_token=credentials.access_token,
            access_token_secret=credentials.access_token_secret,
            wait_on_rate_limit=False,
        )
        transport = _XTransport(base_url=base_url, timeout=timeout)
        for host in X_API_HOSTS:
            self._client.session.mount(host, transport)
        self._clock = clock

    def publish(self, post: PostRequest) -> PublishResult:
        """Post ``post.text``. The one place X's answers become results and typed errors.

        X needs no check after an unknown outcome: posting the same text again is
        refused as duplicate content (and read as done), so ``maybe_posted`` is ignored.
        """
        try:
            response = self._client.create_tweet(text=post.text, user_auth=True)
        except tweepy.TooManyRequests as exc:
            raise self._rate_limited(exc) from exc
        except tweepy.Unauthorized as exc:
            problem = _problem(exc)
            raise AuthError(
                f"X rejected the credentials (401: {_detail(exc, problem)}); the access token is "
                f"wrong, revoked or expired: {_REGENERATE}"
            ) from exc
        except tweepy.Forbidden as exc:
            return self._forbidden(exc)
        except tweepy.BadRequest as exc:
            raise PermanentPublishError(
                f"X rejected the post as invalid (400): {_detail(exc, _problem(exc))}"
            ) from exc
        except tweepy.HTTPException as exc:  # 5xx and anything unexpected (404, 409, ...)
            status = exc.response.status_code
            raise TransientPublishError(f"X answered {status}: {_detail(exc, _problem(exc))}") from exc
        except requests.Timeout as exc:
            raise TransientPublishError(f"X did not answer in time: {type(exc).__name__}") from exc
        except requests.RequestException as exc:
            # Includes a connection dropped after X accepted the post: the retry's
            # duplicate-content 403 turns that into PublishResult(duplicate=True).
            raise TransientPublishError(f"could not reach X: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a 2xx body that is not JSON, or a bad rate-limit header
            raise TransientPublishError(f"X sent an unreadable answer: {exc}") from exc

        data = getattr(response, "data", None)
        tweet_id = data.get("id") if isinstance(data, dict) else None
        if not tweet_id:
            raise TransientPublishError("X answered 2xx without a post id")
        return PublishResult(tweet_id=str(tweet_id))

    def _forbidden(self, exc: tweepy.Forbidden) -> PublishResult:
        problem = _problem(exc)
        detail = _detail(exc, problem)
        raw = " ".join(str(problem.get(k, "")) for k in ("type", "reason", "title", "detail")) + detail
        if _DUPLICATE_RE.search(raw):
            # v2 gives no numeric code for this (api_codes is empty): match the text.
            return PublishResult(tweet_id=None, duplicate=True)
        lowered = raw.lower()
        if "oauth1-permissions" in lowered or "oauth1 app permissions" in lowered:
            raise AuthError(
                f"X refused the post: the access token is read-only ({detail}). In the developer "
                "portal set the app to Read and Write, then regenerate the access token and secret "
                "(tokens keep the permission they were minted with) and update the SSM parameters"
            ) from exc
        if "client-not-enrolled" in lowered:
            raise AuthError(
                f"X refused the app ({detail}): attach the app to a Project in the developer portal"
            ) from exc
        raise AuthError(f"X refused the post (403): {detail}") from exc

    def _rate_limited(self, exc: tweepy.TooManyRequests) -> RateLimitedError:
        problem = _problem(exc)
        reset = exc.response.headers.get("x-rate-limit-reset")
        try:
            delay = int(reset) - int(self._clock())
            delay = max(1, delay)  # the queue caps it (bmsuploader.aws.queue.clamp_visibility)
        except (TypeError, ValueError):
            delay = DEFAULT_RATE_LIMIT_DELAY
        if problem.get("title") == "UsageCapExceeded":
            message = (
                f"X usage cap reached (UsageCapExceeded: {_detail(exc, problem)}); "
                f"waiting {delay}s. Check the app's credits and plan in the developer portal"
            )
        else:
            message = f"X rate limit reached (429); waiting {delay}s until x-rate-limit-reset"
        return RateLimitedError(message, delay)


class DryRunPublisher:
    """Publishes nothing: logs the text and returns a stable fake id. No network."""

    def __init__(self, destination: str = "x") -> None:
        self.destination = destination

    def publish(self, post: PostRequest) -> PublishResult:
        tweet_id = f"dry-run-{hashlib.sha256(post.text.encode()).hexdigest()[:16]}"
        logger.info(
            f"dry run: not posting to {self.destination}",
            extra={"tweet_id": tweet_id, "text": post.text, "destination": self.destination},
        )
        return PublishResult(tweet_id=tweet_id, dry_run=True)


def publisher_for(settings: PosterSettings, parameter_path: str | None = None) -> Publisher:
    """The publisher for this attempt: the dry-run one, or X with the current credentials.

    Credentials are read through Powertools' cache (300 s), so a rotated token
    is picked up without a cold start; each set of credentials builds one client.
    ``parameter_path`` defaults to ``X_PARAMETER_PATH``.
    """
    if settings.dry_run:
        return DryRunPublisher()
    path = parameter_path or settings.x_parameter_path
    return _x_publisher(load_credentials(path), settings.x_api_base_url)


@cache
def _x_publisher(credentials: XCredentials, base_url: str | None) -> XPublisher:
    return XPublisher(credentials, base_url=base_url)
