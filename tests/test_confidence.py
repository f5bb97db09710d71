"""Per-user ranking figures and the replay's paired-bootstrap confidence intervals, against references."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import recall_ndcg


def test_each_users_figures_equal_the_reference_and_their_mean_mllibs(spark):
    from pyspark.ml.evaluation import RankingEvaluator

    from collm_udf.spark.backtest import user_figures

    truth = {"a": {1.0, 2.0, 3.0}, "b": {4.0}, "c": {5.0, 6.0}}
    lists = {"a": [9.0, 2.0, 8.0, 1.0], "b": [4.0], "c": []}  # c: a truth user without a list
    k = 3
    frame = spark.createDataFrame([("t", u, sorted(truth[u]), lists[u], u != "c") for u in truth],
                                  "ranker string, user_id string, truth array<double>, pred array<double>, "
                                  "served boolean")
    got = user_figures(frame, k).toPandas().set_index("user_id")
    for u in truth:
        rec, ndcg = recall_ndcg({u: lists[u]}, {u: truth[u]}, k)
        assert got.loc[u, "recall"] == pytest.approx(rec) and got.loc[u, "ndcg"] == pytest.approx(ndcg)
    for metric, mllib in (("recall", "recallAtK"), ("ndcg", "ndcgAtK")):
        ev = RankingEvaluator(predictionCol="pred", labelCol="truth", metricName=mllib, k=k)
        assert got[metric].mean() == pytest.approx(ev.evaluate(frame))
    assert got.loc["a", "ndcg"] not in (0.0, 1.0)  # a hit at rank 2 of 3: the reference is not trivially met


def test_confidence_intervals_pool_days_as_the_mean_of_their_means():
    from collm_udf.spark.replay import confidence

    rng = np.random.default_rng(0)
    rows = []
    for ds, n in (("d1", 30), ("d2", 90)):  # days of unequal size: weights 1/n make the mean of day means
        for u in range(n):
            base = rng.random() * (2.0 if ds == "d1" else 1.0)
            rows += [{"ds": ds, "user_id": str(u), "ranker": "collm", "ndcg": base, "recall": base},
                     {"ds": ds, "user_id": str(u), "ranker": "popularity", "ndcg": base / 2, "recall": base},
                     {"ds": ds, "user_id": str(u), "ranker": "als", "ndcg": 0.0, "recall": 0.0}]
    ci = confidence(rows, "collm")
    assert ci["units"] == 120
    day_means = {ds: np.mean([r["ndcg"] for r in rows if r["ds"] == ds and r["ranker"] == "collm"])
                 for ds in ("d1", "d2")}
    est, lo, hi = ci["rankers"]["collm"]["ndcg"]
    assert est == pytest.approx(np.mean(list(day_means.values()))) and lo < est < hi
    # paired: the same users in both rankers, so an exact ratio has no spread at all
    assert ci["ratios"]["popularity"]["ndcg"] == pytest.approx([2.0, 2.0, 2.0])
    assert ci["ratios"]["popularity"]["recall"] == pytest.approx([1.0, 1.0, 1.0])
    assert ci["best_baseline"] == {"ndcg": "popularity", "recall": "popularity"}
    est, lo, hi = ci["ratios"]["als"]["ndcg"]  # over a ranker that never hits: unbounded, said as None
    assert est is None and lo is None and hi is None
