"""Any Hugging Face causal LM, shown: extraction, training and evaluation on GLM, Qwen2 and Llama.

Each architecture gets a tiny model built offline (devkit.tiny) and trained here to extract
the 12 demo sentences; the same engine, trainer and scorer the workers use then run on it,
in full precision and in 4-bit NF4 (bitsandbytes on the CPU).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from devkit.assets import demo_corpus_path, demo_schema_path, load_demo_examples, load_demo_schema  # noqa: E402
from devkit.tiny import train_to_extract  # noqa: E402
from models.settings import load_settings  # noqa: E402
from models.train_config import parse_train_config  # noqa: E402
from tests.lora import save_lora  # noqa: E402
from worker.evaluation import evaluate_adapter  # noqa: E402
from worker.hf_engine import HuggingFaceEngine  # noqa: E402
from worker.trainer import train_adapter  # noqa: E402

EXAMPLES = load_demo_examples()
TEXTS = [text for text, _ in EXAMPLES]


@pytest.fixture(scope="module", params=["glm", "qwen2", "llama"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(architecture, folder) of a tiny model of that architecture that extracts the demo sentences."""
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    stats = train_to_extract(folder, EXAMPLES, load_demo_schema(), architecture=request.param, seed=0)
    assert stats["exact_match"] == 1.0, stats
    return request.param, folder


def _engine(folder: Path, **overrides: object) -> HuggingFaceEngine:
    settings = {"base_model": folder, "schema_path": demo_schema_path(), "device": "cpu", "max_new_tokens": 200}
    return HuggingFaceEngine.from_settings(load_settings(**{**settings, **overrides}))


def test_extraction_finds_the_gold_triplets(trained: tuple[str, Path]) -> None:
    architecture, folder = trained
    engine = _engine(folder, max_batch_size=5)
    assert engine.model.config.model_type == architecture
    results = engine.extract(TEXTS)
    assert [r.triplets for r in results] == [gold for _, gold in EXAMPLES]


def test_every_decode_loop_agrees_in_four_bit(trained: tuple[str, Path], tmp_path: Path) -> None:
    # continuous: 4 rows for 8 documents, refilled (their prefill written straight into the rows)
    pytest.importorskip("bitsandbytes")
    _, folder = trained
    lora = save_lora(folder, tmp_path / "lora", b_std=0.02)
    common = {"precision": "4bit", "adapter": lora, "max_batch_size": 4, "max_new_tokens": 24, "min_new_tokens": 24}
    static = _engine(folder, decode_loop="static", **common).extract(TEXTS[:8])
    generated = _engine(folder, decode_loop="generate", **common).extract(TEXTS[:8])
    continuous = _engine(folder, decode_loop="continuous", **common).extract(TEXTS[:8])
    assert [r.raw for r in static] == [r.raw for r in generated] == [r.raw for r in continuous]
    assert all(r.raw for r in static)


@pytest.mark.parametrize("precision", ["fp32", "4bit"])
def test_training_an_adapter_lowers_the_loss_and_evaluation_scores_it(
    trained: tuple[str, Path], tmp_path: Path, precision: str
) -> None:
    if precision == "4bit":
        pytest.importorskip("bitsandbytes")
    _, folder = trained
    config = parse_train_config({
        "name": "arch", "base_model": folder, "train_data": demo_corpus_path(), "schema_path": demo_schema_path(),
        "device": "cpu", "precision": precision, "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3,
        "lora_dropout": 0.0})
    losses: list[float] = []
    result = train_adapter(config, tmp_path / "adapter", on_progress=lambda progress: losses.append(progress["loss"]))
    assert result.steps == 4 and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    scores = evaluate_adapter(folder, tmp_path / "adapter", demo_corpus_path(), settings=load_settings(
        device="cpu", precision=precision, max_new_tokens=200), schema_path=demo_schema_path())
    # a model that already extracts the corpus, nudged for four steps at a small rate, still does,
    # through the adapter the trainer saved and the loader attaches (merged, or over 4-bit)
    assert scores.parse_failure_rate == 0.0 and scores.f1 >= 0.9
