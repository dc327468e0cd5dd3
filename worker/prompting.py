"""Documents to prompts: the template rendered and tokenized, long documents cut into sentence windows."""

from __future__ import annotations

import logging
from typing import Any

from models.errors import DocumentTooLongError
from models.prompt import PromptTemplate
from models.schema import PredicateSchema
from models.windows import Window, make_windows
from worker.batching import Prompt

log = logging.getLogger(__name__)


class PromptBuilder:
    def __init__(self, tokenizer: Any, template: PromptTemplate, schema: PredicateSchema, *,
                 max_input_tokens: int, max_document_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.schema = schema
        self.max_input_tokens = max_input_tokens
        self.max_document_tokens = max_document_tokens
        # A chat template already carries its special tokens.
        self._add_special = not getattr(tokenizer, "chat_template", None)

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``'s prompt."""
        rendered = self.template.render(self.tokenizer, text, self.schema)
        return self.tokenizer(rendered, add_special_tokens=self._add_special)["input_ids"]

    def prompts_for(self, doc: int, text: str) -> list[Prompt]:
        """The document as one prompt, or as sentence windows when it is over the input budget.

        Raises DocumentTooLongError for a document over the document budget (its windows would
        fill batches, and on the CPU memory, for its neighbours' time) or one whose template
        alone is over the input budget.
        """
        limit = self.max_input_tokens
        ids = self.encode(text)
        if len(ids) > self.max_document_tokens:
            raise DocumentTooLongError(
                f"document of {len(ids)} tokens exceeds TRIPLETS_MAX_DOCUMENT_TOKENS={self.max_document_tokens}")
        if len(ids) <= limit:
            return [Prompt(doc, Window(0, text), ids)]
        encoded: dict[str, list[int]] = {}

        def fits(piece: str) -> bool:
            if piece not in encoded:
                encoded[piece] = self.encode(piece)
            return len(encoded[piece]) <= limit

        if not fits(text[:1]):
            raise DocumentTooLongError(
                f"the prompt template alone exceeds TRIPLETS_MAX_INPUT_TOKENS={limit} ({len(encoded[text[:1]])} tokens)")
        windows = make_windows(text, fits)
        log.info("document of %d tokens read in %d windows", len(ids), len(windows))
        return [Prompt(doc, window, encoded.get(window.text) or self.encode(window.text)) for window in windows]
