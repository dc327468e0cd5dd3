"""Micro-batch size and gradient checkpointing chosen to fit a GPU memory budget.

A QLoRA step's memory is the 4-bit weights plus activations that grow with the micro-batch.
Checkpointing a decoder layer keeps only its input and recomputes the rest during the
backward pass: it saves memory and costs a second forward of that layer. The plan measures
a layer's activations once (one sample of the longest length, checkpointed and not), then
takes the largest micro-batch that fits the budget and, for it, the fewest checkpointed layers.

That order is measured (bench/train_gpu.py, H200, 6B GLM, 518-token samples, 8 per step):
8 x 1 with every layer checkpointed ran 17.3 samples/s, 4 x 2 with none 13.4, and 8 x 1 with
11 of 28 layers checkpointed 24.7: a small micro-batch loses more than recomputation costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

from models.errors import ModelError

# Allocated bytes stay this far under the budget: the caching allocator reserves more than it hands out.
ALLOCATOR_SLACK = 0.92


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """Micro-batches of ``micro_batch_size`` samples, ``grad_accum`` of them a step, the first
    ``checkpointed_layers`` of ``layers`` checkpointed. ``estimated_peak_gib`` is None where no
    measured plan fits the budget, or nothing was measured (on the CPU)."""

    micro_batch_size: int
    grad_accum: int
    checkpointed_layers: int
    layers: int
    estimated_peak_gib: float | None = None


@dataclass(frozen=True, slots=True)
class ActivationProbe:
    """Bytes above the resident model for one sample: every layer checkpointed, and none."""

    resident: int
    all_checkpointed: int
    none_checkpointed: int


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer's stack of blocks (layers, h, encoder.layers …): the outermost ModuleList,
    so a mixture-of-experts layer's longer list of experts is not mistaken for it."""
    stacks = [(name.count("."), -len(module), name, module) for name, module in model.named_modules()
              if isinstance(module, torch.nn.ModuleList)]
    if not stacks:
        raise ValueError(f"{type(model).__name__} has no ModuleList of decoder layers")
    return min(stacks, key=lambda item: item[:3])[3]


def set_checkpointed_layers(model: torch.nn.Module, count: int) -> None:
    """Checkpoint the first ``count`` decoder layers (non-reentrant), run the rest normally."""
    for index, layer in enumerate(decoder_layers(model)):
        layer.__dict__.pop("forward", None)  # back to the class's forward
        if index < count:
            layer.forward = partial(checkpoint, layer.forward, use_reentrant=False)


def choose_plan(probe: ActivationProbe, *, batch_size: int, layers: int, budget_bytes: float,
                micro_batch_size: int | None, checkpointing: str) -> TrainingPlan:
    """The largest micro-batch dividing ``batch_size``, then the fewest checkpointed layers, that fit the budget."""
    per_layer = max(0.0, (probe.none_checkpointed - probe.all_checkpointed) / layers)
    usable = budget_bytes * ALLOCATOR_SLACK - probe.resident
    micros = [micro_batch_size] if micro_batch_size else [m for m in range(batch_size, 0, -1) if batch_size % m == 0]
    counts = {"all": [layers], "none": [0]}.get(checkpointing, range(layers + 1))
    for micro in micros:
        for count in counts:
            uncheckpointed = (layers - count) * per_layer if count < layers else 0.0
            need = micro * (probe.all_checkpointed + uncheckpointed)
            if need <= usable:
                return TrainingPlan(micro, batch_size // micro, count, layers, round((probe.resident + need) / 2**30, 2))
    # nothing fits by the estimate: the smallest plan; an OOM then names the budget
    micro = micro_batch_size or 1
    return TrainingPlan(micro, batch_size // micro, 0 if checkpointing == "none" else layers, layers)


def probe_activations(model: torch.nn.Module, run_step: Callable[[int], None], device: torch.device) -> ActivationProbe:
    """Peak bytes of one forward + backward of one sample, all layers checkpointed and none."""
    layers = len(decoder_layers(model))
    torch.cuda.synchronize(device)
    resident = torch.cuda.memory_allocated(device)
    peaks = []
    for count in (layers, 0):
        set_checkpointed_layers(model, count)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            run_step(1)
        except torch.cuda.OutOfMemoryError:
            peaks.append(float("inf"))
            continue
        finally:
            model.zero_grad(set_to_none=True)
        peaks.append(torch.cuda.max_memory_allocated(device) - resident)
    torch.cuda.empty_cache()
    if peaks[0] == float("inf"):
        raise ModelError("out of GPU memory training on one sample of the longest length with every layer "
                         "checkpointed: lower max_length or raise the GPU memory")
    return ActivationProbe(resident, int(peaks[0]), peaks[1])
