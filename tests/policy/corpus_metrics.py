"""Per-category precision and recall of the scanner over the labelled corpus in ``corpus/``.

Each ``corpus/*.jsonl`` line is ``{"id", "text", "labels": [category, ...]}``;
``labels`` lists every category a reviewer expects the rules to flag in the
text (empty for benign prompts, many of which are deliberate near misses).
A sample counts as a true positive for a category when any rule of that
category matches it.

    .venv/bin/python -m tests.policy.corpus_metrics     # prints the table and every miss
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import attrs

from nexus.policy.scan import Scanner

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


@attrs.frozen
class Sample:
    id: str
    text: str
    labels: frozenset[str]


@attrs.define
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    false_positives: list[str] = attrs.field(factory=list)
    false_negatives: list[str] = attrs.field(factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def load_corpus(directory: Path = CORPUS_DIR) -> list[Sample]:
    samples = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                doc = json.loads(line)
                samples.append(Sample(doc["id"], doc["text"], frozenset(doc["labels"])))
    return samples


def evaluate(scanner: Scanner, samples: Iterable[Sample]) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    for sample in samples:
        found = {m.category for m in scanner.scan(sample.text)}
        for category in found | sample.labels:
            score = scores.setdefault(category, Score())
            if category in found and category in sample.labels:
                score.tp += 1
            elif category in found:
                score.fp += 1
                score.false_positives.append(sample.id)
            else:
                score.fn += 1
                score.false_negatives.append(sample.id)
    return scores


def report(scores: dict[str, Score]) -> str:
    lines = [f"{'category':<18} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}"]
    for category in sorted(scores):
        s = scores[category]
        lines.append(f"{category:<18} {s.tp:>4} {s.fp:>4} {s.fn:>4} {s.precision:>9.3f} {s.recall:>7.3f}")
    return "\n".join(lines)


def main() -> None:
    from nexus.policy.rules import all_rules, load_packs

    samples = load_corpus()
    by_id = {s.id: s for s in samples}
    scanner = Scanner.build(all_rules(load_packs()), cache_dir=Path(".pytest_cache/d/nexus-hyperscan"))
    scores = evaluate(scanner, samples)
    print(report(scores))
    for category, score in sorted(scores.items()):
        for kind, ids in (("false positive", score.false_positives), ("missed", score.false_negatives)):
            for sample_id in ids:
                found = sorted({m.rule_id for m in scanner.scan(by_id[sample_id].text)})
                print(f"{category}: {kind} {sample_id}: {by_id[sample_id].text[:100]!r} -> {found}")


if __name__ == "__main__":
    main()
