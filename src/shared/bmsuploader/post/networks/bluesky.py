"""Bluesky: the poster's edge to one account's PDS, in plain XRPC over HTTPS.

Four calls, JSON in and out, through ``requests`` (already in the poster):

* ``com.atproto.server.createSession`` -- handle + app password -> access and refresh JWTs.
  Limited to a few hundred a day per account, so it is called only when there is no
  usable session: the session is kept in the state table (``context.sessions``, keyed
  by destination) and reused by every container; an expired access token is renewed
  with ``com.atproto.server.refreshSession``, and only a refused refresh logs in again.
* ``com.atproto.repo.createRecord`` -- the post, in collection ``app.bsky.feed.post``,
  under a record key *we* choose: a TID derived from :attr:`PostRequest.key` and
  :attr:`PostRequest.created_at` (:func:`tid_for`), the same on every attempt.
* ``com.atproto.repo.getRecord`` -- does that key hold a post already?

**Why not the ``atproto`` package.** Measured on 2026-11-29 for the Lambda's platform
(``pip download atproto --only-binary=:all: --platform manylinux2014_aarch64
--python-version 3.13``): atproto 0.0.73 brings 21 wheels, 14.3 MB zipped and 50.8 MiB
unzipped; what the poster and layer do not already ship (cryptography, zstandard,
websockets, dnspython, libipld, cffi, httpx, anyio, click, ... and atproto itself) is
42.5 MiB unzipped, ten times the poster package's 4 MiB budget (scripts/bench.py), for
four JSON calls. It also pins httpx below 0.29.

**Exactly once.** A repeated record key can never make a second post (createRecord does
not overwrite; ``putRecord`` would, so it is never used). A PDS answers a repeated key
with a 500 today; so after any 5xx (or an "already exists"-style 400/409), and before
posting when an earlier attempt may have been accepted (``post.maybe_posted``), the key
is looked up with getRecord: a record there is our earlier attempt, returned as
``PublishResult(uri, duplicate=True)``. A record there with *other* text is a key
collision (or an entry rendered differently since), never silently read as done.

=============================================  ==========================================
the PDS says                                   we return / raise
=============================================  ==========================================
200 (createRecord)                             ``PublishResult(at:// uri)``
record already at our key (getRecord)          ``PublishResult(at:// uri, duplicate=True)``
400 ``ExpiredToken``/``InvalidToken``, 401     refresh the session (else log in), send once more
429                                            :class:`RateLimitedError` until ``ratelimit-reset``
login refused; token refused again; 403       :class:`AuthError` naming the fix
400 for this post (too long, invalid record)   :class:`PermanentPublishError` with its message
5xx, no record at our key; other statuses      :class:`TransientPublishError`
connect timeout, connection refused            :class:`TransientPublishError` (nothing sent)
read timeout, connection dropped after send    :class:`UnknownOutcomeError` (retry checks first)
=============================================  ==========================================

**Length.** A post is at most 300 graphemes *and* 3,000 UTF-8 bytes (the lexicon's
``maxGraphemes`` and ``maxLength``); :func:`bluesky_length` folds both into one number
against 300, which the renderer fits. Graphemes are counted without a new dependency by
:func:`grapheme_count`, which never counts fewer than Unicode's rules (the PDS counts
with ``Intl.Segmenter``): a post it passes is never refused as too long.

**Links and mentions.** Only facets make anything live on Bluesky: the entry URL gets one
link facet (UTF-8 byte offsets from :attr:`PostRequest.link`); scraped text gets no
facet, so it never becomes a mention, tag or link, whatever it holds.

No token or password is ever in a message, a repr or a log line.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

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
from bmsuploader.post.networks.base import (
    NetworkContext,
    PostRequest,
    PublishResult,
    SessionStore,
    json_object,
)
from bmsuploader.post.rules import PostRules

logger = logging.getLogger(__name__)

SECRET_NAMES = ("identifier", "app_password")
SECRET_HINT = (  # where the values come from (shown in the missing-parameter error)
    "identifier: the account's handle, e.g. name.bsky.social; app_password: an app password "  # noqa: S105
    "from Bluesky Settings > Privacy and security > App passwords"
)

MAX_GRAPHEMES = 300
MAX_BYTES = 3000
COLLECTION = "app.bsky.feed.post"
CREATE_SESSION = "com.atproto.server.createSession"
REFRESH_SESSION = "com.atproto.server.refreshSession"
CREATE_RECORD = "com.atproto.repo.createRecord"
GET_RECORD = "com.atproto.repo.getRecord"
#: no ``ratelimit-reset`` or ``retry-after`` header: wait a quarter hour (the queue caps it)
DEFAULT_RATE_LIMIT_DELAY = 900
_DETAIL_LIMIT = 300
_LOGIN_FIX = (
    "create an app password in Bluesky (Settings > Privacy and security > App passwords) "
    "and store it with aws ssm put-parameter --name {path}/app_password --type SecureString "
    "--value '<app password>' --overwrite (and the handle in {path}/identifier)"
)


# --- graphemes ----------------------------------------------------------------

# Grapheme_Cluster_Break classes (UAX #29), as far as this counter tells them apart.
_OTHER, _CR, _LF, _CONTROL, _EXTEND, _ZWJ, _SPACING, _RI, _L, _V, _T, _LV, _LVT, _PICT = range(14)

# Extended_Pictographic, as merged ranges: the code points both Unicode 15.1 (Python's
# tables, older PDS runtimes) and Unicode 17 (node 20's ICU 78, which dropped non-emoji
# symbols such as U+2388 and most mahjong tiles) give it, so a ZWJ joins a pictograph
# only where every PDS's ICU joins it. Unassigned code points of the emoji blocks are
# included (Unicode reserves them as pictographs): emoji newer than Python's tables
# still join their ZWJ sequences.
_PICTOGRAPHIC: Final = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122),
    (0x2139, 0x2139), (0x2194, 0x2199), (0x21A9, 0x21AA), (0x231A, 0x231B), (0x2328, 0x2328),
    (0x23CF, 0x23CF), (0x23E9, 0x23F3), (0x23F8, 0x23FA), (0x24C2, 0x24C2), (0x25AA, 0x25AB),
    (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE), (0x2600, 0x2604), (0x260E, 0x260E),
    (0x2611, 0x2611), (0x2614, 0x2615), (0x2618, 0x2618), (0x261D, 0x261D), (0x2620, 0x2620),
    (0x2622, 0x2623), (0x2626, 0x2626), (0x262A, 0x262A), (0x262E, 0x262F), (0x2638, 0x263A),
    (0x2640, 0x2640), (0x2642, 0x2642), (0x2648, 0x2653), (0x265F, 0x2660), (0x2663, 0x2663),
    (0x2665, 0x2666), (0x2668, 0x2668), (0x267B, 0x267B), (0x267E, 0x267F), (0x2692, 0x2697),
    (0x2699, 0x2699), (0x269B, 0x269C), (0x26A0, 0x26A1), (0x26A7, 0x26A7), (0x26AA, 0x26AB),
    (0x26B0, 0x26B1), (0x26BD, 0x26BE), (0x26C4, 0x26C5), (0x26C8, 0x26C8), (0x26CE, 0x26CF),
    (0x26D1, 0x26D1), (0x26D3, 0x26D4), (0x26E9, 0x26EA), (0x26F0, 0x26F5), (0x26F7, 0x26FA),
    (0x26FD, 0x26FD), (0x2702, 0x2702), (0x2705, 0x2705), (0x2708, 0x270D), (0x270F, 0x270F),
    (0x2712, 0x2712), (0x2714, 0x2714), (0x2716, 0x2716), (0x271D, 0x271D), (0x2721, 0x2721),
    (0x2728, 0x2728), (0x2733, 0x2734), (0x2744, 0x2744), (0x2747, 0x2747), (0x274C, 0x274C),
    (0x274E, 0x274E), (0x2753, 0x2755), (0x2757, 0x2757), (0x2763, 0x2764), (0x2795, 0x2797),
    (0x27A1, 0x27A1), (0x27B0, 0x27B0), (0x27BF, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B07),
    (0x2B1B, 0x2B1C), (0x2B50, 0x2B50), (0x2B55, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D),
    (0x3297, 0x3297), (0x3299, 0x3299), (0x1F004, 0x1F004), (0x1F02C, 0x1F02F), (0x1F094, 0x1F09F),
    (0x1F0AF, 0x1F0B0), (0x1F0C0, 0x1F0C0), (0x1F0CF, 0x1F0D0), (0x1F0F6, 0x1F0FF), (0x1F170, 0x1F171),
    (0x1F17E, 0x1F17F), (0x1F18E, 0x1F18E), (0x1F191, 0x1F19A), (0x1F1AE, 0x1F1E5), (0x1F201, 0x1F20F),
    (0x1F21A, 0x1F21A), (0x1F22F, 0x1F22F), (0x1F232, 0x1F23A), (0x1F23C, 0x1F23F), (0x1F249, 0x1F25F),
    (0x1F266, 0x1F321), (0x1F324, 0x1F393), (0x1F396, 0x1F397), (0x1F399, 0x1F39B), (0x1F39E, 0x1F3F0),
    (0x1F3F3, 0x1F3F5), (0x1F3F7, 0x1F3FA), (0x1F400, 0x1F4FD), (0x1F4FF, 0x1F53D), (0x1F549, 0x1F54E),
    (0x1F550, 0x1F567), (0x1F56F, 0x1F570), (0x1F573, 0x1F57A), (0x1F587, 0x1F587), (0x1F58A, 0x1F58D),
    (0x1F590, 0x1F590), (0x1F595, 0x1F596), (0x1F5A4, 0x1F5A5), (0x1F5A8, 0x1F5A8), (0x1F5B1, 0x1F5B2),
    (0x1F5BC, 0x1F5BC), (0x1F5C2, 0x1F5C4), (0x1F5D1, 0x1F5D3), (0x1F5DC, 0x1F5DE), (0x1F5E1, 0x1F5E1),
    (0x1F5E3, 0x1F5E3), (0x1F5E8, 0x1F5E8), (0x1F5EF, 0x1F5EF), (0x1F5F3, 0x1F5F3), (0x1F5FA, 0x1F64F),
    (0x1F680, 0x1F6C5), (0x1F6CB, 0x1F6D2), (0x1F6D5, 0x1F6E5), (0x1F6E9, 0x1F6E9), (0x1F6EB, 0x1F6F0),
    (0x1F6F3, 0x1F6FF), (0x1F7DA, 0x1F7FF), (0x1F80C, 0x1F80F), (0x1F848, 0x1F84F), (0x1F85A, 0x1F85F),
    (0x1F888, 0x1F88F), (0x1F8AE, 0x1F8AF), (0x1F8BC, 0x1F8BF), (0x1F8C2, 0x1F8CF), (0x1F8D9, 0x1F8FF),
    (0x1F90C, 0x1F93A), (0x1F93C, 0x1F945), (0x1F947, 0x1F9FF), (0x1FA58, 0x1FA5F), (0x1FA6E, 0x1FAFF),
    (0x1FC00, 0x1FFFD),
)  # fmt: skip

# Spacing marks (Mc) that Unicode leaves out of SpacingMark: they start a cluster.
_NOT_SPACING_MARKS: Final = frozenset(
    {0x102B, 0x102C, 0x1038, 0x1062, 0x1063, 0x1064, *range(0x1067, 0x106E), 0x1083}
    | {*range(0x1087, 0x108D), 0x108F, 0x109A, 0x109B, 0x109C, 0x1A61, 0x1A63, 0x1A64}
    | {0xAA7B, 0xAA7D, 0x11720, 0x11721}
)
# Prepended concatenation marks are format characters but no Control (they are Prepend).
_PREPEND_FORMAT: Final = frozenset([*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2])
_PREPEND_FORMAT_ASTRAL: Final = frozenset([0x110BD, 0x110CD])


_PICTOGRAPHIC_STARTS: Final = tuple(low for low, _ in _PICTOGRAPHIC)


def _is_pictographic(code: int) -> bool:
    index = bisect_right(_PICTOGRAPHIC_STARTS, code) - 1
    return index >= 0 and code <= _PICTOGRAPHIC[index][1]


@lru_cache(maxsize=8192)
def _break_class(ch: str) -> int:  # noqa: PLR0911, PLR0912 (one return per class: the table)
    """The character's class for the rules in :func:`grapheme_count`.

    Where this is unsure it errs towards a class that *breaks*: only classes that join
    (Extend, ZWJ, SpacingMark, Hangul, regional indicators, pictographs) must never be
    given to a character Unicode does not give them to.
    """
    code = ord(ch)
    if code == 0x0D:
        return _CR
    if code == 0x0A:
        return _LF
    if code == 0x200D:
        return _ZWJ
    # Grapheme_Extend beyond Mn/Me, and the emoji modifiers: ZWNJ, halfwidth kana
    # voiced sound marks (ﾊﾞ), skin tones, the tags of a region flag.
    if code in (0x200C, 0xFF9E, 0xFF9F) or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return _EXTEND
    if 0x1F1E6 <= code <= 0x1F1FF:
        return _RI
    if 0x1100 <= code <= 0x115F or 0xA960 <= code <= 0xA97C:
        return _L
    if 0x1160 <= code <= 0x11A7 or 0xD7B0 <= code <= 0xD7C6:
        return _V
    if 0x11A8 <= code <= 0x11FF or 0xD7CB <= code <= 0xD7FB:
        return _T
    if 0xAC00 <= code <= 0xD7A3:
        return _LV if (code - 0xAC00) % 28 == 0 else _LVT
    if _is_pictographic(code):
        return _PICT
    category = unicodedata.category(ch)
    if category in ("Mn", "Me"):
        return _EXTEND
    if (category == "Mc" and code not in _NOT_SPACING_MARKS) or code in (0x0E33, 0x0EB3):
        return _SPACING
    if code in _PREPEND_FORMAT or code in _PREPEND_FORMAT_ASTRAL:
        return _OTHER  # Prepend: joining what follows is not applied (never counts fewer)
    # Unassigned here (Cn) may be assigned in the PDS's newer Unicode: breaking on both
    # sides of it is the count that is never too low.
    if category in ("Cc", "Cf", "Zl", "Zp", "Cs", "Cn"):
        return _CONTROL
    return _OTHER


def _joins(before: int, after: int, ri_run: int, pict_zwj: bool) -> bool:  # noqa: PLR0911 (one per rule)
    """UAX #29's no-break rules GB3-GB13, except GB9b (Prepend) and GB9c (Indic conjuncts)."""
    if before == _CR and after == _LF:
        return True  # GB3
    if before in (_CONTROL, _CR, _LF) or after in (_CONTROL, _CR, _LF):
        return False  # GB4, GB5
    if before == _L and after in (_L, _V, _LV, _LVT):
        return True  # GB6
    if before in (_LV, _V) and after in (_V, _T):
        return True  # GB7
    if before in (_LVT, _T) and after == _T:
        return True  # GB8
    if after in (_EXTEND, _ZWJ, _SPACING):
        return True  # GB9, GB9a
    if pict_zwj and after == _PICT:
        return True  # GB11: ExtPict Extend* ZWJ x ExtPict
    return before == _RI and after == _RI and ri_run % 2 == 1  # GB12, GB13: flags are pairs


def grapheme_count(text: str) -> int:
    """Extended grapheme clusters in ``text``, never fewer than Unicode's rules count.

    UAX #29's rules over a conservative reading of the properties: CR LF, combining
    marks (``か`` + U+3099), spacing marks, ZWJ emoji sequences, variation selectors,
    skin tones, flags (regional-indicator pairs and tag sequences), Hangul jamo. Two
    rules are left out, and so count *more* than Unicode does: a prepended mark joined to
    what follows (Arabic number signs, a few Brahmic repha letters) and Indic conjuncts
    across a virama (GB9c; ``क्ष`` counts 2, Unicode 1). Characters Python's Unicode
    tables do not know yet break on both sides. Checked against node's
    ``Intl.Segmenter`` (what the PDS counts with) in tests/unit/test_bluesky_graphemes.py.
    """
    count = 0
    before = -1
    ri_run = 0  # regional indicators in a row, ending at ``before``
    pict = False  # ``before`` ends an ExtPict Extend* run
    pict_zwj = False  # ``before`` is the ZWJ after an ExtPict Extend* run
    for ch in text:
        after = _break_class(ch)
        if before < 0 or not _joins(before, after, ri_run, pict_zwj):
            count += 1
        ri_run = ri_run + 1 if after == _RI else 0
        pict_zwj = after == _ZWJ and pict
        pict = after == _PICT or (pict and after == _EXTEND)
        before = after
    return count


def bluesky_length(text: str) -> int:
    """One number for both limits, at most 300 when the post fits: its graphemes, or its
    UTF-8 bytes over ten (rounded up; 3,000 bytes = 300), whichever is more. A Japanese
    character is 3 bytes, an emoji family 25, so bytes bind only on emoji-heavy text."""
    size = len(text.encode("utf-8", "surrogatepass"))
    return max(grapheme_count(text), -(-size * MAX_GRAPHEMES // MAX_BYTES))


RULES = PostRules(network="bluesky", limit=MAX_GRAPHEMES, unit="graphemes", measure=bluesky_length)


# --- the record ---------------------------------------------------------------

TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"  # base32-sortable
TID_PATTERN = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_MICROS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_tid(timestamp_us: int, clock_id: int) -> str:
    """The TID of a timestamp (microseconds since the epoch, 53 bits) and a 10-bit clock id:
    13 base32-sortable characters of ``timestamp << 10 | clock_id``, top bit 0."""
    if not (0 <= timestamp_us < 2**53 and 0 <= clock_id < 2**10):
        raise ValueError(f"TID out of range: timestamp {timestamp_us}, clock id {clock_id}")
    value = timestamp_us << 10 | clock_id
    return "".join(TID_ALPHABET[(value >> shift) & 31] for shift in range(60, -1, -5))


def _utc(moment: datetime) -> datetime:
    """A message's time in UTC; a naive one is taken as UTC (the fetcher writes UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def tid_for(post: PostRequest) -> str:
    """The record key of ``post``: a valid TID, the same on every attempt, distinct per entry.

    Every entry of one fetch run has the same ``created_at``, so the clock id's 10 bits
    alone would collide often (about one run in three with 30 new entries). The key's
    hash therefore also picks the microseconds: the TID's time is a point in the second
    before ``created_at``'s whole second (never ahead of the clock), and each entry has
    one of about 2**30 keys in it (30 entries collide once in ~2.4 million runs; a
    collision is detected, see :meth:`BlueskyPublisher.publish`, not read as done).
    """
    digest = hashlib.sha256(post.key.encode()).digest()
    second = (_utc(post.created_at) - _EPOCH) // timedelta(seconds=1) * _MICROS
    spread = int.from_bytes(digest[:4], "big") % _MICROS
    clock_id = int.from_bytes(digest[4:6], "big") & 0x3FF
    return encode_tid(second - _MICROS + spread, clock_id)


# Kana is Japanese and nothing else; kanji alone is not (the default template's 新着差分).
_KANA = re.compile(r"[\u3041-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9d]")


def record_for(post: PostRequest, *, posted_at: datetime | None = None) -> dict[str, Any]:
    """The ``app.bsky.feed.post`` record: text, createdAt, one link facet, ``langs``.

    ``createdAt`` is when it is posted (default: now, on :mod:`bmsuploader.contract.clock`),
    not when the entry was fetched: timelines sort by the earlier of ``createdAt`` and the
    time the network received it, so a post delayed by an outage would otherwise appear
    backdated, below newer posts. The record key, not the time, keeps it once.

    ``langs`` is ``["ja"]`` when the post has kana (clients filter feeds by it), else
    left out: a post without ``langs`` is shown to readers of every language.
    """
    record: dict[str, Any] = {
        "$type": COLLECTION,
        "text": post.text,
        "createdAt": _utc(posted_at or contract_clock.now())
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }
    if _KANA.search(post.text):
        record["langs"] = ["ja"]
    if post.link is not None:
        record["facets"] = [link_facet(post.text, post.link)]
    return record


def link_facet(text: str, link: tuple[int, int]) -> dict[str, Any]:
    """A link facet over ``text[start:end]`` (character offsets), as UTF-8 byte offsets."""
    start, end = link
    if not 0 <= start < end <= len(text):
        raise ValueError(f"link span {link} is not inside a post of {len(text)} characters")
    byte_start = len(text[:start].encode())
    return {
        "index": {"byteStart": byte_start, "byteEnd": byte_start + len(text[start:end].encode())},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": text[start:end]}],
    }


# --- the publisher ------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class _Session:
    """A login session: tokens that post as the account. Never shown."""

    access_jwt: str = field(repr=False)
    refresh_jwt: str = field(repr=False)
    did: str
    handle: str
    #: the identifier it was made for: a stored session of another account is not used
    identifier: str = field(repr=False)

    def __repr__(self) -> str:
        return f"_Session(did={self.did!r}, handle={self.handle!r})"

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], identifier: str) -> _Session | None:
        names = ("accessJwt", "refreshJwt", "did", "handle")
        if not all(isinstance(answer.get(name), str) and answer[name] for name in names):
            return None
        return cls(answer["accessJwt"], answer["refreshJwt"], answer["did"], answer["handle"], identifier)

    def stored(self) -> dict[str, str]:
        return {
            "accessJwt": self.access_jwt,
            "refreshJwt": self.refresh_jwt,
            "did": self.did,
            "handle": self.handle,
            "identifier": self.identifier,
        }


def _error(response: requests.Response) -> tuple[str, str]:
    """An XRPC error's ``(error, message)``; empty strings when the body is not one."""
    body = json_object(response)
    return str(body.get("error") or ""), str(body.get("message") or "")[:_DETAIL_LIMIT]


def _detail(response: requests.Response) -> str:
    error, message = _error(response)
    return ": ".join(part for part in (error, message) if part) or f"{response.status_code} {response.reason}"


def _token_refused(response: requests.Response) -> bool:
    """The access token is expired or no longer valid: renew the session and try again."""
    return response.status_code == 401 or (
        response.status_code == 400 and _error(response)[0] in ("ExpiredToken", "InvalidToken")
    )


def _sent(exc: requests.RequestException) -> bool:
    """Whether the request may have reached the server: only a failed connect proves it did not."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason: BaseException | None = exc
    while reason is not None:
        if isinstance(reason, (NewConnectionError, ConnectTimeoutError)):
            return False
        reason = getattr(reason, "reason", None) or (
            reason.args[0] if reason.args and isinstance(reason.args[0], BaseException) else None
        )
    return True


class BlueskyPublisher:
    """Posts to one Bluesky account. Build once per container (and per set of secrets)."""

    def __init__(
        self,
        *,
        destination: str,
        identifier: str,
        app_password: str,
        base_url: str,
        sessions: SessionStore,
        timeout: tuple[float, float] = (3.05, 10.0),
        secret_path: str | None = None,
        clock: Callable[[], float] = contract_clock.epoch,
    ) -> None:
        if not re.match(r"^https?://[^/\s]+", base_url):
            raise ConfigError(f"Bluesky server {base_url!r} must be an http(s) URL")
        self._destination = destination
        self._identifier = identifier
        self._password = app_password
        self._base_url = base_url.rstrip("/")
        self._sessions = sessions
        self._timeout = timeout
        self._secret_path = secret_path or "<secret>"
        self._clock = clock
        self._session: _Session | None = None
        self._http = requests.Session()
        adapter = HTTPAdapter(max_retries=0)  # never retried here: a retry is the poster's decision
        self._http.mount("https://", adapter)
        self._http.mount("http://", adapter)

    def __repr__(self) -> str:
        return f"BlueskyPublisher(destination={self._destination!r}, server={self._base_url!r})"

    __str__ = __repr__

    # --- publishing -----------------------------------------------------------

    def publish(self, post: PostRequest) -> PublishResult:
        """Post ``post`` under its own record key; the one place the PDS's answers are mapped."""
        rkey = tid_for(post)
        if post.maybe_posted and (found := self._existing(rkey, post)) is not None:
            return found
        session = self._current_session()
        body = {"repo": session.did, "collection": COLLECTION, "rkey": rkey, "record": record_for(post)}
        response = self._xrpc("POST", CREATE_RECORD, json=body, posting=True)
        status = response.status_code
        if status == 200:
            uri = json_object(response).get("uri")
            if not isinstance(uri, str) or not uri:
                raise UnknownOutcomeError("Bluesky answered createRecord 200 without a record uri")
            return PublishResult(tweet_id=uri)
        if status == 429:
            raise self._rate_limited(response, "posting")
        error, message = _error(response)
        if status >= 500 or status == 409 or error == "InvalidSwap" or "already exist" in message.lower():
            # A repeated record key answers 500 today: is our post there already?
            if (found := self._existing(rkey, post)) is not None:
                return found
            if status == 400:
                raise TransientPublishError(
                    f"Bluesky refused the post as a conflict ({_detail(response)}) but no record is at "
                    f"its key {rkey}"
                )
            raise TransientPublishError(f"Bluesky answered {status}: {_detail(response)}")
        if status == 403:
            raise AuthError(
                f"Bluesky refused the post (403 {_detail(response)}): check the account "
                f"({session.handle}) is active and allowed to post"
            )
        if status in (400, 413):
            raise PermanentPublishError(f"Bluesky rejected the post ({status}): {_detail(response)}")
        raise TransientPublishError(f"Bluesky answered {status}: {_detail(response)}")

    def _existing(self, rkey: str, post: PostRequest) -> PublishResult | None:
        """Our post at ``rkey``, as a duplicate result; ``None`` when the key is free."""
        session = self._current_session()
        params = {"repo": session.did, "collection": COLLECTION, "rkey": rkey}
        response = self._xrpc("GET", GET_RECORD, params=params)
        if response.status_code == 400 and _error(response)[0] == "RecordNotFound":
            return None
        if response.status_code == 429:
            raise self._rate_limited(response, "checking for an earlier post")
        if response.status_code == 403:
            raise AuthError(f"Bluesky refused getRecord (403 {_detail(response)})")
        if response.status_code != 200:
            raise TransientPublishError(
                f"could not check whether an earlier attempt posted (getRecord answered "
                f"{response.status_code}: {_detail(response)})"
            )
        answer = json_object(response)
        value = answer.get("value")
        uri = answer.get("uri")
        if not isinstance(value, dict) or not isinstance(uri, str):
            raise TransientPublishError("Bluesky answered getRecord 200 without a record")
        if value.get("text") != post.text:
            raise PermanentPublishError(
                f"record key {rkey} already holds a different post ({uri}): two entries' keys "
                "collided, or this entry rendered differently on an earlier attempt (template "
                "changed). Look at the account; redrive the message only if the entry is missing"
            )
        return PublishResult(tweet_id=uri, duplicate=True)

    # --- the session ----------------------------------------------------------

    def _current_session(self) -> _Session:
        """The session in memory, else the stored one, else a new login (stored)."""
        if self._session is None:
            self._session = self._stored_session() or self._create_session()
        return self._session

    def _stored_session(self) -> _Session | None:
        try:
            stored = self._sessions.load(self._destination)
        except Exception as exc:  # any store's failure (DynamoDB: ClientError, BotoCoreError)
            raise TransientPublishError(
                f"could not read the stored Bluesky session of {self._destination}: {type(exc).__name__}"
            ) from exc
        if not stored or stored.get("identifier") != self._identifier:
            return None  # never stored, or another account's (the identifier was changed)
        return _Session.from_answer(stored, self._identifier)

    def _save(self, session: _Session) -> _Session:
        self._session = session
        try:
            self._sessions.save(self._destination, session.stored())
        except Exception:
            # The session still works from memory; the next cold start logs in again.
            logger.warning(
                "could not store the Bluesky session",
                extra={"destination": self._destination},
                exc_info=True,
            )
        return session

    def _renew(self, refused: _Session) -> _Session:
        """A session to replace ``refused``: refreshed, else another container's, else a new login."""
        if (session := self._refresh(refused)) is not None:
            return session
        stored = self._stored_session()  # another container may have refreshed (rotating the token)
        if (
            stored is not None
            and stored.refresh_jwt != refused.refresh_jwt
            and (session := self._refresh(stored)) is not None
        ):
            return session
        return self._create_session()

    def _refresh(self, session: _Session) -> _Session | None:
        response = self._send("POST", REFRESH_SESSION, token=session.refresh_jwt)
        if response.status_code == 429:
            raise self._rate_limited(response, "refreshing the session")
        if response.status_code >= 500:
            raise TransientPublishError(f"Bluesky refreshSession answered {response.status_code}")
        renewed = _Session.from_answer(json_object(response), self._identifier) if response.ok else None
        return self._save(renewed) if renewed is not None else None

    def _create_session(self) -> _Session:
        """Log in with the app password. Counted against the account's daily login limit."""
        response = self._send(
            "POST", CREATE_SESSION, json={"identifier": self._identifier, "password": self._password}
        )
        if response.status_code == 429:
            raise self._rate_limited(response, "logging in (createSession allows a few hundred a day)")
        if response.status_code >= 500:
            raise TransientPublishError(f"Bluesky createSession answered {response.status_code}")
        error, _ = _error(response)
        if error == "AuthFactorTokenRequired":
            raise AuthError(
                "Bluesky asks for an email sign-in code: the stored password is the account "
                "password, not an app password. " + _LOGIN_FIX.format(path=self._secret_path)
            )
        if not response.ok:
            raise AuthError(
                f"Bluesky refused the login ({response.status_code} {_detail(response)}): the "
                f"identifier or app password under {self._secret_path} is wrong or revoked. "
                + _LOGIN_FIX.format(path=self._secret_path)
            )
        session = _Session.from_answer(json_object(response), self._identifier)
        if session is None:
            raise TransientPublishError("Bluesky answered createSession 200 without a session")
        logger.info("logged in to Bluesky", extra={"destination": self._destination, "did": session.did})
        return self._save(session)

    # --- HTTP -----------------------------------------------------------------

    def _xrpc(
        self,
        method: str,
        nsid: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        posting: bool = False,
    ) -> requests.Response:
        """An authenticated call; a refused access token renews the session once and resends.

        Resending is safe: a request refused for its token changed nothing.
        """
        session = self._current_session()
        response = self._send(
            method, nsid, token=session.access_jwt, params=params, json=json, posting=posting
        )
        if not _token_refused(response):
            return response
        renewed = self._session = self._renew(session)
        response = self._send(
            method, nsid, token=renewed.access_jwt, params=params, json=json, posting=posting
        )
        if _token_refused(response):
            raise AuthError(
                f"Bluesky refused {nsid} ({response.status_code} {_detail(response)}) even with a fresh "
                f"session: check the account ({renewed.handle}) is active and allowed to post"
            )
        return response

    def _send(
        self,
        method: str,
        nsid: str,
        *,
        token: str | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        posting: bool = False,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            return self._http.request(
                method,
                f"{self._base_url}/xrpc/{nsid}",
                params=params,
                json=json,
                headers=headers,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            # Neither the request (it holds the tokens) nor the exception's text (it may
            # carry the URL) goes into the message: its type says what happened.
            if posting and _sent(exc):
                raise UnknownOutcomeError(
                    f"Bluesky {nsid} sent but not answered ({type(exc).__name__}): the post may "
                    "exist; the next attempt looks it up first"
                ) from None
            raise TransientPublishError(f"could not reach Bluesky for {nsid}: {type(exc).__name__}") from None

    def _rate_limited(self, response: requests.Response, doing: str) -> RateLimitedError:
        delay = DEFAULT_RATE_LIMIT_DELAY
        reset = response.headers.get("ratelimit-reset")
        retry_after = response.headers.get("retry-after")
        try:
            if reset is not None:
                delay = max(1, int(reset) - int(self._clock()))
            elif retry_after is not None:
                delay = max(1, int(retry_after))
        except ValueError:
            pass  # an unreadable header: the default delay
        return RateLimitedError(
            f"Bluesky rate limit reached while {doing} (429 {_detail(response)}); waiting {delay}s", delay
        )


def build(destination: Destination, secrets: Mapping[str, str], context: NetworkContext) -> BlueskyPublisher:
    """The publisher of a ``bluesky`` destination: its PDS (or the fake server of
    ``context.base_urls["bluesky"]``), its secrets, the poster's session store and timeout."""
    base_url = (context.base_urls or {}).get("bluesky") or destination.server
    assert base_url is not None  # Destination.server defaults a bluesky destination to bsky.social
    return BlueskyPublisher(
        destination=destination.name,
        identifier=secrets["identifier"],
        app_password=secrets["app_password"],
        base_url=base_url,
        sessions=context.sessions,
        timeout=context.timeout,
        secret_path=destination.secret,
    )


__all__ = [
    "RULES",
    "SECRET_HINT",
    "SECRET_NAMES",
    "BlueskyPublisher",
    "bluesky_length",
    "build",
    "encode_tid",
    "grapheme_count",
    "link_facet",
    "record_for",
    "tid_for",
]
