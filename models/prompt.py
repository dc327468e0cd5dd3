"""The prompt: one template shared by extraction and training, versioned.

Every stored triplet records the version that produced it, so a template change
means a new entry in ``TEMPLATES``, never an edit of an old one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from models.errors import ConfigError
from models.schema import PredicateSchema
from models.triplet import Triplet


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    instruction: str
    schema_line: str
    text_line: str
    answer_cue: str

    def user_message(self, text: str, schema: PredicateSchema) -> str:
        relations = "，".join(
            f"{r.predicate}({r.subject_type}→{r.object_type})" for r in schema.relations
        )
        return "\n".join(
            (self.instruction, self.schema_line.format(relations=relations), self.text_line.format(text=text))
        )

    def messages(self, text: str, schema: PredicateSchema) -> list[dict[str, str]]:
        """Chat messages for tokenizers that have a chat template."""
        return [{"role": "user", "content": self.user_message(text, schema)}]

    def plain(self, text: str, schema: PredicateSchema) -> str:
        """The prompt for tokenizers without a chat template."""
        return self.user_message(text, schema) + "\n" + self.answer_cue

    def render(self, tokenizer: Any, text: str, schema: PredicateSchema) -> str:
        """The exact prompt string the model sees, for training and extraction alike.

        ``tokenizer`` is duck-typed (a Hugging Face tokenizer) so this module stays torch-free.
        """
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                self.messages(text, schema), tokenize=False, add_generation_prompt=True
            )
        return self.plain(text, schema)


TEMPLATES: dict[str, PromptTemplate] = {
    "v1": PromptTemplate(
        version="v1",
        instruction="从文本中抽取知识三元组，以JSON列表输出，每项含subject、subject_type、predicate、object、object_type；没有则输出[]。",
        schema_line="可用关系：{relations}",
        text_line="文本：{text}",
        answer_cue="答案：",
    ),
}


def get_template(version: str) -> PromptTemplate:
    try:
        return TEMPLATES[version]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise ConfigError(f"TRIPLETS_PROMPT_VERSION: unknown prompt version {version!r} (known: {known})") from None


def format_answer(triplets: Iterable[Triplet]) -> str:
    """The target text a model is trained to produce; the parser reads it back."""
    return json.dumps([t.as_dict() for t in triplets], ensure_ascii=False, separators=(",", ":"))
