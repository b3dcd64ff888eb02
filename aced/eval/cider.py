"""CIDEr-D (Vedantam et al., CVPR 2015), as the COCO caption evaluation computes it.

For each n = 1..4, a sentence is the vector of its n-gram counts weighted by
``log(N) - log(max(1, df(g)))``: ``N`` images in the corpus, ``df(g)`` the
number of images among whose references the n-gram ``g`` appears. A
candidate's score against one reference, for one n, is

    sum_g min(c_g, r_g) r_g / (|c| |r|) * exp(-(l_c - l_r)^2 / (2 sigma^2))

(CIDEr-D's clipping and Gaussian length penalty, sigma = 6); its score is
10 times the mean over n, averaged over its references; the corpus's score
is the mean over images. Two details follow ``pycocoevalcap``'s
``cider_scorer.py`` exactly, so that numbers compare with published ones:
the length ``l`` of a sentence is its number of *bigrams* (the reference
code's quirk), and a norm of zero leaves the dot product unnormalised (it is
then zero). Sentences are compared as given, split on white space (COCO first
runs the PTB tokenizer; aced's captions are already lower-case words).
"""

import math
from collections import Counter
from collections.abc import Sequence

N = 4
SIGMA = 6.0


def ngrams(sentence: str, n: int = N) -> Counter:
    """Counts of the 1..n-grams of a sentence split on white space."""
    words = sentence.split()
    return Counter(
        tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)
    )


def _vector(counts: Counter, df: Counter, log_n: float) -> tuple[list[dict], list[float], int]:
    vec: list[dict] = [{} for _ in range(N)]
    norm = [0.0] * N
    length = 0
    for gram, tf in counts.items():
        k = len(gram) - 1
        vec[k][gram] = tf * (log_n - math.log(max(1.0, df[gram])))
        norm[k] += vec[k][gram] ** 2
        if k == 1:
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def _similarity(cand, ref) -> float:
    (vc, nc, lc), (vr, nr, lr) = cand, ref
    penalty = math.exp(-((lc - lr) ** 2) / (2 * SIGMA**2))
    total = 0.0
    for k in range(N):
        dot = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vc[k].items())
        if nc[k] != 0 and nr[k] != 0:
            dot /= nc[k] * nr[k]
        total += dot * penalty
    return total / N


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """CIDEr-D of each candidate against its references; the corpus score is their mean.

    **Arguments:**

    - `candidates`: one generated sentence per image.
    - `references`: the reference sentences of each image (at least one).

    **Returns:** one score per image (0 for no shared n-gram; 10 at most for
    a candidate equal to its only reference when the corpus has more than one
    image).
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} reference sets")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every image needs at least one reference sentence")
    ref_counts = [[ngrams(r) for r in refs] for refs in references]
    df = Counter(g for counts in ref_counts for g in set().union(*counts))
    log_n = math.log(float(len(candidates)))
    scores = []
    for cand, refs in zip(candidates, ref_counts):
        c = _vector(ngrams(cand), df, log_n)
        sims = [_similarity(c, _vector(r, df, log_n)) for r in refs]
        scores.append(10.0 * sum(sims) / len(sims))
    return scores
