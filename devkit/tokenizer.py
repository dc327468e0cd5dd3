"""The tiny models' tokenizer: one token per character, plus the fixed pieces of the answer JSON.

Two forms of the same tokenizer (same ids, same tokens for every NFC text):

* character-level (``build_tokenizer``): a WordLevel model over single characters, loaded back
  as ``TokenizersBackend`` for GLM and Llama folders;
* byte-level (``byte_level_tokenizer``), for Qwen2. transformers 5.17 and 5.24 (unlike 5.0)
  load a "qwen2" folder's tokenizer as ``Qwen2Tokenizer`` whatever ``tokenizer_config.json``
  names ("qwen2" is in ``MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS``), and that class rebuilds
  its own pipeline (NFC, byte-level pre-tokenizer, BPE, byte-level decoder) from the file's
  vocabulary and merges, dropping ours. So the tokenizer is expressed in that pipeline: each
  character is the merge of its UTF-8 bytes, and whichever class loads it tokenizes the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# The fixed pieces of format_answer's compact JSON, one token each, so answers are short.
JSON_FRAGMENTS = (
    '[{"subject":"',
    '","subject_type":"',
    '","predicate":"',
    '","object":"',
    '","object_type":"',
    '"},{"subject":"',
    '"}]',
    "[]",
)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
MAX_POSITIONS = 4096
BYTE_LEVEL_ARCHITECTURES = ("qwen2",)


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per character (ASCII + every character of ``texts``) plus the JSON fragments."""
    vocab: dict[str, int] = {}
    for token in (PAD, UNK, EOS, *ROLE_TOKENS):
        vocab[token] = len(vocab)
    for text in ("\n\t" + "".join(chr(code) for code in range(32, 127)), *texts):
        for char in text:
            vocab.setdefault(char, len(vocab))
    for fragment in JSON_FRAGMENTS:
        vocab.setdefault(fragment, len(vocab))

    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # No normalizer: NFKC would turn the full-width "，" of Chinese text into ",".
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, UNK, EOS, *ROLE_TOKENS)])
    # Added tokens are matched (leftmost-longest) before pre-tokenization, so fragments stay whole.
    backend.add_tokens([AddedToken(t, normalized=False) for t in JSON_FRAGMENTS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        additional_special_tokens=list(ROLE_TOKENS),
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_POSITIONS,
    )
    return _finish(tokenizer)


def pad_vocabulary(tokenizer: Any, size: int) -> Any:
    """Fill the vocabulary with unused tokens up to ``size``, as real 60k+ vocabularies are."""
    missing = size - len(tokenizer)
    if missing > 0:
        tokenizer.add_tokens([AddedToken(f"<unused_{i}>", normalized=False) for i in range(missing)])
    return tokenizer


def is_byte_level(tokenizer: Any) -> bool:
    return isinstance(tokenizer, Qwen2Tokenizer)


def tokenizer_for(architecture: str, tokenizer: Any) -> Any:
    """``tokenizer`` in the form a folder of ``architecture`` loads back unchanged."""
    if architecture in BYTE_LEVEL_ARCHITECTURES and not is_byte_level(tokenizer):
        return byte_level_tokenizer(tokenizer)
    return tokenizer


def byte_level_tokenizer(tokenizer: Any) -> Qwen2Tokenizer:
    """``tokenizer`` (character-level) as a byte-level BPE: every token keeps its id and every NFC text its tokens.

    The 256 byte symbols and the partial merges of multi-byte characters get ids after the last
    one, so a character outside the vocabulary is read as its bytes rather than as <unk>.
    """
    added = {token.content: token for token in tokenizer.added_tokens_decoder.values()}
    vocab, merges = _byte_level_vocabulary(tokenizer.get_vocab(), set(added))
    special = [t for t in tokenizer.all_special_tokens if t not in (tokenizer.pad_token, tokenizer.unk_token,
                                                                       tokenizer.eos_token)]
    converted = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=tokenizer.unk_token, eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token, bos_token=None, additional_special_tokens=special,
        clean_up_tokenization_spaces=False, model_max_length=tokenizer.model_max_length,
    )
    # Added tokens are in the vocabulary under their own text, so they keep their ids.
    converted.add_tokens([AddedToken(t.content, normalized=False) for t in added.values() if not t.special])
    return _finish(converted)


def _byte_level_vocabulary(char_vocab: dict[str, int], added: set[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    symbol = bytes_to_unicode()
    vocab: dict[str, int] = {}
    merges: dict[tuple[str, str], None] = {}
    partial: list[str] = []
    for token, index in sorted(char_vocab.items(), key=lambda item: item[1]):
        if token in added:
            vocab[token] = index
            continue
        if len(token) != 1:
            raise ValueError(f"not a character-level tokenizer: token {token!r}")
        pieces = [symbol[byte] for byte in token.encode("utf-8")]
        vocab["".join(pieces)] = index
        # Merged left to right: a character's bytes never merge with a neighbour's, since a
        # merge's right side is always a continuation byte.
        prefix = pieces[0]
        for piece in pieces[1:]:
            merges[(prefix, piece)] = None
            partial.append(prefix)
            prefix += piece
    next_id = max(char_vocab.values()) + 1
    for token in [*symbol.values(), *partial]:
        if token not in vocab:
            vocab[token], next_id = next_id, next_id + 1
    return vocab, list(merges)


def _finish(tokenizer: Any) -> Any:
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer
