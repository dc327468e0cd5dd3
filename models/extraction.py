"""One document's extraction outcome, assembled from the model's raw output per window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from models.errors import ParseError
from models.parser import parse_triplets
from models.schema import PredicateSchema
from models.triplet import Span, Triplet, locate
from models.validate import Rejection, check_triplets

# how a failed document's error starts when its output could not be parsed (read by models/graph_stats.py)
UNPARSEABLE = "unparseable output"


@dataclass(frozen=True, slots=True)
class Extraction:
    """Triplets, or the reason there are none, and the raw output.

    ``spans`` (parallel to ``triplets``) are subject/object offsets in the document;
    ``rejected`` are triplets that failed the schema or grounding checks; ``warning`` says
    what a document that still succeeded is missing (a window that failed or was cut short).
    """

    raw: str
    triplets: list[Triplet] = field(default_factory=list)
    error: str | None = None
    spans: list[tuple[Span | None, Span | None]] | None = None
    rejected: list[Rejection] = field(default_factory=list)
    warning: str | None = None
    adapter_id: str | None = None  # the adapter that decoded it, where the engine may switch meanwhile

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class WindowOutput:
    """What the model said for one window of a document (the whole document if it fit)."""

    start: int
    text: str
    raw: str
    truncated: bool = False
    error: str | None = None  # set when the window could not be generated at all
    answer_tokens: int = 0  # tokens the model generated for it


def assemble(outputs: Sequence[WindowOutput], schema: PredicateSchema, *, max_new_tokens: int) -> Extraction:
    """Parse and check each window's output, map offsets to the document, merge duplicates."""
    triplets: list[Triplet] = []
    spans: list[tuple[Span | None, Span | None]] = []
    rejected: list[Rejection] = []
    failures: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for index, output in enumerate(outputs):
        reason = output.error
        if reason is None:
            try:
                checked = check_triplets(parse_triplets(output.raw), output.text, schema)
            except ParseError as exc:
                reason = f"{UNPARSEABLE}: {exc.reason}"
                if output.truncated:
                    reason += f" (generation hit TRIPLETS_MAX_NEW_TOKENS={max_new_tokens})"
            else:
                rejected.extend(checked.rejected)
                for triplet in checked.accepted:
                    if triplet.key in seen:  # overlapping windows repeat facts
                        continue
                    seen.add(triplet.key)
                    triplets.append(triplet)
                    spans.append((_shift(locate(output.text, triplet.subject), output.start),
                                  _shift(locate(output.text, triplet.object), output.start)))
        if reason is not None:
            failures.append(reason if len(outputs) == 1 else f"window {index + 1}/{len(outputs)}: {reason}")
    raw = outputs[0].raw if len(outputs) == 1 else "\n".join(f"[window {i + 1}] {o.raw}" for i, o in enumerate(outputs))
    if len(failures) == len(outputs):
        return Extraction(raw=raw, error="; ".join(failures), rejected=rejected)
    return Extraction(raw=raw, triplets=triplets, spans=spans, rejected=rejected, warning="; ".join(failures) or None)


def _shift(span: Span | None, offset: int) -> Span | None:
    return None if span is None else Span(span.start + offset, span.end + offset)
