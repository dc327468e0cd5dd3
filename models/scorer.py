"""Evaluation of extracted triplets against gold, with DuIE 2.0's official semantics.

Per document, predicted and gold triplets are normalised and deduplicated as sets; the
correct count is the size of their intersection, summed over documents (micro-averaged).
DuIE 2.0 complex objects are scored on their "@value" slot alone (single slot), as
``models.duie`` reads gold records: the other slots (e.g. "inWork") are absent from most
predicates and from the triplet contract.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from models.errors import ParseError
from models.parser import parse_triplets
from models.triplet import Triplet
from models.validate import ground

_BOOK_TITLE = "《》"

# (subject, predicate, object) after normalize: what DuIE's official script compares.
_Key = tuple[str, str, str]


@dataclass(frozen=True)
class Example:
    """One evaluated document: its text, its gold triplets and the model's raw answer."""

    text: str
    gold: Sequence[Triplet]
    raw_output: str


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    strict_precision: float
    strict_recall: float
    strict_f1: float
    per_predicate: dict[str, dict[str, float]]
    parse_failure_rate: float
    ungrounded_rate: float
    examples: int
    predicted: int
    gold: int
    correct: int
    strict_correct: int

    def as_dict(self) -> dict:
        return asdict(self)


def normalize(value: str) -> str:
    """DuIE normalisation: lower-case, strip whitespace, strip 《 》 book-title marks."""
    return " ".join(value.split()).strip(_BOOK_TITLE).strip().lower()


def _index(triplets: Iterable[Triplet]) -> dict[_Key, tuple[Triplet, set[tuple[str, str]]]]:
    """Relaxed key -> (first triplet seen, its normalised type pairs); dedups as a set would."""
    index: dict[_Key, tuple[Triplet, set[tuple[str, str]]]] = {}
    for t in triplets:
        key = (normalize(t.subject), normalize(t.predicate), normalize(t.object))
        index.setdefault(key, (t, set()))[1].add((normalize(t.subject_type), normalize(t.object_type)))
    return index


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    if predicted == 0 and gold == 0:
        # Nothing to find and nothing claimed: a perfect answer, not an undefined one.
        return 1.0, 1.0, 1.0
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def score(examples: Iterable[Example]) -> Scores:
    n_examples = failures = ungrounded = correct = strict_correct = 0
    pred_by: Counter[str] = Counter()
    gold_by: Counter[str] = Counter()
    correct_by: Counter[str] = Counter()
    for example in examples:
        n_examples += 1
        try:
            predicted = _index(parse_triplets(example.raw_output))
        except ParseError:
            # Counted as an empty prediction, so the document's gold still weighs on recall.
            failures += 1
            predicted = {}
        gold = _index(example.gold)
        for key, (triplet, _) in predicted.items():
            pred_by[key[1]] += 1
            if ground(triplet.subject, example.text) is None or ground(triplet.object, example.text) is None:
                ungrounded += 1
        for key in gold:
            gold_by[key[1]] += 1
        for key in predicted.keys() & gold.keys():
            correct += 1
            correct_by[key[1]] += 1
            # Strict keeps relaxed denominators, so strict_correct <= correct always holds.
            if predicted[key][1] & gold[key][1]:
                strict_correct += 1
    n_pred, n_gold = sum(pred_by.values()), sum(gold_by.values())
    precision, recall, f1 = _prf(correct, n_pred, n_gold)
    strict_precision, strict_recall, strict_f1 = _prf(strict_correct, n_pred, n_gold)
    per_predicate: dict[str, dict[str, float]] = {}
    for predicate in sorted(pred_by.keys() | gold_by.keys()):
        p, r, f = _prf(correct_by[predicate], pred_by[predicate], gold_by[predicate])
        per_predicate[predicate] = {"precision": p, "recall": r, "f1": f, "support": gold_by[predicate]}
    return Scores(
        precision=precision,
        recall=recall,
        f1=f1,
        strict_precision=strict_precision,
        strict_recall=strict_recall,
        strict_f1=strict_f1,
        per_predicate=per_predicate,
        parse_failure_rate=failures / n_examples if n_examples else 0.0,
        ungrounded_rate=ungrounded / n_pred if n_pred else 0.0,
        examples=n_examples,
        predicted=n_pred,
        gold=n_gold,
        correct=correct,
        strict_correct=strict_correct,
    )
