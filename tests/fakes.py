"""The only fake: an engine whose answers a test chooses, where the model is beside the point."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from models.extraction import Extraction, WindowOutput, assemble
from models.schema import PredicateSchema, load_schema


class ScriptedEngine:
    """Answers each text with ``answer(text)``, then parses and checks it like the real engine."""

    model_id = "scripted"
    adapter_id = ""
    prompt_version = "v1"

    def __init__(self, answer: Callable[[str], str], schema: PredicateSchema | None = None) -> None:
        self.answer = answer
        self.schema = schema or load_schema()
        self.batches: list[list[str]] = []

    def extract(self, texts: Sequence[str], *, progress: Callable[[], None] = lambda: None,
                finished=None) -> list[Extraction]:  # type: ignore[no-untyped-def]
        self.batches.append(list(texts))
        return [assemble([WindowOutput(0, text, self.answer(text))], self.schema, max_new_tokens=512) for text in texts]

    def use_adapter(self, adapter_id: str, path) -> None:  # type: ignore[no-untyped-def]
        self.adapter_id = adapter_id
        self.adapter_path = path
