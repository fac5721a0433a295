"""Rendering: message -> post text. Pure functions, plain data, no network."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bmsuploader.config.templates import DEFAULT_TEMPLATE
from bmsuploader.contract.errors import PoisonMessageError
from bmsuploader.contract.message import EntryMessage
from bmsuploader.post import tweet_text
from bmsuploader.post.rendering import MAX_WEIGHTED_LENGTH, clean_text, neutralise, render_post
from bmsuploader.post.tweet_text import extract_entities, weighted_length


def extract_urls(text: str) -> list[str]:
    """What X links in ``text`` (tweet_text agrees with the official library; see its tests)."""
    return [text[e.start : e.end] for e in tweet_text.extract_urls(text)]


def live_tags(text: str) -> list[str]:
    """Mentions, hashtags and cashtags X would make live in ``text``."""
    return [text[e.start : e.end] for e in extract_entities(text) if e.kind != "url"]


URL = "https://uploader.example.jp/bms/upload.cgi?get=00123"

# The installed twitter-text port has URL and emoji extractors only, so the entity
# triggers are taken from twitter-text's own definitions (js/src/regexp: atSigns
# [@＠], hashSigns [#＃], validCashtag "$" + letters) and made STRICTER than X:
# any trigger followed by something that could start an entity counts. Text
# free of these matches can hold no mention, hashtag or cashtag.
MENTION_TRIGGER = re.compile(r"[@＠][A-Za-z0-9_]")
HASHTAG_TRIGGER = re.compile(r"[#＃]\S")
CASHTAG_TRIGGER = re.compile(r"\$[A-Za-z]")
# A faithful-enough hashtag for the positive case: boundary, sign, word with a letter.
HASHTAG = re.compile(r"(?:^|(?<=[^\w&]))[#＃](?!\uFE0F|\u20E3)(\w*[^\W\d_]\w*)")

HOSTILE = "@jack ＠everyone #拡散希望 ＃RT $TSLA mail@example.com C# song.bms www.example.com"


def entry(**overrides: Any) -> EntryMessage:
    fields: dict[str, Any] = {
        "source": "example",
        "entry_id": "00123",
        "title": "星の欠片 [ANOTHER]",
        "url": URL,
        "comment": "差分です",
        "fetched_at": datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return EntryMessage(**fields)


def triggers(text: str) -> list[str]:
    return [
        m.group() for rx in (MENTION_TRIGGER, HASHTAG_TRIGGER, CASHTAG_TRIGGER) for m in rx.finditer(text)
    ]


# --- clean_text ---------------------------------------------------------------


def test_clean_text_normalises_to_nfc() -> None:
    decomposed = "e\u0301 \u304b\u3099"  # e + combining acute, か + combining dakuten
    assert clean_text(decomposed) == "é が"
    assert len(clean_text(decomposed)) == 3


def test_clean_text_drops_control_and_invisible_format_characters() -> None:
    dirty = "曲\x00名\u200b[\u202eSPA\u202c]\ufeff\u00ad\x7f\u2066x\u2069"
    assert clean_text(dirty) == "曲名[SPA]x"


def test_clean_text_turns_line_breaks_and_tabs_into_single_spaces() -> None:
    assert clean_text("  曲名\r\n\n\tアーティスト \u00a0 remix  ") == "曲名 アーティスト remix"


def test_clean_text_keeps_a_lone_ideographic_space() -> None:
    assert clean_text("曲名\u3000作者") == "曲名\u3000作者"
    assert clean_text("曲名 \u3000 作者") == "曲名 作者"


FAMILY = "👨\u200d👩\u200d👧"
ENGLAND = "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


@pytest.mark.parametrize("emoji", [FAMILY, "👩🏽\u200d💻", "🏳️\u200d🌈", "❤️\u200d🔥", "👁️\u200d🗨️", ENGLAND])
def test_clean_text_keeps_emoji_sequences_whole(emoji: str) -> None:
    # A zero-width joiner (or a flag's tag characters) is invisible but part of the emoji:
    # without it a family becomes three people.
    assert clean_text(f"曲名 {emoji} 差分") == f"曲名 {emoji} 差分"


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("a\u200db", "ab"),
        ("\u200d👍", "👍"),
        ("👍\u200d", "👍"),
        ("👍\u200d\u200d👍", "👍\u200d👍"),
        ("曲\u200d👍", "曲👍"),
        ("\U000e0067\U000e007f", ""),  # tag characters outside a flag
    ],
)
def test_clean_text_drops_joiners_outside_emoji(dirty: str, clean: str) -> None:
    assert clean_text(dirty) == clean


def test_a_family_emoji_weighs_two_and_is_never_cut_in_half() -> None:
    post = render_post(
        entry(title="曲" * 130 + FAMILY * 20, comment=""), template="{title}", include_link=False
    )
    assert post.weighted_length <= MAX_WEIGHTED_LENGTH
    body = post.text.removesuffix("…")
    assert body.endswith(FAMILY)
    assert weighted_length(FAMILY) == 2


# --- neutralise ---------------------------------------------------------------


@pytest.mark.parametrize(
    "scraped",
    ["@jack", "＠jack", "#hashtag", "＃ハッシュタグ", "$TSLA", "x $ab.c", "RT:@jack", "#_BMS", "曲名#"],
)
def test_neutralise_leaves_no_entity_trigger(scraped: str) -> None:
    assert triggers(scraped) or scraped.endswith("#")  # the input really is a trigger
    safe = neutralise(scraped)
    assert triggers(safe) == []
    assert not any(ch in safe for ch in "@＠#＃$")


def test_full_width_signs_are_not_a_safe_stand_in() -> None:
    # twitter-text treats FULL-WIDTH ＠ and ＃ as mention / hashtag signs too.
    assert HASHTAG.search("＃ハッシュタグ")
    assert neutralise("@jack #tag") == "﹫jack ♯tag"


@pytest.mark.parametrize(
    "scraped", ["song.bms", "song.zip", "example.jp", "https://evil.example.com/x", "www.example.com/a"]
)
def test_neutralise_breaks_accidental_links(scraped: str) -> None:
    assert extract_urls(scraped)  # X would link this (and bill the post as a URL post)
    assert extract_urls(neutralise(scraped)) == []


@pytest.mark.parametrize(
    "scraped",
    [
        "曲名、x-y.tv",  # after an ideographic comma
        "\ue000song.zip",  # a Windows 外字 (cp932 0xF040 -> U+E000)
        "\ufffdsong.zip",
        "x\ufffdme﹫example.jpｶﾀ",  # ﹫ is no at sign, so this is a link
        "🥳🍝🎹👩🏿\u200d🎓📊🙏a.jp",
    ],
)
def test_neutralise_breaks_links_only_the_official_library_finds(scraped: str) -> None:
    assert extract_urls(scraped)
    assert extract_urls(neutralise(scraped)) == []


def test_neutralise_is_idempotent() -> None:
    once = neutralise(HOSTILE)
    assert neutralise(once) == once


# --- render_post: safety ------------------------------------------------------


def test_scraped_fields_create_no_mention_hashtag_cashtag_or_link() -> None:
    message = entry(title=HOSTILE, comment=HOSTILE, filename="@x #y $Z.zip", size="$A", entry_id="#1")
    template = "{title} / {comment} / {filename} {size} {entry_id} / {url}"
    post = render_post(message, template=template, include_link=True)
    assert triggers(post.text) == []
    assert extract_urls(post.text) == [URL]
    assert post.has_url


def test_template_literal_hashtag_stays_live_but_not_one_built_from_scraped_text() -> None:
    post = render_post(entry(title="#偽タグ 曲"), template="#BMS新着 #{title} {url}", include_link=True)
    assert [m.group(1) for m in HASHTAG.finditer(post.text)] == ["BMS新着"]
    assert post.text.startswith("#BMS新着 ♯♯偽タグ 曲 ")


def test_a_literal_at_sign_before_a_field_cannot_mention_scraped_text() -> None:
    post = render_post(entry(title="jack"), template="@{title}", include_link=True)
    assert triggers(post.text) == []


def test_adjacent_placeholders_cannot_form_a_link() -> None:
    post = render_post(entry(title="x", comment="com"), template="{title}.{comment}", include_link=False)
    assert extract_urls(post.text) == []
    assert not post.has_url


def test_adjacent_placeholders_cannot_form_a_tag() -> None:
    post = render_post(entry(title="!", comment="BMS"), template="#BMS {title}#{comment}", include_link=False)
    assert live_tags(post.text) == ["#BMS"]


def test_an_entry_url_cannot_leave_a_live_hashtag_behind_it() -> None:
    url = "https://uploader.example.jp/up/a^#x"
    assert live_tags(url) == ["#x"]  # X stops the link at "^"
    post = render_post(entry(url=url, comment=""), template=DEFAULT_TEMPLATE, include_link=True)
    assert live_tags(post.text) == []
    assert extract_urls(post.text) == ["https://uploader.example.jp/up/a%5E#x"]  # the same URL for a browser


def test_an_entry_url_with_japanese_in_its_path_is_one_link() -> None:
    url = "https://uploader.example.jp/bms/" + "曲名" * 150 + ".zip"
    post = render_post(entry(url=url, title="星"), template=DEFAULT_TEMPLATE, include_link=True)
    assert post.weighted_length == 12 + 2 + 3 + 8 + 3 + 23  # 【新着差分】星 / 差分です / URL
    assert len(extract_urls(post.text)) == 1


def test_an_international_host_is_left_as_it_is() -> None:
    # Percent-encoding is for the path, query and fragment; a host is not spelled that way.
    post = render_post(entry(url="https://日本語.jp/曲.zip", comment=""), template="{url}", include_link=True)
    assert post.text == "https://日本語.jp/%E6%9B%B2.zip"
    assert extract_urls(post.text) == [post.text]


def test_the_weight_is_the_official_one_where_the_port_was_wrong() -> None:
    # twitter-text-parser weighed this 21 (no link for it); X weighs the link in it 23.
    post = render_post(
        entry(title="x\ufffdme﹫example.jpｶﾀ", comment=""), template="{title}", include_link=False
    )
    assert extract_urls(post.text) == []
    assert post.weighted_length == weighted_length(post.text)


# --- render_post: the URL -----------------------------------------------------


def test_url_is_inserted_verbatim_and_never_cut() -> None:
    long_url = "https://uploader.example.jp/bms/dl/" + "a" * 400 + ".zip?get=00123&n=@x#frag"
    post = render_post(entry(url=long_url, title="曲" * 300), template=DEFAULT_TEMPLATE, include_link=True)
    assert post.text.endswith(" / " + long_url)
    assert post.weighted_length <= MAX_WEIGHTED_LENGTH


@pytest.mark.parametrize(
    "bad", ["javascript:alert(1)", "ftp://example.jp/a.zip", "/relative/path", "https://"]
)
def test_a_url_that_is_not_http_is_poison(bad: str) -> None:
    with pytest.raises(PoisonMessageError, match="http"):
        render_post(entry(url=bad), template=DEFAULT_TEMPLATE, include_link=True)


def test_an_entry_link_counts_as_a_url_even_where_x_would_not_link_it() -> None:
    local = "http://127.0.0.1:8080/up/src/up00123.zip"
    assert extract_urls(local) == []  # an IP host is no link for X
    post = render_post(entry(url=local), template=DEFAULT_TEMPLATE, include_link=True)
    assert post.text.endswith(local)
    assert post.has_url  # but the spend estimate must assume the pricier kind


def test_a_bad_url_does_not_matter_when_no_link_is_posted() -> None:
    post = render_post(entry(url="javascript:alert(1)"), template=DEFAULT_TEMPLATE, include_link=False)
    assert "javascript" not in post.text


# --- render_post: segments ----------------------------------------------------


def test_link_policy_off_drops_the_url_segment() -> None:
    post = render_post(entry(), template=DEFAULT_TEMPLATE, include_link=False)
    assert post.text == "【新着差分】星の欠片 [ANOTHER] / 差分です"
    assert not post.has_url


def test_empty_comment_segment_is_dropped() -> None:
    post = render_post(entry(comment=""), template=DEFAULT_TEMPLATE, include_link=True)
    assert post.text == f"【新着差分】星の欠片 [ANOTHER] / {URL}"


def test_a_comment_of_only_invisible_characters_counts_as_empty() -> None:
    post = render_post(entry(comment="\u200b\u202e \t"), template=DEFAULT_TEMPLATE, include_link=True)
    assert post.text == f"【新着差分】星の欠片 [ANOTHER] / {URL}"


def test_empty_comment_and_no_link_leave_only_the_title() -> None:
    post = render_post(entry(comment=""), template=DEFAULT_TEMPLATE, include_link=False)
    assert post.text == "【新着差分】星の欠片 [ANOTHER]"


def test_a_segment_with_its_own_literal_text_is_kept() -> None:
    post = render_post(entry(comment=""), template="{title} / コメント: {comment} / {url}", include_link=True)
    assert post.text == f"星の欠片 [ANOTHER] / コメント: / {URL}"


def test_line_breaks_separate_segments_too() -> None:
    post = render_post(
        entry(comment="", filename=None), template="{title}\n{comment}\n{filename}\n{url}", include_link=True
    )
    assert post.text == f"星の欠片 [ANOTHER]\n{URL}"


# --- render_post: length ------------------------------------------------------


def test_weighted_length_is_twitter_texts() -> None:
    post = render_post(entry(title="T", comment=""), template=DEFAULT_TEMPLATE, include_link=True)
    # 【新着差分】 6 x 2, "T" 1, " / " 3, any URL 23.
    assert post.weighted_length == 12 + 1 + 3 + 23 == weighted_length(post.text)


def test_over_long_japanese_title_is_shortened_with_an_ellipsis() -> None:
    title = "とても長い差分のタイトル" * 30  # 360 characters, 720 weighted
    post = render_post(entry(title=title, comment=""), template=DEFAULT_TEMPLATE, include_link=True)
    assert post.weighted_length == weighted_length(post.text)
    assert MAX_WEIGHTED_LENGTH - 4 <= post.weighted_length <= MAX_WEIGHTED_LENGTH
    head, _, tail = post.text.partition(" / ")
    assert head.startswith("【新着差分】とても長い差分のタイトルとても") and head.endswith("…")
    assert tail == URL


def test_the_longest_free_text_field_is_cut_first() -> None:
    short_comment = "短いコメント"
    post = render_post(
        entry(title="長" * 200, comment=short_comment), template=DEFAULT_TEMPLATE, include_link=True
    )
    assert f" / {short_comment} / " in post.text
    assert "長…" in post.text
    assert post.weighted_length <= MAX_WEIGHTED_LENGTH


def test_all_free_text_fields_are_cut_when_all_are_long() -> None:
    post = render_post(
        entry(title="題" * 200, comment="評" * 200, filename="f" * 300),
        template="{title} / {comment} / {filename} / {url}",
        include_link=True,
    )
    assert post.text.count("…") == 3
    assert post.weighted_length <= MAX_WEIGHTED_LENGTH
    assert extract_urls(post.text) == [URL]


def test_a_post_that_cannot_fit_is_poison() -> None:
    template = "お" * 139 + "{title} {url}"  # 278 weighted of fixed text, plus a URL
    with pytest.raises(PoisonMessageError, match="cannot fit"):
        render_post(entry(), template=template, include_link=True)


def test_shortening_keeps_an_emoji_with_its_modifier() -> None:
    title = "曲" * 130 + "👍🏽" * 20
    post = render_post(entry(title=title, comment=""), template="{title}", include_link=False)
    assert post.weighted_length <= MAX_WEIGHTED_LENGTH
    body = post.text.removesuffix("…")
    assert not body.endswith("👍")  # a skin-tone modifier never left behind / split off


# --- render_post: determinism -------------------------------------------------


def test_rendering_is_deterministic() -> None:
    message = entry(title="長" * 200 + HOSTILE, comment=HOSTILE)
    first = render_post(message, template=DEFAULT_TEMPLATE, include_link=True)
    again = render_post(message, template=DEFAULT_TEMPLATE, include_link=True)
    refetched = render_post(
        message.model_copy(update={"fetched_at": datetime(2027, 1, 1, tzinfo=UTC)}),
        template=DEFAULT_TEMPLATE,
        include_link=True,
    )
    assert first.text.encode() == again.text.encode() == refetched.text.encode()
    assert first == again == refetched


def test_the_renderer_and_the_config_share_one_template_parser() -> None:
    # A template the config check rejects is rejected by the renderer the same way.
    from bmsuploader.contract.errors import ConfigError

    # (An extra field such as {artist} is a JSON or table source's; the config checks which
    # extras its kind gives. A name that can be no field at all is refused by both.)
    with pytest.raises(ConfigError, match="unknown placeholder"):
        render_post(entry(), template="{title} / {Artist}", include_link=True)
    with pytest.raises(ConfigError, match="no conversion"):
        render_post(entry(), template="{title!r} / {url}", include_link=True)


# --- render_post: bounded work ------------------------------------------------


def test_a_10k_character_field_is_cut_before_it_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    # "a." * 2000 took 63 s: URL extraction is super-linear on it and ran on the whole
    # field at every step of the shortening search. Count the work, not the seconds.
    from bmsuploader.post import rendering

    scanned: list[int] = []
    measured: list[str] = []
    real_scan, real_weigh = tweet_text._extract_urls, rendering.weighted_length
    monkeypatch.setattr(
        tweet_text, "_extract_urls", lambda text: scanned.append(len(text)) or real_scan(text)
    )
    monkeypatch.setattr(rendering, "weighted_length", lambda text: measured.append(text) or real_weigh(text))

    # Beyond the schema's 4,000 (model_copy does not validate): rendering must not rely on it.
    message = entry().model_copy(update={"comment": "a." * 5000})
    post = render_post(message, template=DEFAULT_TEMPLATE, include_link=True)

    assert post.weighted_length <= MAX_WEIGHTED_LENGTH
    assert post.text.endswith("… / " + URL)
    assert max(scanned) <= rendering.MAX_FIELD_CHARS + 100  # never the 10,000 characters
    # A binary search over the cut field: O(log n) measurements, not O(n).
    assert len(measured) <= 4 + rendering.MAX_FIELD_CHARS.bit_length()


def test_the_field_cap_keeps_every_field_that_could_fit() -> None:
    # No text denser than the longest emoji X counts as one (2 weight units) can fit
    # more characters into a post than the cap allows.
    from bmsuploader.post import rendering

    longest = max(
        len(line.split()) for line in tweet_text._EMOJI_FILE.read_text().splitlines() if line[0] != "#"
    )
    assert MAX_WEIGHTED_LENGTH // 2 * longest <= rendering.MAX_FIELD_CHARS


@pytest.mark.parametrize(
    ("template", "overrides"),
    [
        ("{entry_id} / {url}", {"entry_id": "識別子" * 85}),  # a long feed guid, 510 weighted
        ("{size} {uploaded_at} / {title}", {"size": "容量" * 50, "uploaded_at": "日時" * 50, "title": "T"}),
    ],
)
def test_every_scraped_field_can_be_shortened(template: str, overrides: dict[str, Any]) -> None:
    # These were "cannot fit": only title, comment and filename were ever shortened.
    post = render_post(entry(**overrides), template=template, include_link=True)
    assert post.weighted_length <= MAX_WEIGHTED_LENGTH
    assert "…" in post.text
