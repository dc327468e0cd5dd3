"""The self-made tiny models (devkit.tiny): tokenizer round trip, three architectures through the worker's
loading path, the trained demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from devkit.assets import load_demo_examples, load_demo_schema  # noqa: E402
from devkit.tiny import (  # noqa: E402
    ARCHITECTURES,
    build_random_model,
    build_tokenizer,
    greedy_generate,
    pad_vocabulary,
    tokenizer_for,
    train_to_extract,
)
from models.prompt import format_answer, get_template  # noqa: E402

DEMO_EXAMPLES = load_demo_examples()
DEMO_SCHEMA = load_demo_schema()

SAMPLES = [
    "《娘家的故事第二部》是张玲执导，林在培、何赛飞等主演的电视剧",
    format_answer(DEMO_EXAMPLES[0][1]),
    "第一行\n第二行\n\n  两个空格\t制表符 and ASCII: {\"a\": [1, 2]} []",
    format_answer(()),
]


def _load(path: Path):
    """Exactly the worker's loading path."""
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
    tokenizer.padding_side = "left"
    return tokenizer, model.eval()


@pytest.fixture(scope="module", params=ARCHITECTURES)
def architecture(request):
    return request.param


@pytest.fixture(scope="module")
def tokenizer(architecture):
    """The tokenizer in the form ``architecture``'s folders load back: byte-level for qwen2."""
    return tokenizer_for(architecture, build_tokenizer(SAMPLES))


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory, tokenizer, architecture):
    return build_random_model(tmp_path_factory.mktemp(f"random-{architecture}"), tokenizer, architecture=architecture)


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_json_fragments_are_single_tokens(tokenizer):
    answer = SAMPLES[1]
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[0]) == '[{"subject":"'
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == '"}]'
    assert len(ids) < len(answer) // 2


def test_chat_template_and_special_tokens(tokenizer):
    prompt = get_template("v1").render(tokenizer, "刘德华的妻子是朱丽倩", DEMO_SCHEMA)
    assert prompt.startswith("<|user|>\n") and prompt.endswith("\n<|assistant|>\n")
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|user|>")
    assert "<|assistant|>" not in tokenizer.decode(ids, skip_special_tokens=True)
    assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True).endswith("\n")


def test_saved_tokenizer_loads_unchanged(tokenizer, random_model_dir):
    loaded, _ = _load(random_model_dir)
    assert isinstance(loaded, PreTrainedTokenizerFast) and type(loaded) is type(tokenizer)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token_id) == (
        tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    assert loaded.chat_template == tokenizer.chat_template
    for text in SAMPLES:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert loaded.decode(loaded(text)["input_ids"]) == text


def test_saved_folder_is_safetensors_only(random_model_dir):
    names = {path.name for path in Path(random_model_dir).iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))]


def test_random_model_generates_left_padded_batch(random_model_dir, architecture):
    tokenizer, model = _load(random_model_dir)
    assert model.config.model_type == architecture
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    template = get_template("v1")
    prompts = [template.render(tokenizer, text, DEMO_SCHEMA) for text in ("短句", "一个长得多的句子，包含更多的字符")]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # left padding
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        alone = model.generate(**tokenizer(prompts[:1], return_tensors="pt"), max_new_tokens=5, min_new_tokens=5,
                               do_sample=False)
    new = output[:, batch["input_ids"].shape[1]:]
    assert new.shape == (2, 5)
    # left padding is masked out: the short prompt continues as it does alone
    assert new[0].tolist() == alone[0, -5:].tolist()


def test_demo_model_memorises_every_example(demo_model):
    _, stats = demo_model
    assert stats["exact_match"] == 1.0
    assert stats["steps"] < 1500  # it stopped because it had memorised them, not at the step limit


def test_demo_model_extracts_through_worker_path(demo_model):
    path, _ = demo_model
    tokenizer, model = _load(path)
    template = get_template("v1")
    prompts = [template.render(tokenizer, text, DEMO_SCHEMA) for text, _ in DEMO_EXAMPLES]
    expected = [format_answer(triplets) for _, triplets in DEMO_EXAMPLES]
    # Batches of different sizes pad differently; the answers must not depend on that.
    assert greedy_generate(model, tokenizer, prompts, 200) == expected
    assert greedy_generate(model, tokenizer, prompts[:1], 200) == expected[:1]
    assert '"predicate":"导演","object":"张玲"' in expected[0]


def test_demo_examples_are_consistent():
    for text, triplets in DEMO_EXAMPLES:
        for triplet in triplets:
            assert triplet.subject in text and triplet.object in text
            relation = DEMO_SCHEMA.get(triplet.predicate)
            assert relation is not None
            assert (triplet.subject_type, triplet.object_type) == (relation.subject_type, relation.object_type)
    assert any(not triplets for _, triplets in DEMO_EXAMPLES)
    assert any(len(triplets) >= 3 for _, triplets in DEMO_EXAMPLES)


def test_byte_level_form_keeps_every_id_and_reads_unknown_characters_as_bytes():
    chars = build_tokenizer(SAMPLES)
    byte_level = tokenizer_for("qwen2", chars)
    assert tokenizer_for("qwen2", byte_level) is byte_level
    assert tokenizer_for("glm", chars) is tokenizer_for("llama", chars) is chars
    assert {token: byte_level.convert_tokens_to_ids(token) for token in chars.all_special_tokens} == {
        token: chars.convert_tokens_to_ids(token) for token in chars.all_special_tokens}
    for text in SAMPLES:
        assert byte_level(text)["input_ids"] == chars(text)["input_ids"]
    unknown = "齉龘"
    assert chars(unknown)["input_ids"] == [chars.unk_token_id] * 2
    ids = byte_level(unknown)["input_ids"]
    assert len(ids) == 6 and byte_level.decode(ids) == unknown


def test_a_padded_vocabulary_keeps_its_size_and_ids_in_every_architecture(tmp_path):
    for architecture in ARCHITECTURES:
        padded = pad_vocabulary(build_tokenizer(SAMPLES[:1]), 2000)
        folder = build_random_model(tmp_path / architecture, padded, architecture=architecture, hidden_size=16,
                                    num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)
        loaded, model = _load(folder)
        assert loaded.convert_tokens_to_ids("<unused_7>") == padded.convert_tokens_to_ids("<unused_7>")
        assert model.config.vocab_size == len(loaded) >= 2000


def test_a_qwen2_model_is_refused_a_character_level_tokenizer(tmp_path):
    from devkit.tiny import qwen2_config, save_model

    chars = build_tokenizer(SAMPLES)
    with pytest.raises(ValueError, match="byte-level"):
        qwen2_config(chars)
    config = qwen2_config(tokenizer_for("qwen2", chars), hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                          intermediate_size=32)
    config.vocab_size = len(chars)
    # What a hand-made folder would hold: transformers would load its tokenizer as Qwen2Tokenizer.
    with pytest.raises(ValueError, match=r"Qwen2Tokenizer, which tokenizes differently.*tokenizer_for\('qwen2'"):
        save_model(AutoModelForCausalLM.from_config(config), chars, tmp_path / "wrong")


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_every_architecture_memorises_examples(tmp_path, architecture):
    examples = DEMO_EXAMPLES[:3]
    stats = train_to_extract(tmp_path / architecture, examples, DEMO_SCHEMA, architecture=architecture,
                             hidden_size=64, intermediate_size=128, check_every=10)
    assert stats["exact_match"] == 1.0 and stats["architecture"] == architecture
    tokenizer, model = _load(tmp_path / architecture)
    assert model.config.model_type == architecture
    prompts = [get_template("v1").render(tokenizer, text, DEMO_SCHEMA) for text, _ in examples]
    assert greedy_generate(model, tokenizer, prompts, 200) == [format_answer(triplets) for _, triplets in examples]
