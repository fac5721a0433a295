"""X's text rules (bmsuploader.post.tweet_text) against X's official twitter-text library.

Two kinds of test: cases written here (each one a place where the unmaintained
Python port twitter-text-parser disagreed with the official library), and
comparisons with the official library itself, run by node on fuzzed text.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from bmsuploader.post.tweet_text import (
    Entity,
    extract_cashtags,
    extract_entities,
    extract_hashtags,
    extract_mentions,
    extract_urls,
    weighted_length,
)
from tests.x_oracle import judge, requires_node


def spans(entities: list[Entity]) -> list[tuple[int, int]]:
    return [(e.start, e.end) for e in entities]


def linked(text: str) -> list[str]:
    return [text[e.start : e.end] for e in extract_urls(text)]


# --- weights ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("abc", 3),
        ("曲名", 4),  # CJK 2
        ("ｶﾀ", 4),  # half-width kana 2 too
        ("\u2013\u2019\u2033", 3),  # the weight-1 punctuation ranges
        ("…", 2),
        ("https://uploader.example.jp/bms/" + "a" * 300 + ".zip", 23),  # any URL 23
        ("a.jp 曲", 26),
        ("👨\u200d👩\u200d👧", 2),  # a family is one emoji
        ("👍🏽", 2),
        ("🥱", 2),  # Emoji 12: unknown to the library, but any astral character weighs 2
        ("🧑\u200d🤝\u200d🧑", 8),  # an Emoji 12 sequence: the library counts its parts
        ("©", 1),
        ("©\ufe0f", 2),
        ("e\u0301", 1),  # NFC first
        ("x\ufffdme﹫example.jpｶﾀ", 34),  # the port said 21 (no link for it)
    ],
)
def test_weighted_length(text: str, weight: int) -> None:
    assert weighted_length(text) == weight


# --- links --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "links"),
    [
        ("x\ufffdme﹫example.jp", ["example.jp"]),  # U+FFFD: Python's IDNA rejects, X does not
        ("\ue000song.zip", ["song.zip"]),  # a Windows 外字 (cp932 0xF040)
        ("\ufffdsong.zip", ["song.zip"]),
        ("曲名、x-y.tv", ["x-y.tv"]),
        ("EXAMPLE.COM/Path", ["EXAMPLE.COM/Path"]),
        ("a.ſk", []),  # Python's IGNORECASE folds ſ to s; JavaScript's does not
        ("http://a.jp/x^#y", ["http://a.jp/x"]),
        ("https://t.co/abc123?x=1 more", ["https://t.co/abc123?x=1"]),
        ("song.zip", ["song.zip"]),
        ("/song.zip", []),  # a path, not a domain
        ("http://127.0.0.1/up.zip", []),
        ("a" * 64 + ".jp", []),  # a label longer than 63
        # ... counted in punycode from the low half of the first emoji (JavaScript reads UTF-16)
        ("🥳🍝🎹👩🏿\u200d🎓📊🙏👮🏾\u200d♀🍐🦹\u200d♀🤶🏼🧙🏿\u200d♀a.jp", []),
    ],
)
def test_links(text: str, links: list[str]) -> None:
    assert linked(text) == links


# --- mentions, hashtags, cashtags ---------------------------------------------------


def test_mentions_lists_and_what_is_none() -> None:
    text = "@jack ＠jill RT:@bob a@b.c @x/list-1 @@y @é"
    assert [text[e.start : e.end] for e in extract_mentions(text)] == ["@jack", "＠jill", "@bob", "@x/list-1"]


def test_hashtags_need_a_letter_and_a_boundary() -> None:
    text = "#BMS ＃差分 #123 a#b &#x #t#u #ok♪ 曲#タグ"
    assert [text[e.start : e.end] for e in extract_hashtags(text)] == ["#BMS", "＃差分", "#ok"]


def test_cashtags() -> None:
    text = "$TSLA $ab.c $toolong x$AB ＄AB $BRK.A."
    assert [text[e.start : e.end] for e in extract_cashtags(text)] == ["$TSLA", "$ab.c", "$BRK.A"]


def test_entities_inside_a_link_are_not_entities() -> None:
    text = "https://a.jp/@jack#tag $AB"
    assert [(e.kind, text[e.start : e.end]) for e in extract_entities(text)] == [
        ("url", "https://a.jp/@jack#tag"),
        ("cashtag", "$AB"),
    ]


# --- against the official library ---------------------------------------------------

PIECES = [
    *"abcxyzABCZ0189 ._-/:?=&#@$%()[]~+!*',;|^{}\\\"<>",
    *["＠", "＃", "﹫", "♯", "＄", "、", "。", "．", "\ufffd", "\ue000", "\u3000", "\n", "\t", "\u2024"],
    *["jp", "com", "zip", "tv", "co", "bms", "xn--", "http://", "https://", "t.co/", "www.", "example"],
    *["曲", "名", "ｶﾀ", "ア", "ー", "😀", "👍", "🏽", "\u200d", "\ufe0f", "👨", "👩", "👧", "🇯", "🇵", "©"],
    *["™", "#️⃣", "1\u20e3", "\u0301", "ж", "Ж", "ε", "Ελ", "рф", "ſ", "K", "İ", "ı", "é", "Ÿ", "ÿ"],
    *["\u200e", "\u202e", "\u2066", "RT:", "rt", "&", "\u2013", "\U0001d4b3", "𠀀", "\ufeff", "ᄀ", "\x85"],
]


def ours(text: str) -> dict[str, Any]:
    return {
        "weightedLength": weighted_length(text),
        "urls": spans(extract_urls(text)),
        "mentions": spans(extract_mentions(text)),
        "hashtags": spans(extract_hashtags(text)),
        "cashtags": spans(extract_cashtags(text)),
        "entities": [(e.kind, e.start, e.end) for e in extract_entities(text)],
    }


def official(judged: dict[str, Any]) -> dict[str, Any]:
    return {
        "weightedLength": judged["weightedLength"],
        **{key: [(s, e) for s, e, _ in judged[key]] for key in ("urls", "mentions", "hashtags", "cashtags")},
        "entities": [tuple(e) for e in judged["entities"]],
    }


@requires_node
def test_agrees_with_the_official_library_on_fuzzed_text() -> None:
    rng = random.Random(20261129)  # fixed: the same texts every run
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 30))) for _ in range(2000)]
    disagreements = [
        (text, mine, theirs)
        for text, judged in zip(texts, judge(texts), strict=True)
        if (mine := ours(text)) != (theirs := official(judged))
    ]
    assert not disagreements[:5], f"{len(disagreements)} of {len(texts)} differ"


@requires_node
def test_emoji_weights_agree_with_the_official_library() -> None:
    from scripts.emoji_table import candidates

    sequences = candidates()
    parts = sorted({ch for s in sequences for ch in s})
    rng = random.Random(7)
    texts = [
        "".join(
            rng.choice(rng.choice((sequences, parts, ["a", "曲", " ", "\u200d", "\ufe0f", "a.jp"])))
            for _ in range(12)
        )
        for _ in range(1500)
    ]
    judged = judge(texts)
    wrong = [(t, weighted_length(t), j["weightedLength"]) for t, j in zip(texts, judged, strict=True)]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert not wrong[:5], f"{len(wrong)} of {len(texts)} differ"


@requires_node
def test_the_emoji_table_is_current() -> None:
    from scripts.emoji_table import table

    from bmsuploader.post.tweet_text import _EMOJI_FILE

    assert _EMOJI_FILE.read_text(encoding="ascii") == table(), "run scripts/emoji_table.py"


@requires_node
def test_the_top_level_domains_are_the_official_ones() -> None:
    # The TLD lists come from the port's package; every one must link as in the official library.
    from bmsuploader.post.tweet_text import _tlds

    names = _tlds("regexp/valid_gtld.py") + _tlds("regexp/valid_cctld.py")
    texts = [f"x.{name} x.{name}x" for name in names]
    judged = judge(texts)
    assert all(j["urls"] and j["urls"][0][:2] == [0, 2 + len(n)] for n, j in zip(names, judged, strict=True))
    assert [spans(extract_urls(t)) for t in texts] == [[tuple(u[:2]) for u in j["urls"]] for j in judged]
    assert len(names) > 1500 and all(re.fullmatch(r"[^|()]+", n) for n in names)


@pytest.mark.parametrize("relative", ["regexp/valid_gtld.py", "regexp/valid_cctld.py"])
def test_each_tld_list_puts_a_tld_before_its_prefixes(relative: str) -> None:
    # The official alternation takes the first TLD in list order; tweet_text's trie takes the
    # longest. They agree only while no TLD comes after one of its own prefixes.
    from bmsuploader.post.tweet_text import _tlds

    names = [name.upper() for name in _tlds(relative)]
    position = {name: index for index, name in enumerate(names)}
    late = [(a, b) for a in names for b in names if a != b and a.startswith(b) and position[a] > position[b]]
    assert late == []
