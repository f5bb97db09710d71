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
    assert "shadow_over_table" not in ci
    # the model the gate passed over (evaluate.shadow), on d2 only: its ratio to the table counts d2's users only
    shadow = [{"ds": "d2", "user_id": r["user_id"], "ranker": "shadow", "ndcg": 3 * r["ndcg"], "recall": r["recall"]}
              for r in rows if r["ds"] == "d2" and r["ranker"] == "collm"]
    ci = confidence(rows + shadow, "collm")
    assert ci["shadow_over_table"]["ndcg"] == pytest.approx([3.0, 3.0, 3.0])
    assert ci["shadow_over_table"]["recall"] == pytest.approx([1.0, 1.0, 1.0])


def test_segment_figures_and_cold_exposure_equal_a_pandas_reference(spark):
    """Every ranker's Recall/NDCG@k over the truth restricted to cold items, to warm items, and over the truth
    users without ALS factors, and its lists' cold items, against pandas on a small random day."""
    import pandas as pd

    from collm_udf.spark.backtest import Backtest, Segments, evaluate_lists

    rng = np.random.default_rng(3)
    users, items, k, min_items = [f"u{i}" for i in range(14)], [f"i{j}" for j in range(30)], 4, 6
    known = pd.DataFrame([(u, it, 0) for u in users for it in rng.choice(items[:20], 8, replace=False).tolist()],
                         columns=["user_id", "item_id", "ts"])  # i20..i29 never seen: cold with count 0
    counts = known.item_id.value_counts()
    cold_items = {it for it in items if counts.get(it, 0) < min_items}
    truth = {u: set(rng.choice(items, int(rng.integers(1, 6)), replace=False).tolist()) for u in users[:12]}
    served = users[:10]  # u10, u11: truth users without a list from anyone
    lists = {name: {u: rng.choice(items, k + 2, replace=False).tolist() for u in served} for name in ("a", "b")}
    factors = users[::2]  # odd users have no ALS factors
    bt = Backtest(spark.createDataFrame([(u, sorted(t)) for u, t in truth.items()],
                                        "user_id string, truth array<string>"),
                  spark.createDataFrame([(u,) for u in served], "user_id string"),
                  spark.createDataFrame(known))
    frames = {name: spark.createDataFrame([(u, it, r + 1) for u, lst in got.items() for r, it in enumerate(lst)],
                                          "user_id string, item_id string, rank int") for name, got in lists.items()}
    segs = Segments.of(bt, min_items, spark.createDataFrame([(u,) for u in factors], "user_id string"))
    out = evaluate_lists(bt, frames, k, segments=segs)

    reference_truth = {
        "cold_item": {u: t & cold_items for u, t in truth.items() if t & cold_items},
        "warm_item": {u: t - cold_items for u, t in truth.items() if t - cold_items},
        "no_factors": {u: t for u, t in truth.items() if u not in factors}}
    assert all(0 < len(t) < len(truth) for t in reference_truth.values())  # every segment is a real subset
    for name, got in lists.items():
        r = out[name]
        assert (r[f"recall@{k}"], r[f"ndcg@{k}"]) == pytest.approx(recall_ndcg(got, truth, k))
        for seg, t in reference_truth.items():
            part = r["segments"][seg]
            assert part["truth_users"] == len(t) and part["truth_pairs"] == sum(map(len, t.values()))
            assert (part[f"recall@{k}"], part[f"ndcg@{k}"]) == pytest.approx(recall_ndcg(got, t, k))
        top = [it for lst in got.values() for it in lst[:k]]
        assert r["cold_item_share"] == pytest.approx(np.mean([it in cold_items for it in top]))
        assert r["cold_items"] == len(set(top) & cold_items)
        assert r["truth_cold_share"] == pytest.approx(sum(len(t & cold_items) for t in truth.values())
                                                      / sum(map(len, truth.values())))
    bt.close()
