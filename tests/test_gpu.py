"""The path GPU workers run, on a CUDA GPU: 4-bit NF4 + LoRA, the in-place KV cache. Run with `pytest -m gpu`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from devkit.assets import demo_model_path  # noqa: E402
from models.duie import parse_record  # noqa: E402
from models.settings import load_settings  # noqa: E402
from tests.lora import ATTENTION, save_lora  # noqa: E402
from worker.decoding import DecodeRequest, prefill  # noqa: E402
from worker.hf_engine import HuggingFaceEngine  # noqa: E402
from worker.shared_prefix import SharedPrefix  # noqa: E402

HELD_OUT = [parse_record(json.loads(line)) for line in
            (demo_model_path() / "heldout.jsonl").read_text(encoding="utf-8").splitlines()[:64]]


def _engine(**overrides: object) -> HuggingFaceEngine:
    settings = {"base_model": demo_model_path(), "device": "cuda", "max_new_tokens": 160}
    return HuggingFaceEngine.from_settings(load_settings(**{**settings, **overrides}))


def test_four_bit_extraction_on_cuda_finds_the_gold_triplets() -> None:
    import bitsandbytes as bnb

    engine = _engine(precision="4bit")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in engine.model.modules())
    results = engine.extract([text for text, _ in HELD_OUT])
    found = sum(len(set(r.triplets) & set(gold)) for r, (_, gold) in zip(results, HELD_OUT))
    assert found >= 0.9 * sum(len(gold) for _, gold in HELD_OUT)


def test_static_decoding_matches_generate_on_cuda_with_a_lora(tmp_path: Path) -> None:
    lora = save_lora(demo_model_path(), tmp_path / "lora", b_std=0.02, targets=ATTENTION)  # B changes answers
    texts = [text for text, _ in HELD_OUT[:32]]
    common = {"adapter": lora, "precision": "4bit", "max_batch_size": 16, "max_new_tokens": 32,
              "min_new_tokens": 32}
    generated = _engine(decode_loop="generate", **common).extract(texts)
    # whole prompts, as generate prefills them: a shared prefix run as one row rounds differently
    # in bf16 (other GEMM shapes), which can flip a near tie (the next test bounds that difference)
    static = _engine(decode_loop="static", share_prefix=False, **common).extract(texts)
    assert [r.raw for r in static] == [r.raw for r in generated]


def test_shared_prefix_gives_the_keys_of_whole_prompts_on_cuda(tmp_path: Path) -> None:
    lora = save_lora(demo_model_path(), tmp_path / "lora", b_std=0.02, targets=ATTENTION)  # B changes the keys
    engine = _engine(adapter=lora, precision="4bit")
    prompts = [engine.prompts.prompts_for(i, text)[0] for i, (text, _) in enumerate(HELD_OUT[:16])]
    padded = engine.tokenizer.pad({"input_ids": [p.ids for p in prompts]}, return_tensors="pt")
    request = DecodeRequest(padded["input_ids"].cuda(), padded["attention_mask"].cuda(), 1, 0, engine.eos_ids,
                            engine.tokenizer.pad_token_id, 0)
    prefix = SharedPrefix(engine.model)
    arranged = prefix.arrange(request)
    assert arranged.shared_prefix > 0.5 * min(len(p.ids) for p in prompts)
    with torch.inference_mode():
        ((_, whole),) = prefill(engine.model, request)
        ((_, shared),) = prefill(engine.model, arranged, prefix)
    for layer in (0, len(whole.layers) - 1):
        for row in range(len(prompts)):  # each row's real tokens, wherever its padding puts them
            expected = whole.layers[layer].keys[row][:, request.attention_mask[row, :-1].bool()].float()
            got = shared.layers[layer].keys[row][:, arranged.attention_mask[row, :-1].bool()].float()
            assert got.shape == expected.shape
            assert (got - expected).abs().max() <= 0.05 * expected.abs().max()


@pytest.mark.parametrize("loop", ["static", "continuous"])
def test_cuda_graph_decoding_answers_exactly_as_eager_decoding(tmp_path: Path, loop: str) -> None:
    lora = save_lora(demo_model_path(), tmp_path / "lora", b_std=0.02, targets=ATTENTION)  # B changes answers
    texts = [text for text, _ in HELD_OUT[:48]]
    common = {"adapter": lora, "precision": "4bit", "max_batch_size": 16, "max_new_tokens": 48, "decode_loop": loop}
    eager = _engine(cuda_graphs=False, **common)
    eager.continuous_decoder.narrowest = 2  # a draining batch narrows through several widths, in both runs
    expected = [r.raw for r in eager.extract(texts)]
    del eager
    graphed = _engine(cuda_graphs=True, **common)
    graphed.continuous_decoder.narrowest = 2
    answers = [r.raw for r in graphed.extract(texts)]
    decoder = graphed.continuous_decoder if loop == "continuous" else graphed.decoder
    assert decoder.last_graph_failure is None
    assert decoder.last_graph_recorded  # the answers below came from replayed graphs, not the eager path
    assert answers == expected
    assert len({len(a) for a in answers}) > 1  # rows ended at different steps
    if loop == "continuous":  # one graph per width, recorded into one shared memory pool
        assert len(set(decoder.last_widths)) >= 3


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_graphs_record_on_a_worker_of_the_second_gpu(tmp_path: Path) -> None:
    """A worker started with --device cuda:1 records its decode step there (run E's worker on cuda:1
    failed to record and decoded eagerly), and answers as it does eagerly."""
    lora = save_lora(demo_model_path(), tmp_path / "lora", b_std=0.02, targets=ATTENTION)
    texts = [text for text, _ in HELD_OUT[:32]]
    common = {"adapter": lora, "precision": "4bit", "max_batch_size": 16, "max_new_tokens": 48,
              "decode_loop": "continuous", "device": "cuda:1"}
    try:
        expected = [r.raw for r in _engine(cuda_graphs=False, **common).extract(texts)]
        graphed = _engine(cuda_graphs=True, **common)
        assert all(p.dtype == torch.bfloat16 for n, p in graphed.model.named_parameters() if "lora_" in n)
        answers = [r.raw for r in graphed.extract(texts)]
        assert graphed.continuous_decoder.last_graph_failure is None
        assert graphed.continuous_decoder.last_graph_recorded
        assert answers == expected
    finally:
        torch.cuda.set_device(0)
