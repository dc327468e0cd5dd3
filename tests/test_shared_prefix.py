"""The prompts' shared prefix prefilled once: the same answers, token for token, for fewer prefilled tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from devkit.assets import demo_schema_path, load_demo_examples  # noqa: E402
from models.settings import load_settings  # noqa: E402
from tests.lora import ATTENTION, save_lora  # noqa: E402
from worker.decoding import DecodeRequest, prompt_positions  # noqa: E402
from worker.hf_engine import HuggingFaceEngine  # noqa: E402
from worker.shared_prefix import MIN_SHARED_TOKENS, SharedPrefix  # noqa: E402

EXAMPLES = load_demo_examples()
TEXTS = [text for text, _ in EXAMPLES]
PAD = 0


def _request(rows: list[list[int]]) -> DecodeRequest:
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    return DecodeRequest(ids, mask, 4, 0, [99], PAD, 2)  # 2 prompts per prefill chunk


def test_arrange_moves_the_shared_tokens_to_the_front_and_keeps_every_position() -> None:
    shared = list(range(1, 11))
    rows = [shared + [50, 51, 52], shared + [60], shared + [70, 71, 72, 73, 74]]
    request = _request(rows)
    arranged = SharedPrefix(model=None).arrange(request)
    assert arranged.shared_prefix == len(shared)
    assert arranged.input_ids[:, :10].tolist() == [shared] * 3
    for before, after, mask_before, mask_after in zip(request.input_ids, arranged.input_ids,
                                                      request.attention_mask, arranged.attention_mask):
        assert after[mask_after.bool()].tolist() == before[mask_before.bool()].tolist()  # same tokens, same order
    # every real token keeps its position id; the last column (which starts decoding) is untouched
    assert (prompt_positions(arranged.attention_mask)[arranged.attention_mask.bool()].tolist()
            == prompt_positions(request.attention_mask)[request.attention_mask.bool()].tolist())
    assert arranged.input_ids[:, -1].tolist() == request.input_ids[:, -1].tolist()


def test_arrange_keeps_a_batch_that_shares_too_little() -> None:
    few = list(range(1, MIN_SHARED_TOKENS))
    request = _request([few + [50, 51], few + [60, 61, 62]])
    assert SharedPrefix(model=None).arrange(request) is request
    # a prompt that is all prefix keeps its last token out of it
    whole = list(range(1, 20))
    arranged = SharedPrefix(model=None).arrange(_request([whole, whole + [5]]))
    assert arranged.shared_prefix == len(whole) - 1


def _engine(model_dir: Path, **overrides: object) -> HuggingFaceEngine:
    settings = {"base_model": model_dir, "schema_path": demo_schema_path(), "device": "cpu", "max_new_tokens": 200}
    return HuggingFaceEngine.from_settings(load_settings(**{**settings, **overrides}))


def _prefilled_tokens(engine: HuggingFaceEngine) -> list[int]:
    """Tokens each multi-token forward pass (the prefill's) runs, recorded as the engine decodes."""
    seen: list[int] = []
    engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].numel()) if kwargs["input_ids"].shape[1] > 1
        else None, with_kwargs=True)
    return seen


@pytest.mark.parametrize("loop", ["static", "continuous"])
def test_shared_prefix_answers_exactly_as_whole_prompts_for_fewer_prefilled_tokens(demo_model, loop: str) -> None:
    whole_engine = _engine(demo_model[0], max_batch_size=4, decode_loop=loop, share_prefix=False)
    whole_tokens = _prefilled_tokens(whole_engine)
    whole = whole_engine.extract(TEXTS)
    shared_engine = _engine(demo_model[0], max_batch_size=4, decode_loop=loop)
    shared_tokens = _prefilled_tokens(shared_engine)
    shared = shared_engine.extract(TEXTS)
    decoder = shared_engine.continuous_decoder if loop == "continuous" else shared_engine.decoder
    assert decoder.last_shared_prefix > 0.5 * min(len(p.ids) for i, t in enumerate(TEXTS)
                                                  for p in shared_engine.prompts.prompts_for(i, t))
    assert sum(shared_tokens) < 0.6 * sum(whole_tokens)
    assert [r.raw for r in shared] == [r.raw for r in whole]
    assert [r.triplets for r in shared] == [gold for _, gold in EXAMPLES]


def test_four_bit_lora_with_a_shared_prefix_answers_as_without(demo_model, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    lora = save_lora(demo_model[0], tmp_path / "lora", b_std=0.02, targets=ATTENTION)  # a B that changes the keys
    common = {"precision": "4bit", "adapter": lora, "max_batch_size": 4, "max_new_tokens": 30, "min_new_tokens": 30}
    whole = _engine(demo_model[0], share_prefix=False, **common).extract(TEXTS[:8])
    for loop in ("static", "continuous"):
        shared_engine = _engine(demo_model[0], decode_loop=loop, **common)
        shared = shared_engine.extract(TEXTS[:8])
        assert [r.raw for r in shared] == [r.raw for r in whole], loop
