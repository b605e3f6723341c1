"""Detection quality over the labelled corpus (realistic prompts and deliberate near misses).

The floors are the project's targets for personal data and secrets (0.95
precision and recall) and a looser 0.9 for the other categories, whose corpus
slices are small.  ``python -m tests.policy.corpus_metrics`` prints the table
and every miss.
"""

from __future__ import annotations

from collections import Counter

import pytest

from nexus.policy.scan import Scanner
from tests.policy.corpus_metrics import Sample, evaluate, load_corpus, report

FLOORS = {"pii": 0.95, "secret-leak": 0.95}
DEFAULT_FLOOR = 0.9


@pytest.fixture(scope="module")
def corpus() -> list[Sample]:
    return load_corpus()


def test_corpus_is_broad(corpus: list[Sample]) -> None:
    labels = Counter(label for s in corpus for label in s.labels)
    assert len(corpus) >= 400
    assert labels["pii"] >= 80 and labels["secret-leak"] >= 80
    assert sum(1 for s in corpus if not s.labels) >= 150  # benign prompts and near misses
    assert len({s.id for s in corpus}) == len(corpus)


def test_precision_and_recall_floors(scanner: Scanner, corpus: list[Sample]) -> None:
    scores = evaluate(scanner, corpus)
    table = report(scores)
    for category, score in scores.items():
        floor = FLOORS.get(category, DEFAULT_FLOOR)
        assert score.precision >= floor, f"{category} precision\n{table}\nfalse positives: {score.false_positives}"
        assert score.recall >= floor, f"{category} recall\n{table}\nmissed: {score.false_negatives}"
    assert set(FLOORS) <= set(scores)
