"""The `triplets train …`, `triplets adapters …` and `triplets eval` commands: their arguments only.

What they do is in ``producer.training_commands``; imports stay light (no torch) here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

train_app = typer.Typer(help="Train LoRA adapters on the `train` queue.", no_args_is_help=True)
adapters_app = typer.Typer(help="The adapter registry.", no_args_is_help=True)
# Fields `train submit` takes as options of their own; every other field is a --set key.
OWN_OPTIONS = ("name", "base_model", "train_data", "dev_data")


def set_keys() -> str:
    """Every --set key with its default, from the training config model itself (so the list cannot go stale)."""
    from models.train_config import TrainConfig

    keys = [f"{key}={'unset' if field.default is None else field.default}"
            for key, field in TrainConfig.model_fields.items() if key not in OWN_OPTIONS]
    return "--set keys (default): " + ", ".join(keys) + "."


@train_app.command("submit", epilog=set_keys())
def train_submit(
    name: Annotated[str, typer.Option(help="Adapter name in the registry.")],
    base_model: Annotated[Path, typer.Option(help="Local base model folder (as the training worker sees it).")],
    train_data: Annotated[Path, typer.Option(help="DuIE 2.0 / instruction / context-target / text+triplets JSONL.")],
    dev_data: Annotated[Optional[Path], typer.Option(help="Held-out JSONL, scored when training ends.")] = None,
    setting: Annotated[
        Optional[list[str]], typer.Option("--set", help="Any other job field, e.g. --set lora_r=16 --set epochs=2 "
                                                        "(the keys are listed below).")
    ] = None,
) -> None:
    """Validate a training job and queue it."""
    from producer.training_commands import run_train_submit

    values: dict[str, object] = {"name": name, "base_model": base_model, "train_data": train_data, "dev_data": dev_data}
    for item in setting or []:
        key, separator, value = item.partition("=")
        if not separator:
            raise typer.BadParameter(f"--set {item}: expected key=value")
        values[key.strip()] = value
    run_train_submit(values)


@train_app.command("status")
def train_status(
    job: Annotated[Optional[int], typer.Argument(help="Training job id (default: the newest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Step, loss, samples/s and ETA of a training job."""
    from producer.training_commands import run_train_status

    run_train_status(job, as_json=as_json)


@adapters_app.command("list")
def adapters_list() -> None:
    """Every registered adapter with its scores."""
    from producer.training_commands import run_adapters_list

    run_adapters_list()


@adapters_app.command("show")
def adapters_show(ref: Annotated[str, typer.Argument(help="name or name:version")]) -> None:
    """One adapter's path, config and metrics."""
    from producer.training_commands import run_adapters_show

    run_adapters_show(ref)


@adapters_app.command("promote")
def adapters_promote(ref: Annotated[str, typer.Argument(help="name or name:version")]) -> None:
    """Make extraction workers use this adapter from their next batch."""
    from producer.training_commands import run_adapters_promote

    run_adapters_promote(ref)


@adapters_app.command("demote")
def adapters_demote(ref: Annotated[str, typer.Argument(help="name:version")]) -> None:
    """Withdraw a promotion: the adapter promoted before it is used again from the next batch."""
    from producer.training_commands import run_adapters_demote

    run_adapters_demote(ref)


def evaluate(
    data: Annotated[Path, typer.Option(help="Held-out JSONL with gold triplets.")],
    adapter: Annotated[Optional[str], typer.Option(help="Registered adapter (name or name:version).")] = None,
    base_model: Annotated[Optional[Path], typer.Option(help="Base model folder (default: the adapter's).")] = None,
    max_examples: Annotated[int, typer.Option(help="Score at most this many examples.")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON instead of tables.")] = False,
) -> None:
    """Precision / recall / F1 (DuIE semantics), overall and per predicate, of a model on held-out data, run here."""
    from producer.training_commands import run_eval

    run_eval(adapter, data, base_model, max_examples, as_json=as_json)
