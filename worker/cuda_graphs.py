"""A decode step's forward pass recorded once as a CUDA graph and replayed.

At batch 1024 of a 6B model in 4-bit, one decode step launches ~2,100 kernels: the host took
68.5 ms to launch what the GPU ran in 36.3 ms (H200 profile, docs/benchmarks.md). Every tensor
a step reads keeps its address from step to step (the KV cache, the token, position and mask
buffers are written in place), so the forward pass is recorded once per decoding run and then
replayed: one launch per step instead of thousands.

A model whose forward cannot be recorded (code that syncs with the host, such as model code
shipped with the weights) keeps decoding eagerly; the reason is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

# Steps run eagerly (on a side stream, as PyTorch's CUDA-graph notes ask) before recording, so
# lazy initialisations (cuBLAS workspaces, bitsandbytes' compute dtype) happen outside the graph.
WARMUP_STEPS = 2


class GraphedForward:
    """``forward()`` eagerly for the first steps, then recorded and replayed; eager for good if recording fails.

    ``forward`` must read only tensors whose storage outlives this object and return the same
    output tensor every time; the returned tensor is overwritten by the next call (of any graph
    recorded into the same ``pool``).
    """

    def __init__(self, forward: Callable[[], torch.Tensor], *, enabled: bool, device: torch.device | None = None,
                 pool: Any = None) -> None:
        self._forward = forward
        self._pool = pool  # a memory pool shared with other graphs never replayed at the same time
        self._enabled = enabled
        # Warm-up and recording run on this device, on one stream of it: torch.cuda.graph's own
        # stream belongs to whichever device was current when it was first made (cuda:0), and a
        # library's per-stream workspace first allocated while recording breaks the recording.
        # (As vLLM and SGLang do; a worker on cuda:1 could not record without it.)
        self._device = device
        self._stream: torch.cuda.Stream | None = None
        self._warm_steps = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._output: torch.Tensor | None = None
        self.failure: str | None = None  # why recording failed, if it did

    @property
    def recorded(self) -> bool:
        return self._graph is not None

    def __call__(self) -> torch.Tensor:
        if self._graph is not None:
            with torch.cuda.device(self._device):  # onto the current stream of the graph's device
                self._graph.replay()
            return self._output  # type: ignore[return-value]
        if not self._enabled:
            return self._forward()
        if self._warm_steps < WARMUP_STEPS:
            self._warm_steps += 1
            return self._on_side_stream()
        return self._record()

    def _side_stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=self._device)
        return self._stream

    def _on_side_stream(self) -> torch.Tensor:
        stream = self._side_stream()
        with torch.cuda.device(self._device):
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                output = self._forward()
            torch.cuda.current_stream().wait_stream(stream)
        return output

    def _record(self) -> torch.Tensor:
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the worker's other threads (metrics, heartbeats) may touch CUDA meanwhile
            with torch.cuda.device(self._device), torch.cuda.graph(graph, pool=self._pool, stream=self._side_stream(),
                                                                   capture_error_mode="thread_local"):
                output = self._forward()
        except Exception as exc:  # an op that syncs with the host or allocates outside the graph
            self._enabled = False
            self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("decode step not recorded as a CUDA graph, decoding eagerly: %s", self.failure)
            return self._forward()
        self._graph, self._output = graph, output
        graph.replay()  # recording ran nothing: this is the step itself
        return output
