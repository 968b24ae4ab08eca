"""Lexical answer quality: ROUGE-L (longest common subsequence of words), F1 form.

Implemented here instead of taken from a package: the two usual ones either pull in large
dependencies (NLTK, absl) for one dynamic programme, or use a non-standard weighting of
precision and recall and fail on empty text. This is sentence-level ROUGE-L with beta = 1 on
lower-cased word tokens, the form most streaming-video papers report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Lower-cased words and numbers; punctuation is dropped."""
    return _TOKEN_RE.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for item in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if item == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class RougeL:
    precision: float
    recall: float
    f1: float


def rouge_l(prediction: str, reference: str) -> RougeL:
    """ROUGE-L of ``prediction`` against ``reference``; 0 when either has no words."""
    predicted, expected = tokens(prediction), tokens(reference)
    if not predicted or not expected:
        return RougeL(0.0, 0.0, 0.0)
    common = lcs_length(predicted, expected)
    if common == 0:
        return RougeL(0.0, 0.0, 0.0)
    precision, recall = common / len(predicted), common / len(expected)
    return RougeL(precision, recall, 2 * precision * recall / (precision + recall))


def exact_match(prediction: str, reference: str) -> bool:
    """Same words in the same order, ignoring case and punctuation."""
    return tokens(prediction) == tokens(reference)
