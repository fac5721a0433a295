"""Bluesky's grapheme count, judged by node's ``Intl.Segmenter`` (what the PDS counts with).

The promise of :func:`~bmsuploader.post.networks.bluesky.grapheme_count`: never fewer
clusters than Unicode's rules, so a post the renderer fits is never refused as too long;
exactly as many for the text this bot posts (Japanese, Latin, emoji, flags, Hangul).
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bmsuploader.post.networks.bluesky import _break_class, grapheme_count
from tests.segmenter_oracle import around, counts, requires_node

FAMILY = "👨\u200d👩\u200d👧\u200d👦"
ENGLAND = "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("BMS", 3),
        ("星の欠片", 4),
        ("【新着差分】", 6),
        ("か\u3099", 1),  # combining voiced sound mark: one が (what NFC makes of it)
        ("か゛", 2),  # the spacing mark U+309B is a character of its own
        ("ﾊﾟﾋﾞ", 2),  # halfwidth kana and their halfwidth (extending) marks
        ("e\u0301\u0323", 1),
        (FAMILY, 1),
        ("👍🏽", 1),  # skin tone
        ("❤\ufe0f", 1),  # VS16
        ("🏳\ufe0f\u200d🌈", 1),
        ("🇯🇵", 1),
        ("🇯🇵🇺🇸", 2),
        ("🇯🇵🇺", 2),  # an odd indicator stands alone
        (ENGLAND, 1),  # tag sequence
        ("\r\n", 1),
        ("\n\r", 2),
        ("한국어", 3),
        ("\u1100\u1161\u11a8", 1),  # conjoining jamo: one syllable
        ("a\u200d😀", 2),  # ZWJ joins a pictograph only after a pictograph
        ("😀\u200d", 1),
        ("\u200d😀", 2),
        ("a\u00adb", 3),  # soft hyphen is a control
        ("\x00\u0301", 2),  # a control takes no marks
    ],
)
def test_grapheme_count(text: str, expected: int) -> None:
    assert grapheme_count(text) == expected


def test_what_it_counts_higher_than_unicode_on_purpose() -> None:
    # Indic conjuncts (GB9c) and prepended marks (GB9b) are not joined: more, never fewer.
    assert grapheme_count("क्ष") == 2  # Unicode 15.1+: 1
    assert grapheme_count("\u0600\u0661") == 2  # Unicode: 1


@requires_node
def test_the_fixed_cases_agree_with_intl_segmenter() -> None:
    texts = [
        "星の欠片",
        "か\u3099",
        "ﾊﾟﾋﾞ",
        FAMILY,
        "👍🏽",
        "🇯🇵🇺",
        ENGLAND,
        "\r\n",
        "한국어",
        "\u1100\u1161\u11a8",
    ]
    assert [grapheme_count(t) for t in texts] == counts(texts)


# Where a code point could make this counter count too few: every context in which it
# would join the code point to its neighbour. Sent to node only where it joins.
CONTEXTS = [
    ("a", ""),  # joins what is before it (Extend, ZWJ, SpacingMark)
    ("", "\u0300"),  # takes a combining mark (anything but a control)
    ("\u1100", ""),  # Hangul: after L
    ("", "\u1161"),  # before V
    ("", "\u11a8"),  # before T
    ("😀\u200d", ""),  # a pictograph after ZWJ
    ("", "\u200d😀"),  # a pictograph before ZWJ
    ("🇦", ""),  # a regional indicator after one
]


@requires_node
def test_never_fewer_than_intl_segmenter_around_every_code_point() -> None:
    classify = _break_class.__wrapped__  # uncached: 1.1 million code points
    classes = [classify(chr(code)) for code in range(0x110000)]
    representative: dict[int, str] = {}
    for code, found in enumerate(classes):
        representative.setdefault(found, chr(code))
    cases = []
    for prefix, suffix in CONTEXTS:
        apart = grapheme_count(prefix + "\x00" + suffix)  # a control: nothing joins
        mine = {found: grapheme_count(prefix + ch + suffix) for found, ch in representative.items()}
        joined = [code for code, found in enumerate(classes) if mine[found] < apart]
        cases.append((prefix, suffix, joined, mine))
    judged = around([(prefix, suffix, joined) for prefix, suffix, joined, _ in cases])
    too_few = [
        (prefix, suffix, f"U+{code:04X}", unicodedata.name(chr(code), "?"), mine[classes[code]], theirs)
        for (prefix, suffix, joined, mine), found in zip(cases, judged, strict=True)
        for code, theirs in zip(joined, found, strict=True)
        if mine[classes[code]] < theirs
    ]
    assert not too_few, f"{len(too_few)} code points joined where Unicode breaks: {too_few[:20]}"
    assert sum(len(joined) for _, _, joined, _ in cases) > 500_000  # the test looked at them


# Pieces of text: what the bot posts (exact), and scripts it only approximates (never fewer).
COMMON = [
    *"あアｱﾞﾟか漢aeZ1 ~#@.\r\n\t",
    *[
        "\u3099",
        "\u309a",
        "゛",
        "\u0301",
        "\u0300",
        "\u200d",
        "\u200c",
        "\ufe0f",
        "\ufe0e",
        "\ufeff",
        "\u00ad",
    ],
    *[
        "😀",
        "👨",
        "👩",
        "👧",
        "🏽",
        "🇯",
        "🇵",
        "🇺",
        "🏴",
        "\U000e0067",
        "\U000e007f",
        "❤",
        "☺",
        "©",
        "♯",
        "★",
        "①",
    ],
    *["\u1100", "\u1161", "\u11a8", "가", "각", "한", "\ue000", "\U0001faea"],
]
HARD = [
    "क",
    "\u094d",
    "ष",
    "ि",
    "ं",
    "\u0600",
    "\u0d4e",
    "\U000110bd",
    "\u0e33",
    "\u0890",
    "\U0010fffd",
    "\u0378",
]


def _texts(alphabet: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(
        st.lists(st.sampled_from(alphabet), min_size=1, max_size=16).map("".join), min_size=200, max_size=200
    )


JUDGED = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@requires_node
@JUDGED
@given(_texts(COMMON))
def test_exactly_intl_segmenters_count_on_the_text_this_bot_posts(batch: list[str]) -> None:
    wrong = [
        (t, grapheme_count(t), n) for t, n in zip(batch, counts(batch), strict=True) if grapheme_count(t) != n
    ]
    assert not wrong, wrong[:10]


@requires_node
@JUDGED
@given(_texts(COMMON + HARD))
def test_never_fewer_than_intl_segmenter_in_any_script(batch: list[str]) -> None:
    wrong = [
        (t, grapheme_count(t), n) for t, n in zip(batch, counts(batch), strict=True) if grapheme_count(t) < n
    ]
    assert not wrong, wrong[:10]
