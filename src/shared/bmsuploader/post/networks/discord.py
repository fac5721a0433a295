"""Discord: the poster's edge to a channel webhook (post text -> one message).

One ``POST <webhook>?wait=true`` with ``{"content": text, "allowed_mentions": {"parse": []}}``
per post, with plain ``requests``; ``wait=true`` makes Discord answer with the
message, whose id becomes the result. The webhook URL is the secret (its token
is the only credential): it is never in a message, a repr or a log line.

**Nobody is ever pinged.** ``allowed_mentions`` with an empty ``parse`` list
turns every mention off (``@everyone``, ``@here``, ``<@id>``, ``<@&role>``),
and the renderer has already turned scraped ``@`` and ``#`` into look-alikes
(:func:`~bmsuploader.post.rendering.neutralise`), so ``<@123>`` and ``<#123>``
are not even mention syntax. Either alone would do; both are cheap.

**Markdown in scraped text is inert** (:func:`escape_markdown`, the rules'
``escape``): Discord's markup characters are backslash-escaped in each scraped
field, so a title cannot bold, strike, spoiler, quote, head, list or code-format
the post, nor hide a masked link ``[text](url)``. ``://`` loses its colon too
(``https\\://``): Discord links any ``http(s)://`` text, and the renderer's
look-alike dot (U+2024) would not stop that -- a browser's IDNA mapping turns it
back into ``.``. The entry URL is not scraped text and is never escaped. Link
previews are kept (no ``SUPPRESS_EMBEDS`` flag): the only link a post can have
is the entry's, and its card is what a channel wants to see.

=========================================  =================================================
Discord says                               we return / raise
=========================================  =================================================
2xx with the message                       ``PublishResult(message id)``
2xx without a readable id                  ``PublishResult(None)``: it was posted; raising
                                           would post it again
429                                        :class:`RateLimitedError`, for ``retry_after`` (JSON,
                                           float seconds) or ``Retry-After``, the longer, rounded up
401 / 403 / 404                            :class:`AuthError`: the webhook was deleted or its token
                                           is wrong; make a new one and update the parameter
400 / 413                                  :class:`PermanentPublishError` with Discord's message
5xx, 3xx, anything else                    :class:`TransientPublishError`
connect failure or timeout, TLS error      :class:`TransientPublishError`: nothing was sent
read timeout, connection dropped after     :class:`UnknownOutcomeError`: it may have been posted
sending, a broken answer
``post.maybe_posted``                      :class:`MaybePostedError`, no request at all
=========================================  =================================================

**Exactly once, and its trade-off.** A webhook can post but cannot read: there is
no way to list its messages or to ask whether one exists, and Discord has no
idempotency key. So when an earlier attempt may have been accepted (it ended in
:class:`UnknownOutcomeError`, or the invocation died with the request out), the
next attempt cannot check, and posting again could post twice. It raises
:class:`MaybePostedError` instead: the message goes to the dead-letter queue with
a reason telling the operator to look at the channel and, if the post is missing,
``bmsuploader redrive`` it. We choose *never twice* over *never missing silently*:
the entry is not lost, it waits in the DLQ, whose alarm tells the operator. To
keep such cases rare, every post opens a fresh connection (no pooled connection
that Discord closed while the Lambda slept can turn into an "unknown" outcome),
and a failure before anything was sent is an ordinary retry.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.exceptions import ProxyError, SSLError
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from bmsuploader.config.destinations import Destination
from bmsuploader.contract.errors import (
    AuthError,
    ConfigError,
    MaybePostedError,
    PermanentPublishError,
    PublishError,
    RateLimitedError,
    TransientPublishError,
    UnknownOutcomeError,
)
from bmsuploader.post.networks.base import NetworkContext, PostRequest, PublishResult, json_object
from bmsuploader.post.rules import PostRules

__all__ = [
    "RULES",
    "SECRET_HINT",
    "SECRET_NAMES",
    "DiscordPublisher",
    "Webhook",
    "build",
    "escape_markdown",
    "parse_webhook_url",
]

logger = logging.getLogger(__name__)

#: The most characters a message's ``content`` may have. Discord's API counts code
#: points (Python's ``len``: discord/discord-api-docs#1315).
MAX_CONTENT_LENGTH = 2000

# --- markdown -------------------------------------------------------------------

# Discord's markup characters, escaped wherever they are: emphasis * _, strike ~~,
# spoiler ||, code `, quote >, heading #, list and subtext -, masked link [ ] ( ),
# the angle brackets of <https://...>, <t:...> and <:emoji:id>, and "\\" itself
# (first in the class, so an existing backslash cannot escape what follows it).
# Every occurrence, so no construct can form across two fields either.
_MARKUP = re.compile(r"([\\*_~|`>#\-\[\]()<])")
# Discord links any "http(s)://...": the colon of "://" is escaped, also where two
# fields would join into one ("https:" + "//x").
_SCHEME = re.compile(r":(?=//|/?$)|^/(?=/)")
# "1. " and "+ " at a line start open a list ("- ", "* ", "> " are escaped anywhere).
# A scraped field is one line (the renderer collapses whitespace), so only its start
# can be a line start; a leading "." is escaped too, for "1" + ". x".
_LIST_START = re.compile(r"^(?:\d+\.|\+)(?=\s|$)|^\.")


def escape_markdown(text: str) -> str:
    """``text`` with every Discord markdown construct made literal by backslashes.

    Discord renders ``\\`` + any punctuation as that character, so the reader sees
    the text unchanged; only the markup is gone. Applied to each scraped field.
    """
    escaped = _MARKUP.sub(r"\\\1", text)
    escaped = _SCHEME.sub(lambda match: "\\" + match[0], escaped)
    return _LIST_START.sub(lambda match: f"{match[0][:-1]}\\{match[0][-1]}", escaped)


RULES = PostRules(
    network="discord",
    limit=MAX_CONTENT_LENGTH,
    unit="characters",
    measure=len,
    escape=escape_markdown,
)

# --- the secret -------------------------------------------------------------------

SECRET_NAMES = ("webhook_url",)
# Where the operator gets the secret (for the "missing parameter" error), not one.
SECRET_HINT = (
    "webhook URL https://discord.com/api/webhooks/ID/TOKEN: "  # noqa: S105
    "Server Settings > Integrations > Webhooks > New Webhook > Copy Webhook URL"
)

_HOSTS = frozenset(
    f"{prefix}{domain}" for prefix in ("", "ptb.", "canary.") for domain in ("discord.com", "discordapp.com")
)
_PATH = re.compile(r"^/api(?:/v\d{1,2})?/webhooks/(?P<id>\d{1,20})/(?P<token>[A-Za-z0-9_-]{20,200})/?$")
_HOSTNAME = re.compile(r"^[a-z0-9.-]{1,100}$")
# Any webhook path in text we did not write (an exception from requests names the URL).
_ANY_WEBHOOK_PATH = re.compile(r"(webhooks/\d+/)[^/?#\s'\")]+")

_NEW_WEBHOOK = (
    "create a new webhook (Server Settings > Integrations > Webhooks > New Webhook > Copy Webhook URL) "
    "and store its URL: aws ssm put-parameter --type SecureString --name {parameter} "
    "--value 'https://discord.com/api/webhooks/ID/TOKEN' --overwrite"
)


@dataclass(frozen=True, repr=False)
class Webhook:
    """A parsed webhook URL. ``repr`` shows the webhook id (not secret), never the token."""

    id: str
    token: str = field(repr=False)
    #: ``/api[/vN]/webhooks/<id>/<token>``: kept as given, also on a fake server
    path: str = field(repr=False)
    #: post into this thread of the webhook's channel (``?thread_id=`` in the URL)
    thread_id: str | None = None

    def __repr__(self) -> str:
        thread = f", thread_id={self.thread_id!r}" if self.thread_id else ""
        return f"Webhook(id={self.id!r}, token='***'{thread})"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """``text`` with this token, and any webhook token, replaced by ``***``."""
        return _ANY_WEBHOOK_PATH.sub(r"\1***", text.replace(self.token, "***"))


def parse_webhook_url(value: str, *, parameter: str = "the webhook_url parameter") -> Webhook:
    """Check a webhook URL's shape: ``https://discord.com/api/webhooks/<id>/<token>``.

    discordapp.com, the ptb./canary. hosts, an ``/api/vN`` path and a
    ``?thread_id=<id>`` query are accepted too. A malformed one is an
    :class:`AuthError` saying which part is wrong (never the URL) and how to fix it.
    """
    parts = urlsplit(value.strip())
    problem: str | None = None
    match = _PATH.match(parts.path)
    query = parse_qs(parts.query, keep_blank_values=True)
    host = (parts.hostname or "").lower() if parts.netloc else ""
    if parts.scheme.lower() != "https" or not parts.netloc:
        problem = "it does not start with https://"
    elif host not in _HOSTS or parts.port not in (None, 443) or parts.username or parts.password:
        shown = f" {host!r}" if _HOSTNAME.match(host) and "." in host else ""
        problem = f"its host{shown} is not discord.com"
    elif match is None:
        problem = "its path is not /api/webhooks/<numeric id>/<token>"
    elif set(query) - {"thread_id"} or parts.fragment:
        names = ", ".join(sorted(n for n in query if n != "thread_id" and re.fullmatch(r"\w{1,30}", n)))
        problem = f"it has more than ?thread_id= after the token{f' ({names})' if names else ''}"
    elif "thread_id" in query and not re.fullmatch(r"\d{1,20}", ",".join(query["thread_id"])):
        problem = "its thread_id is not one numeric id"
    if problem is not None or match is None:
        raise AuthError(
            f"the Discord webhook URL in {parameter} is malformed: {problem}. "
            + _NEW_WEBHOOK.format(parameter=parameter)
        )
    thread = query["thread_id"][0] if "thread_id" in query else None
    return Webhook(id=match["id"], token=match["token"], path=parts.path.rstrip("/"), thread_id=thread)


# --- logs -------------------------------------------------------------------------


class _RedactWebhookTokens(logging.Filter):
    """urllib3 logs each request's path at DEBUG: a webhook's token must not reach the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _ANY_WEBHOOK_PATH.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_LOG_FILTER = _RedactWebhookTokens()
for _name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry"):
    if not any(isinstance(f, _RedactWebhookTokens) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_LOG_FILTER)

# --- the publisher ------------------------------------------------------------------

USER_AGENT = "bmsuploader (Discord webhook)"
#: No usable retry_after or Retry-After on a 429 (a Cloudflare block answers HTML): wait a minute.
DEFAULT_RATE_LIMIT_DELAY = 60
_DETAIL_LIMIT = 300
#: Every answer we read is small; a bigger one is not Discord's JSON.
_MAX_ANSWER_BYTES = 64 * 1024


def _json(response: requests.Response) -> dict[str, Any]:
    return {} if len(response.content) > _MAX_ANSWER_BYTES else json_object(response)


def _field_errors(errors: object, path: str = "") -> list[str]:
    """Discord's nested ``errors`` (``{"content": {"_errors": [{"message": ...}]}}``) as lines."""
    if not isinstance(errors, dict):
        return []
    lines: list[str] = []
    for key, value in errors.items():
        if key == "_errors" and isinstance(value, list):
            lines += [f"{path or 'body'}: {e.get('message')}" for e in value if isinstance(e, dict)]
        else:
            lines += _field_errors(value, f"{path}.{key}" if path else str(key))
    return lines


def _never_sent(exc: requests.RequestException) -> bool:
    """The request failed before a byte of it reached Discord (connect, DNS, TLS, proxy).

    A TLS error is the handshake in practice: urllib3 reads with ragged EOFs
    suppressed, so a connection cut after sending surfaces as a dropped
    connection (a ``ProtocolError``), not as an ``SSLError``.
    """
    if isinstance(exc, (requests.ConnectTimeout, SSLError, ProxyError)):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = exc.args[0]
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        return isinstance(reason, (NewConnectionError, ConnectTimeoutError))
    return False


class DiscordPublisher:
    """Posts to one channel webhook. Build once per webhook URL (per container)."""

    def __init__(
        self,
        webhook: Webhook,
        *,
        destination: str = "discord",
        parameter: str = "the webhook_url parameter",
        base_url: str | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
    ) -> None:
        if base_url is not None and not re.match(r"^https?://[^/\s]+/?$", base_url):
            raise ConfigError(f"the Discord base URL {base_url!r} must be an http(s) URL without a path")
        self._webhook = webhook
        self._destination = destination
        self._parameter = parameter
        self._timeout = timeout
        # discord.com whatever host the URL names: discordapp.com is the old name of the same API.
        origin = base_url.rstrip("/") if base_url else "https://discord.com"
        query = "wait=true" + (f"&thread_id={webhook.thread_id}" if webhook.thread_id else "")
        self._url = f"{origin}{webhook.path}?{query}"

    def __repr__(self) -> str:
        return f"DiscordPublisher(destination={self._destination!r}, webhook={self._webhook!r})"

    __str__ = __repr__

    def publish(self, post: PostRequest) -> PublishResult:
        """Post ``post.text``. The one place Discord's answers become results and typed errors."""
        if post.maybe_posted:
            raise MaybePostedError(
                f"Discord ({self._destination}): an earlier attempt at this post may have been accepted "
                "(its outcome is unknown), and a webhook cannot list its messages to check. Not posted "
                "again, so that it is never posted twice: look for it in the channel and, if it is "
                "missing, send it back with `bmsuploader redrive`"
            )
        payload = {"content": post.text, "allowed_mentions": {"parse": []}}
        try:
            # A fresh session (and connection) per post: see the module docstring.
            with requests.Session() as session:
                response = session.post(
                    self._url,
                    json=payload,
                    headers={"User-Agent": USER_AGENT},
                    timeout=self._timeout,
                    allow_redirects=False,
                )
        except requests.RequestException as exc:
            # ``from None``: requests' own message and its causes name the URL, token included.
            raise self._network_error(exc) from None
        return self._answer(response)

    # --- answers ------------------------------------------------------------------

    def _answer(self, response: requests.Response) -> PublishResult:
        status = response.status_code
        body = _json(response)
        if 200 <= status < 300:
            message_id = body.get("id")
            if isinstance(message_id, (str, int)) and str(message_id).isdigit():
                return PublishResult(tweet_id=str(message_id))
            # It is in the channel: an error here would make the next attempt post it again.
            logger.warning(
                "Discord accepted the post but sent no message id",
                extra={"destination": self._destination, "status": status},
            )
            return PublishResult(tweet_id=None)
        detail = self._detail(response, body)
        if status == 429:
            raise self._rate_limited(response, body, detail)
        if status in (401, 403, 404):
            what = {
                401: "the webhook's token is wrong",
                403: "the webhook may not post in its channel",
                404: "the webhook does not exist (deleted, or its id is wrong)",
            }[status]
            raise AuthError(
                f"Discord refused the webhook ({status}: {detail}): {what}. "
                + _NEW_WEBHOOK.format(parameter=self._parameter)
            )
        if status in (400, 413):
            raise PermanentPublishError(f"Discord rejected the post ({status}): {detail}")
        raise TransientPublishError(f"Discord answered {status}: {detail}")

    def _detail(self, response: requests.Response, body: Mapping[str, Any]) -> str:
        parts = [str(body["message"])] if body.get("message") else []
        if body.get("code"):
            parts.append(f"code {body['code']}")
        parts += _field_errors(body.get("errors"))
        text = "; ".join(parts) or f"{response.status_code} {response.reason}"
        return self._webhook.redact(text)[:_DETAIL_LIMIT]

    def _rate_limited(
        self, response: requests.Response, body: Mapping[str, Any], detail: str
    ) -> RateLimitedError:
        # Both say how long to wait; Discord calls Retry-After the override (its internal
        # limits answer a longer one than the bucket's), so the longer one wins.
        waits: list[float] = []
        for raw in (body.get("retry_after"), response.headers.get("Retry-After")):
            try:
                seconds = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if math.isfinite(seconds) and seconds >= 0:
                waits.append(seconds)
        delay = max(1, math.ceil(max(waits))) if waits else DEFAULT_RATE_LIMIT_DELAY
        scope = "global " if body.get("global") is True else ""
        shared = response.headers.get("X-RateLimit-Scope") == "shared"
        return RateLimitedError(
            f"Discord {scope}rate limit reached (429: {detail}"
            f"{'; a shared limit of the channel' if shared else ''}); waiting {delay}s",
            delay,
        )

    def _network_error(self, exc: requests.RequestException) -> PublishError:
        what = self._webhook.redact(f"{type(exc).__name__}: {exc}")[:_DETAIL_LIMIT]
        if _never_sent(exc):
            return TransientPublishError(f"could not reach Discord, nothing was sent ({what})")
        if isinstance(exc, requests.ReadTimeout):
            return UnknownOutcomeError(
                f"Discord did not answer within {self._timeout[1]}s after the post was sent: "
                "it may have been posted"
            )
        return UnknownOutcomeError(
            f"the connection to Discord failed after the post was sent ({what}): it may have been posted"
        )


def build(destination: Destination, secrets: Mapping[str, str], context: NetworkContext) -> DiscordPublisher:
    """The destination's publisher (:mod:`bmsuploader.post.destinations` calls this)."""
    parameter = f"{(destination.secret or '').rstrip('/')}/webhook_url"
    webhook = parse_webhook_url(secrets["webhook_url"], parameter=parameter)
    return DiscordPublisher(
        webhook,
        destination=destination.name,
        parameter=parameter,
        base_url=(context.base_urls or {}).get("discord"),
        timeout=context.timeout,
    )
