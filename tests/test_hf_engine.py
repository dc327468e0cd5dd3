"""The Hugging Face engine on the CPU with the tiny demo GLM: fp32, 4-bit NF4, LoRA, limits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from devkit.assets import demo_model_path, demo_schema_path, load_demo_examples  # noqa: E402
from models.errors import ConfigError  # noqa: E402
from models.duie import parse_record  # noqa: E402
from models.settings import load_settings  # noqa: E402
from tests.lora import ATTENTION, save_lora  # noqa: E402
from models.windows import Window  # noqa: E402
from worker.batching import Prompt  # noqa: E402
from worker.continuous_decode import ContinuousDecoder  # noqa: E402
from worker.hf_engine import HuggingFaceEngine  # noqa: E402
from worker.static_decode import StaticDecoder  # noqa: E402

EXAMPLES = load_demo_examples()


def make_engine(model_dir: Path, **overrides: object) -> HuggingFaceEngine:
    settings = load_settings(
        **{"base_model": model_dir, "schema_path": demo_schema_path(), "device": "cpu", "max_new_tokens": 200, **overrides}
    )
    return HuggingFaceEngine.from_settings(settings)


def test_batched_extraction_matches_gold(demo_model) -> None:
    engine = make_engine(demo_model[0], max_batch_size=5)
    results = engine.extract([text for text, _ in EXAMPLES])
    assert [r.error for r in results] == [None] * len(EXAMPLES)
    assert [r.triplets for r in results] == [gold for _, gold in EXAMPLES]
    assert engine.prompt_version == "v1" and engine.adapter_id == ""


def test_long_document_is_read_in_windows_with_offsets(demo_model) -> None:
    engine = make_engine(demo_model[0])
    sentences = [text for text, _ in EXAMPLES[:4]]
    document = "。".join(sentences) + "。"
    # a budget that holds one sentence's prompt but not two
    engine = engine.with_config(max_input_tokens=max(len(engine.prompts.encode(s + "。")) for s in sentences) + 1)
    assert len(engine.prompts.prompts_for(0, document)) == 4
    (result,) = engine.extract([document])
    assert result.ok, result.error
    # the demo model memorised sentences without the trailing 。, so not every window answers
    # exactly; what it keeps is grounded, and its offsets point into the whole document
    gold = {t for _, triplets in EXAMPLES[:4] for t in triplets}
    assert len(set(result.triplets) & gold) >= 3
    assert all("not in the text" in r.reason or "not in schema" in r.reason for r in result.rejected)
    for triplet, (subject_span, object_span) in zip(result.triplets, result.spans or []):
        assert document[subject_span.start : subject_span.end] == triplet.subject
        assert document[object_span.start : object_span.end] == triplet.object
    assert result.spans[-1][1].start > len(sentences[0])  # offsets point into later windows


def test_prompt_template_over_budget_fails_the_document_alone(demo_model) -> None:
    engine = make_engine(demo_model[0], max_input_tokens=50)
    (result,) = engine.extract(["刘德华的妻子是朱丽倩"])
    assert result.error is not None and "prompt template alone exceeds TRIPLETS_MAX_INPUT_TOKENS=50" in result.error


def test_batches_bounded_by_count_and_kv_tokens(demo_model) -> None:
    engine = make_engine(demo_model[0], max_batch_size=3, max_batch_tokens=70, max_new_tokens=10)
    prompts = [Prompt(i, Window(0, ""), [0] * n) for i, n in enumerate([10, 40, 11, 12, 13, 30])]
    batches = engine.plan(prompts)
    assert [[len(p.ids) for p in batch] for batch in batches] == [[10, 11, 12], [13], [30], [40]]
    assert all(len(b) <= 3 and (max(len(p.ids) for p in b) + 10) * len(b) <= 70 for b in batches[:2])


def test_out_of_memory_splits_the_batch_and_loses_nothing(demo_model, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(demo_model[0], max_batch_size=8, decode_loop="static")
    real_decode = engine.decoder.decode
    attempted: list[int] = []

    def decode_fitting_two(request):  # type: ignore[no-untyped-def]
        attempted.append(request.input_ids.shape[0])
        if request.input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_decode(request)

    monkeypatch.setattr(engine.decoder, "decode", decode_fitting_two)
    texts = [text for text, _ in EXAMPLES[:8]]
    results = engine.extract(texts)
    assert attempted[0] == 8 and max(attempted[1:]) <= 4
    assert [r.triplets for r in results] == [gold for _, gold in EXAMPLES[:8]]


def test_single_document_out_of_memory_is_failed_with_reason(demo_model, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(demo_model[0], decode_loop="static")

    def always_oom(request):  # type: ignore[no-untyped-def]
        raise torch.cuda.OutOfMemoryError("injected")

    monkeypatch.setattr(engine.decoder, "decode", always_oom)
    results = engine.extract(["刘德华的妻子是朱丽倩", "《三体》是刘慈欣创作的长篇科幻小说"])
    assert all(r.error and r.error.startswith("out of GPU memory on a single prompt") for r in results)


def test_out_of_memory_in_a_continuous_batch_falls_back_to_splitting_batches(
        demo_model, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(demo_model[0], max_batch_size=8)  # the default loop: continuous
    assert engine.continuous
    streamed: list[int] = []
    attempted: list[int] = []
    real_decode = StaticDecoder.decode

    def stream_out_of_memory(self, source, **arguments):  # type: ignore[no-untyped-def]
        streamed.append(arguments["rows"])
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        yield  # (a generator, as the real one)

    def decode_fitting_two(self, request):  # type: ignore[no-untyped-def]
        attempted.append(request.input_ids.shape[0])
        if request.input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_decode(self, request)

    monkeypatch.setattr(ContinuousDecoder, "stream", stream_out_of_memory)
    monkeypatch.setattr(StaticDecoder, "decode", decode_fitting_two)
    results = engine.extract([text for text, _ in EXAMPLES[:8]])
    assert streamed == [8] and attempted[0] == 8 and max(attempted[1:]) <= 4
    assert [r.triplets for r in results] == [gold for _, gold in EXAMPLES[:8]]


def test_four_bit_nf4_path_finds_the_gold_triplets_on_cpu() -> None:
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    held_out = [parse_record(json.loads(line)) for line in
                (demo_model_path() / "heldout.jsonl").read_text(encoding="utf-8").splitlines()[:6]]
    engine = HuggingFaceEngine.from_settings(load_settings(base_model=demo_model_path(), device="cpu",
                                                           precision="4bit", max_new_tokens=128))
    quantized = [m for m in engine.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and quantized[0].weight.quant_type == "nf4"
    results = engine.extract([text for text, _ in held_out])
    assert [set(r.triplets) for r in results] == [set(gold) for _, gold in held_out]


@pytest.mark.parametrize("precision", ["fp32", "4bit"])
def test_lora_adapter_is_applied(demo_model, tmp_path: Path, precision: str) -> None:
    if precision == "4bit":
        pytest.importorskip("bitsandbytes")
    texts = [text for text, _ in EXAMPLES[:4]]
    plain = make_engine(demo_model[0], precision=precision).extract(texts)
    zero = save_lora(demo_model[0], tmp_path / "zero", b_std=0.0)
    changing = save_lora(demo_model[0], tmp_path / "changing", b_std=0.5)
    engine = make_engine(demo_model[0], adapter=changing, precision=precision)
    assert engine.adapter_id == str(changing)
    lora_layers = [name for name, _ in engine.model.named_modules() if "lora_A" in name]
    # merged into the weights in full precision; kept as separate LoRA layers over a 4-bit base
    assert bool(lora_layers) == (precision == "4bit")
    assert [r.raw for r in engine.extract(texts)] != [r.raw for r in plain]
    # B = 0 adds nothing: the same answers as the base model, so the change above is the adapter's
    unchanged = make_engine(demo_model[0], adapter=zero, precision=precision).extract(texts)
    assert [r.raw for r in unchanged] == [r.raw for r in plain]


def test_only_safetensors_weights_are_loaded(demo_model, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(demo_model[0], folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"has no \*.safetensors weights \(pytorch_model.bin are pickles"):
        make_engine(folder)


def test_missing_model_folder_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRIPLETS_BASE_MODEL: .* is not a folder"):
        make_engine(tmp_path / "nowhere")


def prefill_batches(engine: HuggingFaceEngine) -> list[int]:
    """Rows of each forward pass over more than one token (the prefill), recorded from the model itself."""
    seen: list[int] = []
    engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].shape[0]) if kwargs["input_ids"].shape[1] > 1
        else None, with_kwargs=True)
    return seen


@pytest.mark.parametrize("loop", ["generate", "static"])
def test_chunked_prefill_gives_the_same_answers(demo_model, loop: str) -> None:
    texts = [text for text, _ in EXAMPLES]
    whole = make_engine(demo_model[0], max_batch_size=12, prefill_chunk_tokens=0, decode_loop=loop).extract(texts)
    chunked_engine = make_engine(demo_model[0], max_batch_size=12, prefill_chunk_tokens=1, decode_loop=loop)
    prefills = prefill_batches(chunked_engine)
    chunked = chunked_engine.extract(texts)
    assert prefills[:12] == [1] * 12  # one prompt at a time
    assert [r.raw for r in chunked] == [r.raw for r in whole]
    assert [r.triplets for r in chunked] == [gold for _, gold in EXAMPLES]


def test_static_cache_decoding_answers_exactly_as_generate(demo_model) -> None:
    texts = [text for text, _ in EXAMPLES]  # different lengths: left padding; answers end early
    generated = make_engine(demo_model[0], max_batch_size=5, decode_loop="generate").extract(texts)
    static_engine = make_engine(demo_model[0], max_batch_size=5, decode_loop="static")
    static = static_engine.extract(texts)
    assert [r.raw for r in static] == [r.raw for r in generated]
    assert [r.triplets for r in static] == [gold for _, gold in EXAMPLES]
    # a batch of the same shape is decoded again into the cache the last one left: no stale slot leaks
    batch = static_engine.plan([p for i, t in enumerate(texts) for p in static_engine.prompts.prompts_for(i, t)])[-1]
    again = static_engine.decode(batch)
    assert [output.raw for output in again] == [static[prompt.doc].raw for prompt in batch]


def test_static_decoding_of_a_4bit_lora_model_matches_generate(demo_model, tmp_path: Path) -> None:
    """The path GPU workers run (4-bit NF4 + LoRA over the in-place cache), on the CPU."""
    pytest.importorskip("bitsandbytes")
    lora = save_lora(demo_model[0], tmp_path / "lora", b_std=0.02, targets=ATTENTION)  # a B that changes answers
    texts = [text for text, _ in EXAMPLES[:6]]
    common = {"adapter": lora, "precision": "4bit", "max_batch_size": 3, "max_new_tokens": 24,
              "min_new_tokens": 24}
    generated = make_engine(demo_model[0], decode_loop="generate", **common).extract(texts)
    static_engine = make_engine(demo_model[0], decode_loop="static", **common)
    static = static_engine.extract(texts)
    assert [r.raw for r in static] == [r.raw for r in generated]
    assert all(len(static_engine.tokenizer(r.raw)["input_ids"]) >= 20 for r in static)  # min_new_tokens held


def test_kv_budget_of_a_chatglm3_shape_fits_the_measured_batch() -> None:
    from types import SimpleNamespace

    from models.errors import ConfigError
    from worker.batching import kv_token_budget

    chatglm3 = SimpleNamespace(num_attention_heads=32, num_key_value_heads=2, head_dim=128, hidden_size=4096,
                               num_hidden_layers=28)
    four_bit_weights = int(3.9 * 2**30)
    budget = kv_token_budget(chatglm3, four_bit_weights, 20.0)
    # measured on an H100: 1024 prompts of 305 tokens + 128 new peaked at 17.0 GiB
    assert 1024 * (305 + 128) <= budget < 1400 * (305 + 128)
    assert kv_token_budget(chatglm3, four_bit_weights, 40.0) > 2 * budget
    with pytest.raises(ConfigError, match="TRIPLETS_GPU_MEMORY_BUDGET_GIB"):
        kv_token_budget(chatglm3, four_bit_weights, 4.0)


def test_an_inference_adapter_is_cast_to_the_compute_dtype_and_still_applied(demo_model, tmp_path: Path) -> None:
    from worker.loader import attach_adapter, load_model

    lora = save_lora(demo_model[0], tmp_path / "lora", b_std=0.02, targets=ATTENTION)
    tokenizer, base = load_model(demo_model[0], device="cpu", precision="bf16")
    ids = tokenizer("《娘家的故事第二部》是张玲执导", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        plain = base(input_ids=ids).logits.float()
    model = attach_adapter(base, lora, merge=False, dtype=torch.bfloat16)
    lora_weights = {name: p.dtype for name, p in model.named_parameters() if "lora_" in name}
    assert lora_weights and set(lora_weights.values()) == {torch.bfloat16}
    with torch.inference_mode():
        adapted = model(input_ids=ids).logits
    assert (adapted.float() - plain).abs().max() > 0.01  # the adapter still changes the answer
