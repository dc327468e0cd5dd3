"""Adapter folders on disk: what a loadable one holds, and that a registered one stays inside the registry.

Pure file checks (no torch, no database), shared by promotion, the engine and the loader.
"""

from __future__ import annotations

from pathlib import Path

from models.errors import ConfigError

def model_key(base_model: Path | str) -> str:
    """How adapters and triplets name a base model: its resolved folder."""
    return str(Path(base_model).expanduser().resolve())


# PEFT's file names. Only safetensors: adapter_model.bin is a pickle, and unpickling runs code.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLED_WEIGHTS = "adapter_model.bin"


def resolve_adapter_path(registry: Path, relative: str) -> Path:
    """The adapter folder inside ``registry``; anything that would leave it is refused.

    ``resolve`` follows symlinks, so a link inside the registry pointing elsewhere is refused too.
    """
    root = registry.resolve()
    path = (root / relative).resolve()
    if not _inside(root, path):
        raise ConfigError(f"adapter path {relative!r} escapes the registry folder {root}")
    return path


def check_adapter_folder(path: Path) -> Path:
    """``path`` if it is a folder holding a LoRA adapter's config and safetensors weights.

    Pure file checks, so the producer (promotion) and the engine (loading) refuse the same folders.
    """
    if not path.is_dir():
        raise ConfigError(f"adapter folder {path} does not exist")
    missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (path / name).is_file()]
    if missing:
        pickled = ADAPTER_WEIGHTS in missing and (path / PICKLED_WEIGHTS).exists()
        reason = f" ({PICKLED_WEIGHTS} is a pickle and is never loaded: save with safetensors)" if pickled else ""
        raise ConfigError(f"adapter folder {path} lacks {' and '.join(missing)}{reason}")
    return path


def registered_adapter_folder(registry: Path, relative: str) -> Path:
    """A registered adapter's folder: inside the registry, files included, and loadable."""
    path = check_adapter_folder(resolve_adapter_path(registry, relative))
    root = registry.resolve()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        # A file symlinked out of the registry would bypass the folder check above.
        if not _inside(root, (path / name).resolve()):
            raise ConfigError(f"adapter file {relative}/{name} escapes the registry folder {root}")
    return path


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents
