"""The GPUs `triplets worker --gpus` runs on, found without torch: the supervisor stays light.

The indexes are the ones the worker processes use (``cuda:N``): positions in
``CUDA_VISIBLE_DEVICES`` when it is set, else ``nvidia-smi -L``'s numbering (the supervisor
starts its workers with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so CUDA numbers them the same way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from models.errors import InputError

NVIDIA_SMI_TIMEOUT_S = 30


@dataclass(frozen=True)
class Gpu:
    index: int  # names the worker in Flower: QUEUE-cudaINDEX
    device: str  # what its worker process is told to use


def list_gpus() -> list[Gpu]:
    """This host's GPUs as its worker processes will number them."""
    return [Gpu(index, f"cuda:{index}") for index in range(_count())]


def select_gpus(spec: str) -> list[Gpu]:
    """The GPUs ``--gpus`` names: ``all``, or indexes such as ``0,1``; an InputError naming the bad part."""
    option = f"--gpus {spec}"
    wanted = None if spec.strip() == "all" else _indexes(spec, option)
    found = list_gpus()
    if not found:
        raise InputError(option, f"no GPU on this host ({_why_none()})")
    if wanted is None:
        return found
    by_index = {gpu.index: gpu for gpu in found}
    missing = [index for index in wanted if index not in by_index]
    if missing:
        raise InputError(option, f"no GPU {missing[0]} on this host (it has {_numbers(found)})")
    return [by_index[index] for index in wanted]


def _indexes(spec: str, option: str) -> list[int]:
    parts = [part.strip() for part in spec.split(",")]
    if not all(part.isdigit() for part in parts):
        raise InputError(option, "expected all, or GPU indexes such as 0,1")
    indexes = [int(part) for part in parts]
    if len(set(indexes)) != len(indexes):
        raise InputError(option, "a GPU is named twice")
    return indexes


def _count() -> int:
    visible = _visible_devices()
    if visible is not None:
        # CUDA uses the entries up to the first invalid one; "" and "-1" hide every GPU.
        count = 0
        for entry in visible.split(","):
            if not entry.strip() or entry.strip().startswith("-"):
                break
            count += 1
        return count
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    # MIG devices are listed indented under their GPU: whole GPUs only.
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0


def _visible_devices() -> str | None:
    # CUDA's own variable, not a setting: read here, where it is used, as CUDA itself does.
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _why_none() -> str:
    visible = _visible_devices()
    if visible is not None:
        return f"CUDA_VISIBLE_DEVICES={visible!r} shows none"
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi is not installed"
    return "`nvidia-smi -L` lists none"


def _numbers(gpus: list[Gpu]) -> str:
    return ", ".join(str(gpu.index) for gpu in gpus)
