"""core.topk against a full sort: the candidates' ALS search (collm_udf/spark/stages/candidates.py)."""
from __future__ import annotations

import numpy as np

from collm_udf.core.topk import best_k, masked_scores


def test_best_k_is_each_rows_sorted_head_without_the_masked_columns():
    rng = np.random.default_rng(0)
    user, items = rng.normal(size=(40, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    # row i leaves out its first i columns of a shuffled order: row 29 keeps one, rows >= 30 none
    exclude = [rng.permutation(30)[:i] for i in range(40)]
    scores = masked_scores(user, items, exclude)
    for k in (1, 5, 30, 50):
        got = best_k(scores, k)
        assert got.shape == (40, min(k, 30))
        for i in range(40):
            allowed = [j for j in np.argsort(-(user[i] @ items.T), kind="stable") if j not in set(exclude[i])]
            want = allowed[:k] + [-1] * (min(k, 30) - len(allowed[:k]))
            assert got[i].tolist() == want, (i, k)


def test_best_k_orders_equal_scores_by_column():
    s = np.array([[1.0, 3.0, 3.0, 0.0, -np.inf]], np.float32)
    assert best_k(s, 3).tolist() == [[1, 2, 0]]
    assert best_k(s, 5).tolist() == [[1, 2, 0, 3, -1]]
