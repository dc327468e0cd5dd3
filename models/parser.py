"""Reads a model's answer back into triplets; anything that is not a valid triplet list is a ParseError."""

from __future__ import annotations

import json
import re

from models.errors import ParseError
from models.triplet import FIELDS, Triplet

_REQUIRED = ("subject", "predicate", "object")
_WRAPPER_KEYS = ("triplets", "spo_list")
_CLOSER = {"[": "]", "{": "}"}
_OPENER = re.compile(r"[\[{]")
_FENCE = re.compile(r"```[\w-]*")


def parse_triplets(raw: str) -> list[Triplet]:
    """Parse an LLM's output into triplets; raise ParseError(reason, raw) when it is not a valid triplet list."""
    if not raw.strip():
        raise ParseError("empty output", raw)
    triplets = [_triplet(label, item, raw) for label, item in _items(_decode_first_json(raw), raw)]
    return list(dict.fromkeys(triplets))


def _fenced_region(raw: str) -> tuple[int, int]:
    """Bounds of the first ``` block's body (to the end if never closed), else of the whole text."""
    fence = _FENCE.search(raw)
    if fence is None:
        return 0, len(raw)
    close = raw.find("```", fence.end())
    return fence.end(), len(raw) if close < 0 else close


def _span_end(text: str, start: int, stop: int) -> tuple[int, str]:
    """(end, "") of the bracketed value opening at text[start], or (-1, what is left open) if text stops first.

    Brackets inside JSON strings do not count, which is why this is a scan and not a regex.
    """
    expected: list[str] = []
    in_string = escaped = False
    string_start = start
    for index in range(start, stop):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string, string_start = True, index
        elif char in _CLOSER:
            expected.append(_CLOSER[char])
        elif char in "]}":
            # A mismatched closer ends the span as well; json.loads then names the syntax error.
            if expected.pop() != char or not expected:
                return index + 1, ""
    if in_string:
        return -1, f"unterminated string starting at char {string_start}"
    kind = "array" if text[start] == "[" else "object"
    return -1, f"unterminated {kind} starting at char {start}"


def _decode_first_json(raw: str) -> list[object] | dict[str, object]:
    """The first bracketed span of the output that decodes as JSON (a list or a dict)."""
    low, high = _fenced_region(raw)
    failures: list[tuple[int, str]] = []
    opener = _OPENER.search(raw, low, high)
    while opener is not None:
        start = opener.start()
        end, unclosed = _span_end(raw, start, high)
        if unclosed:
            # Generation stopped mid-answer: any complete piece inside it would silently drop triplets.
            raise ParseError(f"truncated JSON: {unclosed}", raw)
        try:
            # strict=False: models sometimes emit raw newlines inside strings.
            return json.loads(raw[start:end], strict=False)
        except json.JSONDecodeError as exc:
            failures.append((end - start, f"invalid JSON: {exc.msg} at char {start + exc.pos}"))
        # Resume after the whole span, never inside it, for the same reason as truncation.
        opener = _OPENER.search(raw, end, high)
    if failures:
        # The longest failed span is the likeliest answer; short ones are prose such as "[注]".
        raise ParseError(max(failures, key=lambda failure: failure[0])[1], raw)
    raise ParseError("no JSON list in output", raw)


def _items(data: list[object] | dict[str, object], raw: str) -> list[tuple[str, object]]:
    """(label, item) pairs: unwraps {"triplets": [...]} and flattens one list per sentence."""
    if isinstance(data, dict):
        key = next((key for key in _WRAPPER_KEYS if key in data), None)
        if key is None:
            return [("0", data)]
        wrapped = data[key]
        if not isinstance(wrapped, list):
            raise ParseError(f"'{key}' is not a list", raw)
        data = wrapped
    pairs: list[tuple[str, object]] = []
    for index, item in enumerate(data):
        if isinstance(item, list):
            pairs.extend((f"{index}.{inner}", value) for inner, value in enumerate(item))
        else:
            pairs.append((str(index), item))
    return pairs


def _text(value: object) -> str | None:
    """A field's text, or None when it has none; DuIE complex values carry theirs under "@value"."""
    if isinstance(value, dict):
        value = value.get("@value")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _triplet(label: str, item: object, raw: str) -> Triplet:
    if not isinstance(item, dict):
        raise ParseError(f"item {label}: not an object (got {type(item).__name__})", raw)
    missing = [key for key in _REQUIRED if item.get(key) is None]
    if missing:
        raise ParseError(f"item {label}: missing " + ", ".join(f"'{key}'" for key in missing), raw)
    fields: dict[str, str] = {}
    for key in FIELDS:
        if item.get(key) is None:  # only the optional types can get here
            fields[key] = ""
            continue
        text = _text(item[key])
        if text is None:
            raise ParseError(f"item {label}: '{key}' is not a string", raw)
        if not text and key in _REQUIRED:
            raise ParseError(f"item {label}: empty '{key}'", raw)
        fields[key] = text
    return Triplet(**fields)
