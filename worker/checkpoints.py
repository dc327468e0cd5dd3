"""A LoRA training job's checkpoint: adapter, optimizer and scheduler state, and the position, swapped in atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint"


def save_checkpoint(model: Any, optimizer: Any, scheduler: Any, position: dict[str, Any], checkpoint: Path) -> None:
    """Written beside the old one, then swapped in: a kill mid-write leaves the old one whole."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    staging = checkpoint.with_name(CHECKPOINT + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, staging / "adapter.safetensors")
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    (staging / "state.json").write_text(json.dumps(position))
    old = checkpoint.with_name(CHECKPOINT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if checkpoint.exists():
        checkpoint.rename(old)
    staging.rename(checkpoint)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_position(checkpoint: Path) -> dict[str, Any] | None:
    """The position a checkpoint was taken at ({"step", "plan"}), or None where there is none."""
    state = checkpoint / "state.json"
    return json.loads(state.read_text()) if state.is_file() else None


def restore_checkpoint(model: Any, optimizer: Any, scheduler: Any, checkpoint: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(checkpoint / "adapter.safetensors"))
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
