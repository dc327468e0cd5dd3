"""The extraction engine interface and the per-process engine cache.

One interface, one real implementation (``worker.hf_engine``), fakes in tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

from models.settings import Settings
from models.extraction import Extraction


class ExtractionEngine(Protocol):
    model_id: str
    adapter_id: str
    prompt_version: str

    def extract(self, texts: Sequence[str]) -> list[Extraction]:
        """One Extraction per text, in order. Raises only for failures of the whole batch."""
        ...

    def use_adapter(self, adapter_id: str, path: Path) -> None:
        """Extract with this adapter from the next call on."""
        ...


_engine: ExtractionEngine | None = None


def get_engine(settings: Settings) -> ExtractionEngine:
    """The process's engine, built on first use.

    Lazy on purpose: it runs in the prefork pool child at its first task, never in the
    parent (CUDA cannot be re-initialised in a forked child) and never in
    ``worker_process_init`` (Celery kills that hook after 4 s).
    """
    global _engine
    if _engine is None:
        from worker.hf_engine import HuggingFaceEngine

        _engine = HuggingFaceEngine.from_settings(settings)
    return _engine


def set_engine(engine: ExtractionEngine | None) -> None:
    """Install an engine for this process (tests, benchmarks)."""
    global _engine
    _engine = engine
