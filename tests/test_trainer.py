"""LoRA / QLoRA training on the CPU with the tiny demo GLM: checkpoints, resume, 4-bit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from devkit.assets import demo_corpus_path, demo_schema_path  # noqa: E402
from models.train_config import parse_train_config  # noqa: E402
from worker.checkpoints import CHECKPOINT  # noqa: E402
from worker.trainer import train_adapter  # noqa: E402


class Killed(Exception):
    pass


def config_for(model_dir: Path, **overrides: object):  # type: ignore[no-untyped-def]
    values = {
        "name": "demo", "base_model": model_dir, "train_data": demo_corpus_path(), "schema_path": demo_schema_path(),
        "device": "cpu", "precision": "fp32", "max_steps": 6, "batch_size": 4,
        "checkpoint_every": 2, "learning_rate": 1e-3, "lora_dropout": 0.0, **overrides,
    }
    return parse_train_config(values)


def test_killed_job_resumes_from_its_checkpoint_and_ends_where_an_unbroken_one_does(demo_model, tmp_path: Path) -> None:
    config = config_for(demo_model[0])
    unbroken = train_adapter(config, tmp_path / "unbroken")

    seen: list[int] = []

    def die_after_step_5(progress: dict) -> None:
        seen.append(progress["step"])
        if progress["step"] == 5:
            raise Killed

    with pytest.raises(Killed):
        train_adapter(config, tmp_path / "broken", on_progress=die_after_step_5)
    assert (tmp_path / "broken" / CHECKPOINT / "state.json").is_file()
    progress: list[dict] = []
    resumed = train_adapter(config, tmp_path / "broken", on_progress=progress.append)
    assert resumed.resumed_from == 4 and resumed.steps == 6
    assert [p["step"] for p in progress] == [5, 6]
    assert not (tmp_path / "broken" / CHECKPOINT).exists()
    first = load_file(tmp_path / "unbroken" / "adapter_model.safetensors")
    second = load_file(tmp_path / "broken" / "adapter_model.safetensors")
    assert first.keys() == second.keys() and first
    for key in first:
        assert torch.allclose(first[key], second[key], atol=1e-5), key
    assert math.isclose(unbroken.loss, resumed.loss, rel_tol=1e-4)
    assert (tmp_path / "broken" / "train_config.json").is_file()


def test_loss_falls_and_prompt_tokens_are_masked(demo_model, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from models.training_data import iter_training_examples
    from worker.trainer import IGNORE, encode_examples

    config = config_for(demo_model[0], max_steps=None, epochs=1)
    tokenizer = AutoTokenizer.from_pretrained(demo_model[0], local_files_only=True)
    examples = list(iter_training_examples(demo_corpus_path(), lambda error: None))
    encoded, skipped = encode_examples(examples, tokenizer, config)
    assert skipped == 0 and len(encoded) == len(examples)
    ids, labels = encoded[0]
    answer = [token for token in labels if token != IGNORE]
    assert labels[: len(ids) - len(answer)] == [IGNORE] * (len(ids) - len(answer))
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer[:-1]).startswith('[{"subject":"')


def test_qlora_trains_on_a_4bit_base(demo_model, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    losses: list[float] = []
    result = train_adapter(config_for(demo_model[0], precision="4bit", max_steps=3),
                           tmp_path / "qlora", on_progress=lambda p: losses.append(p["loss"]))
    assert result.steps == 3 and all(math.isfinite(loss) for loss in losses)
    assert (tmp_path / "qlora" / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "qlora").glob("*.bin"))
