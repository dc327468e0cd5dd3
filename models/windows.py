"""Split a document too long for the model's input budget into sentence-aligned windows.

Each window is extracted on its own; ``models.extraction.assemble`` maps the per-window
results back to the document's offsets and merges what overlapping windows repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

HARD_TERMINATORS = frozenset("。！？；!?;\n")
CLOSERS = frozenset("”’」』）)】》\"")


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # character offset of the window in the original text
    text: str  # == original[start:start + len(text)]


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of ``text``, in order, covering it without gaps.

    A sentence ends after a run of terminators and closing quotes/brackets, plus any
    whitespace after it. ``.`` ends a sentence only when whitespace or the end of the
    text follows (so ``3.14`` stays whole).
    """
    spans: list[tuple[int, int]] = []
    start = i = 0
    n = len(text)
    while i < n:
        if text[i] not in HARD_TERMINATORS and text[i] != ".":
            i += 1
            continue
        j = i
        hard = False
        while j < n and (text[j] in HARD_TERMINATORS or text[j] in CLOSERS or text[j] == "."):
            hard = hard or text[j] in HARD_TERMINATORS
            j += 1
        if hard or j == n or text[j].isspace():
            # Trailing whitespace joins the sentence before it, so no sentence is blank.
            while j < n and text[j].isspace():
                j += 1
            spans.append((start, j))
            start = j
        i = j
    if start < n:
        spans.append((start, n))
    return spans


def _largest_true(ok: Callable[[int], bool], limit: int, guess: int) -> int:
    """Largest m in [0, limit] with ok(m), for ok true on 1..answer and false above.

    Gallops from ``guess`` before bisecting: consecutive windows are of similar size, so a
    good guess costs two calls instead of log(limit).
    """
    guess = min(max(guess, 1), limit)
    if ok(guess):
        lo, step = guess, 1
        while True:
            if lo == limit:
                return lo
            probe = min(lo + step, limit)
            if not ok(probe):
                hi = probe
                break
            lo, step = probe, step * 2
    else:
        hi, step = guess, 1
        while True:
            probe = hi - step
            if probe <= 0:
                lo = 0
                break
            if ok(probe):
                lo = probe
                break
            hi, step = probe, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _hard_split(text: str, start: int, end: int, fits: Callable[[str], bool]) -> list[Window]:
    pieces: list[Window] = []
    pos, guess = start, 1
    while pos < end:
        length = _largest_true(lambda m: fits(text[pos : pos + m]), end - pos, guess)
        if length == 0:
            raise ValueError(f"fits() rejects even the single character at offset {pos}")
        pieces.append(Window(pos, text[pos : pos + length]))
        pos, guess = pos + length, length
    return pieces


def make_windows(text: str, fits: Callable[[str], bool], *, overlap_sentences: int = 1) -> list[Window]:
    """Greedy sentence-aligned windows that each satisfy ``fits`` and together cover ``text``.

    Consecutive windows share ``overlap_sentences`` sentences (facts that straddle a window
    border are then seen whole at least once). A sentence that does not fit alone is cut
    into the largest fitting character pieces, without overlap. ``fits`` must be monotone:
    if a text does not fit, no longer text from the same start fits.
    """
    if overlap_sentences < 0:
        raise ValueError("overlap_sentences must be >= 0")
    if not text:
        return []
    if fits(text):
        return [Window(0, text)]
    spans = split_sentences(text)
    windows: list[Window] = []
    first = covered = 0  # covered: sentences [0, covered) are in some window
    guess = 1
    while first < len(spans):
        window_start = spans[first][0]
        count = _largest_true(lambda m: fits(text[window_start : spans[first + m - 1][1]]), len(spans) - first, guess)
        if first < covered and first + count <= covered:
            # The overlap left no room for a new sentence; a window of old ones is waste.
            first = covered
            continue
        if count == 0:
            windows.extend(_hard_split(text, *spans[first], fits))
            first = covered = first + 1
            continue
        end = first + count
        windows.append(Window(window_start, text[window_start : spans[end - 1][1]]))
        if end == len(spans):
            break
        covered, guess = end, count
        first = max(end - overlap_sentences, first + 1)
    return windows
