"""Each row's best-scored columns, for the candidates' ALS source (collm_udf/spark/stages/candidates.py).

numpy only: it runs inside a pandas UDF on executors, and a GPU machine's scorer has no JVM.
"""
from __future__ import annotations

import numpy as np


def best_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(n, k) column indices of each row's k highest scores of `scores` (n, c), best first (equal scores within a
    list by column); a column scored -inf is never returned: a row with fewer than k others is padded with -1."""
    n, c = scores.shape
    k = min(k, c)
    if k <= 0:
        return np.full((n, 0), -1, np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < c else np.tile(np.arange(c), (n, 1))
    got = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -got), axis=1)  # by score, then by column: the same lists on every rerun
    best = np.take_along_axis(part, order, axis=1)
    return np.where(np.take_along_axis(got, order, axis=1) == -np.inf, -1, best)


def masked_scores(user: np.ndarray, items: np.ndarray, exclude: list) -> np.ndarray:
    """(n, c) user . item scores of the factors user (n, r) and items (c, r), -inf where exclude[i] (an array of
    column indices, or None) leaves item j out for user i."""
    scores = user.astype(np.float32) @ items.T
    for i, cols in enumerate(exclude):
        if cols is not None and len(cols):
            scores[i, cols] = -np.inf
    return scores
