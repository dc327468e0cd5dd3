"""BENCHMARK ONLY: end worker processes' answers at drawn lengths (bench/scale_gpu.py).

A random-weight model never ends its answers by itself, so a benchmark of realistic answer
lengths must end each row for it. Production code keeps one hook for that,
``worker.hf_engine.HuggingFaceEngine.forced_lengths(prompts)``, which returns None. When
``BENCH_FORCED_LENGTHS`` names a JSON file mapping a window's text to its answer length (in
tokens, the end token included), this module replaces that method in every Python process it
is loaded in, so the lengths reach real `triplets worker` processes without a line of benchmark
code in the product.

How it is loaded: Python imports ``sitecustomize`` at start-up from the first folder on its path
that has one; bench/scale_gpu.py starts its workers with ``PYTHONPATH=bench/hooks:<repo>``, and
the supervisor passes its environment to its ``python -m worker.main`` child. Nothing is imported
here at start-up: the method is replaced right after ``worker.hf_engine`` itself is imported (a
finder on ``sys.meta_path``), so the supervisor, which never imports the engine, stays without
torch. With ``BENCH_PROFILE_LOOP`` set as well, the GPU loop times its phases and logs them
(``ContinuousDecoder.profile``). Without ``BENCH_FORCED_LENGTHS`` this module does nothing. It
shadows any other ``sitecustomize`` (such as a distribution's) in those processes only.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TARGET = "worker.hf_engine"
VARIABLE = "BENCH_FORCED_LENGTHS"
# Set too: each phase of the GPU loop timed, the GPU synced at each (ContinuousDecoder.profile; slower)
PROFILE_VARIABLE = "BENCH_PROFILE_LOOP"


def forced_lengths_from(lengths: dict[str, int]) -> Callable[[Any, Sequence[Any]], list[int] | None]:
    """The replacement method: each prompt's length looked up by its window's text."""

    def forced_lengths(self: Any, prompts: Sequence[Any]) -> list[int] | None:
        found = [lengths.get(prompt.window.text) for prompt in prompts]
        if all(length is None for length in found):
            return None  # not a benchmark document (the readiness canary): decoded as in production
        # a stray text runs to the limit, as an unforced random-model answer would
        return [self.config.max_new_tokens if length is None else length for length in found]

    return forced_lengths


def patch(engine_class: type, lengths: dict[str, int]) -> None:
    if not hasattr(engine_class, "forced_lengths"):
        # Unpatched, every answer would silently run to max_new_tokens: refuse to start instead.
        raise RuntimeError(f"{VARIABLE}: {engine_class.__qualname__} has no forced_lengths hook to replace")
    engine_class.forced_lengths = forced_lengths_from(lengths)
    if os.environ.get(PROFILE_VARIABLE):
        sys.modules["worker.continuous_decode"].ContinuousDecoder.profile = True  # the engine imported it


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds ``worker.hf_engine`` through the other finders and patches it once it has run."""

    def __init__(self, lengths: dict[str, int]) -> None:
        self.lengths = lengths

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        run = spec.loader.exec_module
        lengths = self.lengths

        def exec_and_patch(module: Any) -> None:
            run(module)
            patch(module.HuggingFaceEngine, lengths)

        spec.loader.exec_module = exec_and_patch  # this module's own loader object: no other is touched
        return spec


def install() -> None:
    source = os.environ.get(VARIABLE)
    if not source:
        return
    lengths = {str(text): int(length) for text, length in json.loads(Path(source).read_text("utf-8")).items()}
    if TARGET in sys.modules:
        patch(sys.modules[TARGET].HuggingFaceEngine, lengths)
    else:
        sys.meta_path.insert(0, PatchOnImport(lengths))


install()
