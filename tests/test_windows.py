from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from models.windows import HARD_TERMINATORS, Window, make_windows, split_sentences


def sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in split_sentences(text)]


class LengthFits:
    """A length budget standing in for a token budget, counting how often it is asked."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.calls = 0

    def __call__(self, text: str) -> bool:
        self.calls += 1
        return len(text) <= self.budget


def assert_valid_windows(text: str, windows: list[Window], fits: Callable[[str], bool]) -> None:
    covered = [False] * len(text)
    for window in windows:
        assert window.text, "empty window"
        assert text[window.start : window.start + len(window.text)] == window.text
        assert fits(window.text)
        for k in range(window.start, window.start + len(window.text)):
            covered[k] = True
    assert all(covered), f"uncovered offsets: {[k for k, c in enumerate(covered) if not c][:10]}"
    starts = [window.start for window in windows]
    assert starts == sorted(set(starts)), "windows must advance"


# --- split_sentences ---


def test_splits_on_chinese_punctuation() -> None:
    assert sentences("我爱北京。你呢？很好！是的；结束") == ["我爱北京。", "你呢？", "很好！", "是的；", "结束"]


def test_splits_on_ascii_hard_terminators() -> None:
    assert sentences("好!行?对;完") == ["好!", "行?", "对;", "完"]


def test_closing_quotes_and_brackets_stay_with_the_sentence() -> None:
    assert sentences("他说：“走吧。”然后离开了。") == ["他说：“走吧。”", "然后离开了。"]
    assert sentences("（见上文。）下一句「好！」』》再来") == ["（见上文。）", "下一句「好！」』》", "再来"]
    assert sentences('He said "go!" and left.') == ['He said "go!" ', "and left."]


def test_a_run_of_terminators_is_one_sentence_end() -> None:
    assert sentences("真的吗？！好。。。下") == ["真的吗？！", "好。。。", "下"]


def test_newline_splits_and_trailing_whitespace_joins_the_sentence() -> None:
    assert sentences("第一行\n第二行\n\n第三行") == ["第一行\n", "第二行\n\n", "第三行"]
    assert sentences("你好。 \n我好。") == ["你好。 \n", "我好。"]
    assert sentences("\n\n开头") == ["\n\n", "开头"]


def test_latin_period_splits_only_before_whitespace_or_end() -> None:
    assert sentences("Pi is 3.14 exactly. Next one. Done.") == ["Pi is 3.14 exactly. ", "Next one. ", "Done."]
    assert sentences("U.S.A is big") == ["U.S.A is big"]
    assert sentences("版本3.14。v2.0发布") == ["版本3.14。", "v2.0发布"]
    assert sentences('She said "ok." Then') == ['She said "ok." ', "Then"]


def test_empty_text_has_no_sentences() -> None:
    assert split_sentences("") == []


def test_spans_cover_random_texts_exactly() -> None:
    rng = random.Random(20240601)
    alphabet = "ab中文3 .。！？；!?;\n”」）)\"'"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        spans = split_sentences(text)
        assert "".join(text[s:e] for s, e in spans) == text
        position = 0
        for start, end in spans:
            assert start == position and end > start, (text, spans)
            position = end
            # A hard terminator inside a sentence must be the start of its closing run.
            for k in range(start, end - 1):
                if text[k] in HARD_TERMINATORS:
                    rest = text[k + 1 : end]
                    assert all(c in HARD_TERMINATORS or c in "”」）)\"." or c.isspace() for c in rest), (text, spans)
        assert position == len(text)


# --- make_windows ---


def numbered(n: int) -> tuple[str, list[str]]:
    parts = [f"句子{i:03d}。" for i in range(n)]  # 6 characters each
    return "".join(parts), parts


def test_whole_text_that_fits_is_one_window() -> None:
    fits = LengthFits(1000)
    text, _ = numbered(10)
    assert make_windows(text, fits) == [Window(0, text)]
    assert fits.calls == 1


def test_empty_text_gives_no_windows() -> None:
    fits = LengthFits(10)
    assert make_windows("", fits) == []
    assert fits.calls == 0


def test_windows_are_greedy_and_overlap_by_exactly_one_sentence() -> None:
    text, parts = numbered(50)
    fits = LengthFits(40)  # six sentences per window
    windows = make_windows(text, fits)
    assert_valid_windows(text, windows, fits)
    assert [len(w.text) for w in windows[:-1]] == [36] * (len(windows) - 1)
    for previous, following in zip(windows, windows[1:]):
        assert following.start == previous.start + len(previous.text) - 6
        assert following.text.startswith(previous.text[-6:])
    # Greedy: one more sentence would not have fitted.
    for window in windows[:-1]:
        assert not fits(text[window.start : window.start + len(window.text) + 6])
    assert windows[-1].text.endswith(parts[-1])


def test_zero_overlap_tiles_the_text() -> None:
    text, _ = numbered(50)
    windows = make_windows(text, LengthFits(40), overlap_sentences=0)
    assert "".join(w.text for w in windows) == text


def test_overlap_of_two_sentences() -> None:
    text, _ = numbered(50)
    windows = make_windows(text, LengthFits(40), overlap_sentences=2)
    for previous, following in zip(windows, windows[1:]):
        assert following.start == previous.start + len(previous.text) - 12


def test_overlap_larger_than_window_still_advances() -> None:
    text, _ = numbered(20)
    fits = LengthFits(13)  # two sentences per window
    windows = make_windows(text, fits, overlap_sentences=5)
    assert_valid_windows(text, windows, fits)
    assert [w.start for w in windows] == [6 * i for i in range(19)]


def test_over_long_sentence_is_hard_split_without_gaps() -> None:
    long_sentence = "长" * 95 + "。"
    text = "短句一。短句二。" + long_sentence + "短句三。"
    fits = LengthFits(30)
    windows = make_windows(text, fits)
    assert_valid_windows(text, windows, fits)
    pieces = [w for w in windows if 8 <= w.start < 8 + len(long_sentence)]
    assert pieces[0].start == 8
    for previous, following in zip(pieces, pieces[1:]):
        assert following.start == previous.start + len(previous.text)
    assert "".join(p.text for p in pieces) == long_sentence
    assert [len(p.text) for p in pieces] == [30, 30, 30, 6]
    # The overlap must not produce a window holding only the already-covered "短句二。".
    assert windows[0] == Window(0, "短句一。短句二。")
    assert windows[-1] == Window(8 + len(long_sentence), "短句三。")
    assert len(windows) == 6


def test_fits_rejecting_a_single_character_raises() -> None:
    with pytest.raises(ValueError, match="single character"):
        make_windows("abc。def。", LengthFits(0))


def test_negative_overlap_is_rejected() -> None:
    with pytest.raises(ValueError):
        make_windows("abc。", LengthFits(1), overlap_sentences=-1)


def test_random_texts_and_budgets_give_valid_windows() -> None:
    rng = random.Random(7)
    alphabet = "甲乙丙丁ab。！\n. "
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        fits = LengthFits(rng.randint(1, 40))
        windows = make_windows(text, fits, overlap_sentences=rng.randint(0, 3))
        assert_valid_windows(text, windows, fits)
        assert bool(windows) == bool(text)


def test_fits_is_called_rarely() -> None:
    rng = random.Random(3)
    text = "".join("字" * rng.randint(4, 14) + "。" for _ in range(2000))
    assert len(split_sentences(text)) == 2000
    fits = LengthFits(1000)
    windows = make_windows(text, fits)
    assert len(windows) > 10
    assert fits.calls < 200
    assert_valid_windows(text, windows, LengthFits(1000))


def test_fits_calls_stay_near_two_per_window_for_uniform_sentences() -> None:
    text, _ = numbered(2000)
    fits = LengthFits(200)
    windows = make_windows(text, fits)
    assert len(windows) > 50
    assert fits.calls < 3 * len(windows) + 20
