"""The extraction engine interface: one real implementation (``worker.hf_engine``), a fake in tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol, Sequence

from models.extraction import Extraction
from models.settings import Settings

# A short sentence the engine must get through when it is started or its health is in doubt:
# a failure on it is the engine's fault, not a document's.
CANARY_TEXT = "《娘家的故事第二部》是张玲执导的电视剧。"


# Documents whose extraction is done before the whole call returns: (index in the call's texts, extraction).
Finished = Callable[[list[tuple[int, Extraction]]], None]


class ExtractionEngine(Protocol):
    model_id: str
    adapter_id: str
    prompt_version: str

    def extract(self, texts: Sequence[str], *, progress: Callable[[], None] = lambda: None,
                finished: Finished | None = None) -> list[Extraction]:
        """One Extraction per text, in order; ``progress`` is called as decode batches finish.

        ``finished``, if given, may receive documents whose extraction is done before the call
        returns (they are in the returned list too). Raises only for failures of the whole call.
        """
        ...

    def use_adapter(self, adapter_id: str, path: Path) -> None:
        """Extract with this adapter from the next call on."""
        ...


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How an engine batches and decodes; fixed when the engine is built (``HuggingFaceEngine.with_config``
    gives another view of the same loaded model)."""

    max_batch_size: int = 1024
    max_batch_tokens: int | None = None  # None: from the GPU budget on CUDA
    gpu_memory_budget_gib: float = 18.6
    prefill_chunk_tokens: int = 8192
    decode_loop: str = "auto"
    cuda_graphs: bool = True
    share_prefix: bool = True
    max_input_tokens: int = 2048
    max_document_tokens: int = 262_144
    max_new_tokens: int = 512
    min_new_tokens: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        return cls(**{item.name: getattr(settings, item.name) for item in fields(cls)})
