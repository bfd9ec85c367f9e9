"""SPEC MS1 (length, blank), MS2 (emoji codes), MS4 (plain text), AW2 (away text), and
the name and email rules of "People and plans"."""

import pytest

from confide.domain.entities import DEFAULT_AWAY_TEXT
from confide.domain.errors import InvalidInput
from confide.domain.text import (
    emojize,
    prepare_away_text,
    prepare_email,
    prepare_message_text,
    prepare_name,
    suggest_emoji_codes,
)

GRIN = "\N{GRINNING FACE WITH SMILING EYES}"  # 😁, one code point
SMILE = "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}"  # 😄
THUMBS_UP = "\N{THUMBS UP SIGN}"  # 👍
ASTRAL = "\N{GRINNING FACE}"  # 😀, U+1F600: two UTF-16 units, one code point


def refusal_code(prepare, raw: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        prepare(raw)
    return caught.value.code


# --- MS1: 1 to 5,000 code points, after emoji codes; blank refused --------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("a", id="one_char"),
        pytest.param("a" * 5000, id="5000_chars"),
        pytest.param(ASTRAL * 5000, id="5000_astral_chars"),
        pytest.param("a" * 4999 + ":grin:", id="4999_plus_grin_code_is_5000"),
        pytest.param(":grin:" * 5000, id="5000_codes_typed_as_30000"),
        pytest.param("a" * 4999 + "\r\n", id="crlf_counts_once"),
        pytest.param("é" * 5000, id="5000_accented"),
    ],
)
def test_ms1_message_of_1_to_5000_code_points_is_accepted(raw):
    text = prepare_message_text(raw)
    assert 1 <= len(text) <= 5000


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("a" * 5001, id="5001_chars"),
        pytest.param(ASTRAL * 5001, id="5001_astral_chars"),
        pytest.param("a" * 5000 + ":grin:", id="5000_plus_grin_code"),
        pytest.param("a" * 4999 + ":heart:", id="4999_plus_two_code_point_emoji"),
        pytest.param(" " * 4999 + "a" + " ", id="spaces_count"),
        pytest.param("a" * 100_000, id="far_too_long"),
    ],
)
def test_ms1_message_over_5000_code_points_is_refused(raw):
    assert refusal_code(prepare_message_text, raw) == "message_too_long"


def test_ms1_length_is_counted_after_emoji_conversion():
    text = prepare_message_text("a" * 4999 + ":grin:")
    assert len(text) == 5000
    assert text == "a" * 4999 + GRIN


def test_ms1_astral_characters_count_as_one():
    assert prepare_message_text(ASTRAL * 5000) == ASTRAL * 5000
    # Counted in code points, not UTF-16 units (10,000) nor UTF-8 bytes (20,000).
    assert len((ASTRAL * 5000).encode("utf-16-le")) // 2 == 10_000


def test_ms1_too_long_error_says_the_limit():
    with pytest.raises(InvalidInput) as caught:
        prepare_message_text("a" * 5001)
    assert "5,000" in caught.value.message
    assert "5,001" in caught.value.message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param(" ", id="space"),
        pytest.param("   \t  ", id="spaces_and_tab"),
        pytest.param("\n\n\n", id="newlines"),
        pytest.param("\r\n\r\n", id="crlf"),
        pytest.param("\u00a0", id="no_break_space"),
        pytest.param("\u3000", id="ideographic_space"),
    ],
)
def test_ms1_blank_message_is_refused(raw):
    assert refusal_code(prepare_message_text, raw) == "message_blank"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("\u200b", id="zero_width_space"),
        pytest.param("\u2060", id="word_joiner"),
        pytest.param("\ufeff", id="byte_order_mark"),
        pytest.param(" \u200b\n\u200b ", id="zero_width_with_whitespace"),
    ],
)
def test_ms1_invisible_only_message_is_blank(raw):
    assert refusal_code(prepare_message_text, raw) == "message_blank"


def test_ms1_surrounding_whitespace_is_kept_in_a_non_blank_message():
    assert prepare_message_text("  hello\n") == "  hello\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("line one\r\nline two", "line one\nline two", id="crlf"),
        pytest.param("line one\rline two", "line one\nline two", id="lone_cr"),
        pytest.param("a\r\n\r\nb", "a\n\nb", id="blank_line"),
        pytest.param("col1\tcol2\nrow2", "col1\tcol2\nrow2", id="tab_and_newline_kept"),
    ],
)
def test_ms1_newlines_are_normalised_to_lf(raw, expected):
    assert prepare_message_text(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("a\x00b", id="nul"),
        pytest.param("ring\x07", id="bell"),
        pytest.param("\x1b[31mred", id="ansi_escape"),
        pytest.param("a\x08b", id="backspace"),
        pytest.param("a\x0bb", id="vertical_tab"),
        pytest.param("a\x0cb", id="form_feed"),
        pytest.param("a\x7fb", id="delete"),
        pytest.param("a\x85b", id="c1_next_line"),
        pytest.param("a\x9bb", id="c1_csi"),
    ],
)
def test_ms1_control_characters_are_refused(raw):
    assert refusal_code(prepare_message_text, raw) == "invalid_text"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("\ud800", id="lone_high"),
        pytest.param("\udfff", id="lone_low"),
        pytest.param("ok \ud83d then text", id="high_inside_text"),
        pytest.param("\ude00:grin:", id="low_before_code"),
    ],
)
def test_ms1_lone_surrogates_are_refused(raw):
    assert refusal_code(prepare_message_text, raw) == "invalid_text"


# --- MS2: emoji codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(":grin:", GRIN, id="grin"),
        pytest.param(":smile:", SMILE, id="smile"),
        pytest.param(":thumbsup:", THUMBS_UP, id="thumbsup"),
        pytest.param(":thumbs_up:", THUMBS_UP, id="thumbs_up_long_name"),
        pytest.param("See you then :grin:", "See you then " + GRIN, id="inside_text"),
        pytest.param(":smile::thumbsup:", SMILE + THUMBS_UP, id="two_in_a_row"),
        pytest.param("ok:grin:", "ok" + GRIN, id="no_space_before"),
    ],
)
def test_ms2_emoji_codes_become_emoji(raw, expected):
    assert prepare_message_text(raw) == expected
    assert emojize(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(":nope_nope:", id="unknown_code"),
        pytest.param("We meet at 10:30:45 sharp", id="clock_time"),
        pytest.param("ratio 3:2", id="ratio"),
        pytest.param(":grin", id="unclosed"),
        pytest.param(": grin :", id="spaced"),
        pytest.param("::", id="two_colons"),
        pytest.param(":GRIN:", id="wrong_case"),
    ],
)
def test_ms2_unknown_codes_stay_as_typed(raw):
    assert prepare_message_text(raw) == raw


def test_ms2_code_right_after_a_clock_time_becomes_emoji():
    assert prepare_message_text("See you at 3:30:grin:") == "See you at 3:30" + GRIN


def test_ms2_unknown_code_next_to_a_known_one():
    assert prepare_message_text(":nope_nope: :grin:") == ":nope_nope: " + GRIN


@pytest.mark.parametrize(
    ("typed", "first"),
    [
        pytest.param("gri", (":grin:", GRIN), id="without_colon"),
        pytest.param(":gri", (":grin:", GRIN), id="with_colon"),
        pytest.param("  :GRI ", (":grin:", GRIN), id="spaces_and_case"),
        pytest.param(":thumbsu", (":thumbsup:", THUMBS_UP), id="thumbsup"),
        pytest.param(":smile", (":smile:", SMILE), id="smile"),
    ],
)
def test_ms2_composer_suggests_codes_shortest_first(typed, first):
    suggestions = suggest_emoji_codes(typed)
    assert suggestions[0] == first
    prefix = ":" + typed.strip().lower().lstrip(":")
    assert all(code.startswith(prefix) for code, _ in suggestions)
    assert suggestions == sorted(suggestions, key=lambda pair: (len(pair[0]), pair[0]))


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param(":", id="colon"),
        pytest.param("g", id="one_letter"),
        pytest.param(":g", id="colon_one_letter"),
        pytest.param(":zzzz_no_such_emoji", id="no_match"),
    ],
)
def test_ms2_composer_suggests_nothing_for_too_short_or_unknown_prefixes(typed):
    assert suggest_emoji_codes(typed) == []


def test_ms2_composer_suggestions_respect_the_limit_and_convert_as_suggested():
    assert len(suggest_emoji_codes(":sm")) == 8
    assert len(suggest_emoji_codes(":sm", limit=3)) == 3
    for code, char in suggest_emoji_codes(":smi", limit=20):
        assert emojize(code) == char, code


# --- MS4: plain text, nothing interpreted -------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("<script>alert('x')</script>", id="script_tag"),
        pytest.param('<img src=x onerror="alert(1)">', id="img_onerror"),
        pytest.param("<b>bold</b> & <i>italic</i>", id="html_tags"),
        pytest.param("&lt;b&gt; stays &amp; escaped", id="entities_not_unescaped"),
        pytest.param("[click](javascript:alert(1))", id="markdown_link"),
        pytest.param("**not bold** _not italic_", id="markdown_emphasis"),
        pytest.param("{{ 7*7 }} {% raw %}", id="template_syntax"),
        pytest.param("'; DROP TABLE messages; --", id="sql"),
        pytest.param("https://example.com/?a=1&b=<2>", id="url_with_markup"),
    ],
)
def test_ms4_markup_is_kept_verbatim_as_text(raw):
    assert prepare_message_text(raw) == raw
    assert prepare_away_text(raw) == raw


# --- AW2: away text -------------------------------------------------------------------------


def test_aw2_default_away_text_is_valid():
    assert prepare_away_text(DEFAULT_AWAY_TEXT) == DEFAULT_AWAY_TEXT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("a" * 600, "a" * 600, id="600_chars"),
        pytest.param("  Back Monday.  \n", "Back Monday.", id="trimmed"),
        pytest.param("  " + "a" * 600 + "  ", "a" * 600, id="600_after_trim"),
        pytest.param("a" * 599 + ":grin:", "a" * 599 + GRIN, id="599_plus_grin_code"),
        pytest.param(ASTRAL * 600, ASTRAL * 600, id="600_astral"),
        pytest.param("Away\r\nBack soon", "Away\nBack soon", id="crlf"),
    ],
)
def test_aw2_away_text_up_to_600_characters_is_accepted(raw, expected):
    assert prepare_away_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param("a" * 601, "away_text_too_long", id="601_chars"),
        pytest.param("a" * 600 + ":grin:", "away_text_too_long", id="600_plus_grin_code"),
        pytest.param(ASTRAL * 601, "away_text_too_long", id="601_astral"),
        pytest.param("", "away_text_blank", id="empty"),
        pytest.param(" \n\t ", "away_text_blank", id="whitespace"),
        pytest.param("Away\x00", "invalid_text", id="control_char"),
        pytest.param("Away \ud800", "invalid_text", id="lone_surrogate"),
    ],
)
def test_aw2_away_text_over_600_blank_or_invalid_is_refused(raw, code):
    assert refusal_code(prepare_away_text, raw) == code


# --- names and emails ("People and plans") -------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("Carl Basic", "Carl Basic", id="plain"),
        pytest.param("  Carl \t  Basic\n ", "Carl Basic", id="whitespace_collapsed"),
        pytest.param("Zoë O'Brien-Núñez", "Zoë O'Brien-Núñez", id="accents_and_punctuation"),
        pytest.param("<b>Carl</b>", "<b>Carl</b>", id="markup_kept_ms4"),
        pytest.param("a" * 200, "a" * 200, id="200_chars"),
    ],
)
def test_people_names_are_trimmed_and_collapsed(raw, expected):
    assert prepare_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param("", "name_blank", id="empty"),
        pytest.param("   \n ", "name_blank", id="whitespace"),
        pytest.param("a" * 201, "name_too_long", id="201_chars"),
        pytest.param("Carl\x00Basic", "invalid_text", id="control_char"),
        pytest.param("Carl \ud800", "invalid_text", id="lone_surrogate"),
    ],
)
def test_people_blank_long_or_invalid_names_are_refused(raw, code):
    assert refusal_code(prepare_name, raw) == code


def test_people_name_errors_say_what_was_named():
    with pytest.raises(InvalidInput) as caught:
        prepare_name(" ", what="practice name")
    assert caught.value.message == "The practice name cannot be empty."


LOCAL_64 = "l" * 64
DOMAIN_185 = "d" * 185


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("olivia@harbor.example", "olivia@harbor.example", id="plain"),
        pytest.param("  Olivia@Harbor.EXAMPLE \n", "olivia@harbor.example", id="trim_lower"),
        pytest.param("o.o+tag@mail.co.uk", "o.o+tag@mail.co.uk", id="plus_and_subdomain"),
        pytest.param(
            f"{LOCAL_64}@{DOMAIN_185}.com", f"{LOCAL_64}@{DOMAIN_185}.com", id="254_chars"
        ),
    ],
)
def test_people_emails_are_trimmed_and_lowercased(raw, expected):
    assert prepare_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param("", "invalid_email", id="empty"),
        pytest.param("olivia", "invalid_email", id="no_at"),
        pytest.param("olivia@harbor", "invalid_email", id="no_dot_in_domain"),
        pytest.param("@harbor.example", "invalid_email", id="no_local_part"),
        pytest.param("olivia@@harbor.example", "invalid_email", id="two_ats"),
        pytest.param("oli via@harbor.example", "invalid_email", id="space_inside"),
        pytest.param("l" * 65 + "@harbor.example", "invalid_email", id="local_part_65"),
        pytest.param(f"{LOCAL_64}@{DOMAIN_185}x.com", "invalid_email", id="255_chars"),
        pytest.param("oli\x00via@harbor.example", "invalid_text", id="control_char"),
    ],
)
def test_people_invalid_emails_are_refused(raw, code):
    assert refusal_code(prepare_email, raw) == code
