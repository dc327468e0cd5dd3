"""Evaluate an adapter on held-out data through the extraction engine itself."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from pathlib import Path

from models.errors import InputError
from models.scorer import Example, Scores, score
from models.settings import Settings
from models.training_data import iter_training_examples

Progress = Callable[[int, int], None]  # (examples extracted, examples in all)


def evaluate_adapter(
    base_model: Path,
    adapter: Path | None,
    data: Path,
    *,
    settings: Settings,
    schema_path: Path | None = None,
    max_examples: int = 500,
    progress: Progress | None = None,
    chunk: int | None = None,
) -> Scores:
    """P/R/F1 (DuIE semantics), strict F1, per predicate, parse-failure and ungrounded rates.

    The raw answers are scored, before the engine's schema and grounding checks, so the
    ungrounded rate measures the model rather than the filter. ``progress`` is told how far
    extraction is after each ``chunk`` of examples (default: all at once, the engine's
    batches unbroken).
    """
    from transformers.utils import logging as transformers_logging

    from worker.hf_engine import HuggingFaceEngine

    if progress is not None:
        transformers_logging.disable_progress_bar()  # the caller draws the one bar: no "Loading weights" beside it
    report = progress or (lambda done, total: None)
    errors: list[InputError] = []
    examples = list(islice(iter_training_examples(data, errors.append), max_examples))
    if not examples:
        raise InputError(str(data), "no usable evaluation examples")
    engine = HuggingFaceEngine.from_settings(
        settings.model_copy(update={"base_model": base_model, "adapter": adapter, "schema_path": schema_path})
    )
    texts = [example.text for example in examples]
    step = chunk or len(texts)
    results = []
    for start in range(0, len(texts), step):
        report(start, len(texts))
        results += engine.extract(texts[start:start + step])
    report(len(texts), len(texts))
    return score(Example(e.text, e.triplets, r.raw) for e, r in zip(examples, results, strict=True))
