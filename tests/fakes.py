"""The only fake: an engine whose answers a test chooses, where the model is beside the point."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from models.errors import ParseError
from models.parser import parse_triplets
from worker.engine import Extraction


class ScriptedEngine:
    """Answers each text with ``answer(text)``, parsed by the real parser."""

    model_id = "scripted"
    adapter_id = ""
    prompt_version = "v1"

    def __init__(self, answer: Callable[[str], str]) -> None:
        self.answer = answer
        self.batches: list[list[str]] = []

    def extract(self, texts: Sequence[str]) -> list[Extraction]:
        self.batches.append(list(texts))
        results = []
        for text in texts:
            raw = self.answer(text)
            try:
                results.append(Extraction(raw=raw, triplets=parse_triplets(raw)))
            except ParseError as exc:
                results.append(Extraction(raw=raw, error=f"unparseable output: {exc.reason}"))
        return results
