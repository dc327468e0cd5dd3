"""The extraction engine interface: one real implementation (``worker.hf_engine``), a fake in tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, Sequence

from models.extraction import Extraction

# A short sentence the engine must get through when it is started or its health is in doubt:
# a failure on it is the engine's fault, not a document's.
CANARY_TEXT = "《娘家的故事第二部》是张玲执导的电视剧。"


class ExtractionEngine(Protocol):
    model_id: str
    adapter_id: str
    prompt_version: str

    def extract(self, texts: Sequence[str], *, progress: Callable[[], None] = lambda: None) -> list[Extraction]:
        """One Extraction per text, in order; ``progress`` is called as decode batches finish.

        Raises only for failures of the whole call.
        """
        ...

    def use_adapter(self, adapter_id: str, path: Path) -> None:
        """Extract with this adapter from the next call on."""
        ...
