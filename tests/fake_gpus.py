"""`triplets …` on a host with two fake GPUs, each of them the CPU: how the fleet is tested without GPUs.

``python -m tests.fake_gpus worker --gpus 0,1`` (the repository on PYTHONPATH). Only the GPU
list is faked, in this process (the supervisor); the worker processes it starts are the real
ones, told to use the CPU.
"""

from __future__ import annotations

import sys

from producer.cli import main
from worker import gpus

FAKE_GPUS = [gpus.Gpu(0, "cpu"), gpus.Gpu(1, "cpu")]

if __name__ == "__main__":
    gpus.list_gpus = lambda: FAKE_GPUS
    sys.argv[0] = "triplets"
    main()
