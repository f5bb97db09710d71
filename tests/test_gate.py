"""The promotion gate, the features-only ranker, the days that cannot train and the settings derived from the data
(tempo), on the daily slice of ML-100K: a tiny CoLLM model trained with the gate, a model made bad on purpose, and a
day before the history allows one."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from collm_udf.spark.asof import AsOf
from collm_udf.spark.context import StageContext
from helpers import GATE_DAY as DAY, TOP_N, assert_contract, daily_conf, gate_conf

pytestmark = pytest.mark.slow
EARLY = "1997-10-10"  # the slice starts 1997-09-20: no interaction before this day's label window (28 days)
RANKERS = {"collm", "features", "als", "popularity", "recent_popularity"}


def held_out(cfg, tables) -> set:
    from collm_udf.spark.training_set import gate_users

    return set(tables.read("pairs").select("user_id").distinct().where(gate_users(cfg)).toPandas().user_id)


def expected_winner(results: dict, new: str, margin: float, level: float = 0.0) -> str:
    """The gate's rule from its recorded figures (collm_udf/core/promotion.py). Each recorded lead of a ranker with
    a model over the better list is checked against the recorded means first. level 0, the point rule: the new
    ranker when it beats every other's NDCG by the margin, else the best other. Above 0, the proof rule: the better
    list unless a ranker with a model proves better than it (an interval above 0 on NDCG or Recall, the other mean
    lead not below 0, NDCG over the list's by the margin); then the best proven NDCG."""
    from collm_udf.core.promotion import LISTS, POINT_TIES, TIES

    mean = {n: {f: r[f] or 0.0 for f in ("ndcg", "recall")} for n, r in results.items()}
    default = max((n for n in LISTS if n in results), key=lambda n: (mean[n]["ndcg"], -LISTS.index(n)))
    proven = []
    for n, r in results.items():
        if n in LISTS:
            continue
        assert r["vs"] == default and new in results
        lead = {f: r[f"{f}_lead"] for f in ("ndcg", "recall")}
        for f, (est, lo, hi) in lead.items():
            assert est == pytest.approx(mean[n][f] - mean[default][f], abs=1e-9)
            assert lo is None or lo <= est + 1e-12 <= hi + 2e-12
        above = {f: lead[f][1] is not None and lead[f][1] > 0 for f in lead}
        ok = mean[n]["ndcg"] > mean[default]["ndcg"] * (1 + margin) and (
            (above["ndcg"] and lead["recall"][0] >= 0) or (above["recall"] and lead["ndcg"][0] >= 0))
        assert r["proven"] == ok
        proven += [n] if ok else []
    if level > 0:
        return max(proven, key=lambda n: (mean[n]["ndcg"], -TIES.index(n))) if proven else default
    ndcg = {n: m["ndcg"] for n, m in mean.items()}
    others = {n: v for n, v in ndcg.items() if n != new}
    best = max(others, key=lambda n: (others[n], -POINT_TIES.index(n)))
    return new if ndcg[new] > 0 and ndcg[new] > others[best] * (1 + margin) else best


def table_version(served: str, version: str) -> bool:
    """Whether a table's model_version names the gate's `served` ranker."""
    kind = served.split(":")[0]
    if kind in ("collm", "features"):
        return version == served
    return version.startswith(f"{kind}:") and (kind != "als" or version.startswith("als:als_"))


def test_a_gated_day_records_every_ranker_and_serves_what_the_gate_chose(gated):
    cfg, tables, summary = gated
    train = summary["stages"]["train"]
    row = tables.read("gate").where(F.col("gate_id") == train["model_version"]).first()
    results = json.loads(row["results"])
    assert set(results) == RANKERS and row["truth_users"] > 0
    assert any(r["ndcg"] for r in results.values())  # the held-out users' pool has hits: the gate compares something
    winner = expected_winner(results, "collm", cfg.gate.margin, cfg.gate.confidence)
    assert row["served"] == results[winner]["serves"] and row["promoted"] == (winner == "collm")
    m = tables.read("metrics").where((F.col("segment") == "gate") & (F.col("run_id") == "run_gate_1")).toPandas()
    assert set(zip(m.scorer, m.metric)) == {(r, x) for r in RANKERS for x in ("ndcg_at_k", "recall_at_k")}
    got = m[m.metric == "ndcg_at_k"].set_index("scorer")["value"]
    for name, r in results.items():
        assert got[name] == pytest.approx(r["ndcg"])
    # the day's table is what the gate chose, and says so; the features-only ranker is one of the day's baselines
    recs = tables.read("recommendations").where(F.col("ds") == F.lit(DAY).cast("date")).toPandas()
    assert len(recs) and recs.model_version.nunique() == 1 and summary["model_version"] == recs.model_version.iloc[0]
    assert table_version(row["served"], recs.model_version.iloc[0])
    assert "features" in summary["metrics"]["rankers"] and "collm" in summary["metrics"]["rankers"]
    for name in ("gate", "collm_models", "recommendations", "metrics"):  # the table contract, read back from Delta
        assert_contract(tables, name)


def test_no_model_trains_on_the_held_out_users_label_window(gated):
    from collm_udf.spark import training_set

    cfg, tables, summary = gated
    held = held_out(cfg, tables)
    asof = AsOf.of(cfg, DAY)
    run = training_set.label_run(tables.spark, cfg, tables, asof)
    frames = training_set.training_frames(cfg, tables, asof, run)
    assert held and not held & (set(frames["cf"].user_id) | set(frames["hold"].user_id))
    assert held & set(frames["text"].user_id)  # before the window they train as anyone does
    pairs = summary["stages"]["train"]["pairs"]
    assert pairs["cf"] == len(frames["cf"]) and pairs["hold"] == len(frames["hold"])


def test_the_gate_does_not_promote_a_model_made_bad_and_serves_the_best_other(spark, gated):
    """A copy of the trained model whose skip ranks by -20 x u . v alone (every other weight, the LM's scale
    included, zero): it ranks the ALS top-K upside down. The gate must keep it from serving."""
    import torch

    from collm_udf.core import checkpoint
    from collm_udf.core.features import FeatureRanker
    from collm_udf.spark import gate, model_registry, serving, training_set
    from collm_udf.spark.scorers import make_scorer
    from collm_udf.spark.stages import evaluate, score

    cfg, tables, summary = gated
    good = model_registry.find_model(tables, summary["stages"]["train"]["model_version"])
    model, _ = checkpoint.load(good["path"])
    with torch.no_grad():
        model.skip.weight.zero_()
        model.skip.weight[0, model.spec.signals.index("als_dot")] = -20.0
        model.lm_scale.zero_()
    asof = AsOf.of(cfg, DAY)
    bad = model_registry.register(spark, cfg, tables, model, version="collm_bad", asof=asof, report={})
    run = training_set.label_run(spark, cfg, tables, asof)
    prev = serving.decision(tables, good["model_version"])
    ctx = StageContext.of(spark, cfg, DAY, tables=tables, run_id="run_gate_bad")
    decision = gate.judge(ctx, asof, run, model=model_registry.find_model(tables, bad["model_version"]),
                          ranker=FeatureRanker.from_json(prev["features"]), gate_id="collm_bad")
    res = decision["results"]
    assert not decision["promoted"] and res["collm"]["ndcg"] < res["als"]["ndcg"]
    assert decision["chosen"] == expected_winner(res, "collm", cfg.gate.margin, cfg.gate.confidence) != "collm"
    assert decision["served"] == res[decision["chosen"]]["serves"]
    m = tables.read("metrics").where(F.col("run_id") == "run_gate_bad").toPandas()
    assert set(m.scorer) == RANKERS and set(m.segment) == {"gate"}
    # recorded, it is what the day serves: the table names it, not the bad model
    serving.record(spark, cfg, tables, asof, dict(decision, gate_id="collm_bad", model_version="collm_bad",
                                                  als_run_id=run["als_run_id"], features=prev["features"]))
    scorer = make_scorer(cfg, tables, asof)
    out = score.run(StageContext.of(spark, cfg, DAY, tables=tables))
    assert out["model_version"] == scorer.model_version and not scorer.model_version.startswith("collm:")
    assert table_version(decision["served"], out["model_version"])
    # evaluate.shadow backtests the model the gate passed over, on every truth user, beside the table that served
    on = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, shadow=True))
    ranked = evaluate.evaluate_day(spark, on, tables, DAY, "run_gate_shadow")["rankers"]
    ndcg = f"ndcg@{cfg.evaluate.k}"
    assert ranked["shadow"][ndcg] < ranked[cfg.score.scorer][ndcg]  # upside down, it ranks below what served
    m = tables.read("metrics").where((F.col("run_id") == "run_gate_shadow") & (F.col("scorer") == "shadow"))
    assert {r["model_version"] for r in m.select("model_version").distinct().collect()} == {"collm:collm_bad"}
    assert "shadow" not in evaluate.evaluate_day(spark, cfg, tables, DAY, "run_gate_no_shadow")["rankers"]
    serving.record(spark, cfg, tables, asof, dict(prev, results=json.loads(prev["results"])))  # as it was


def test_the_features_only_ranker_equals_an_sklearn_logistic_regression(spark, gated):
    """The Spark scorer's logits on the day's candidates equal sklearn's on the same signals, fitted the same way
    (standardised, C=1); the signals equal the core's, derived from the factor tables."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from collm_udf.core.features import FeatureRanker
    from collm_udf.core.signals import STATISTICS, column, matrix
    from collm_udf.spark.scorers.features import FeaturesScorer, signal_columns
    from collm_udf.spark.stages import als

    cfg, tables, _ = gated
    asof = AsOf.of(cfg, DAY)
    run = als.run_as_of(tables, asof)
    names = tuple(cfg.model.signals)
    cands = tables.read("candidates").where(F.col("ds") == F.lit(DAY).cast("date")).select("user_id", "item_id")
    got = signal_columns(cands, tables=tables, cfg=cfg, asof=asof, run=run, names=names).toPandas()
    liked = asof.truth(tables.read("pairs")).where("label = 1").select("user_id", "item_id").toPandas()
    y = got.merge(liked.drop_duplicates().assign(y=1), how="left")["y"].fillna(0).to_numpy()
    assert 0 < y.sum() < len(y)
    U = {r.user_id: np.asarray(r.features) for r in tables.read("user_factors").where(F.col("als_run_id") == run["als_run_id"]).toPandas().itertuples()}
    V = {r.item_id: np.asarray(r.features) for r in tables.read("item_factors").where(F.col("als_run_id") == run["als_run_id"]).toPandas().itertuples()}
    z = np.zeros(8)
    x = matrix(names, np.stack([U.get(u, z) for u in got.user_id]), np.stack([V.get(i, z) for i in got.item_id]),
               got.user_id.isin(U.keys()).to_numpy(), got.item_id.isin(V.keys()).to_numpy(),
               {n: got[column(n)].to_numpy() for n in names if n in STATISTICS})
    np.testing.assert_allclose(got[[column(n) for n in names]].to_numpy(), x, rtol=1e-4, atol=1e-4)
    ranker = FeatureRanker.fit(names, x, y)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(StandardScaler().fit_transform(x), y)
    want = ref.decision_function(StandardScaler().fit(x).transform(x))
    scored = FeaturesScorer(cfg, tables, asof, ranker=ranker, run=run, version="t").score_pairs(cands).toPandas()
    m = got[["user_id", "item_id"]].assign(want=want).merge(scored, on=["user_id", "item_id"])
    assert len(m) == len(got) and np.corrcoef(m.score, m.want)[0, 1] > 0.999
    np.testing.assert_allclose(m.score, m.want, rtol=1e-3, atol=1e-3)
    assert FeatureRanker.from_json(ranker.to_json()) == ranker


def test_a_day_too_early_to_train_still_gets_a_table_and_says_why(spark, gated):
    """Before the history holds a label window, nothing trains: the day is served by score.fallback (recent
    popularity), the train stage says why, and the table and the run summary name what served."""
    from collm_udf.spark import pipeline

    cfg, tables, _ = gated
    summary = pipeline.run(spark, cfg, stages=["idmap", "als", "train", "candidates", "score"], ds=EARLY)
    assert "no interactions for ALS" in summary["stages"]["train"]["skipped"]
    out = summary["stages"]["score"]
    assert out["model_version"] == f"recent_popularity:{EARLY}" and "score.fallback" in out["scorer"]["reason"]
    recs = tables.read("recommendations").where(F.col("ds") == F.lit(EARLY).cast("date")).toPandas()
    cands = tables.read("candidates").where(F.col("ds") == F.lit(EARLY).cast("date")).toPandas()
    assert set(recs.user_id) == set(cands.user_id) and (recs.groupby("user_id").size() == TOP_N).all()
    assert (recs.source == "popular").all() and recs.lm_score.isna().all()
    assert (recs.signal_score == recs.score).all()  # no LM: the whole score is the signals' part


def test_the_features_scorer_trains_no_language_model(spark, gated, slice_dir, tiny_encoder):
    from collm_udf.spark.stages import train

    cfg0, tables, _ = gated
    cfg = gate_conf(slice_dir, cfg0.tables.root, tiny_encoder, scorer="features")
    models = tables.read("collm_models").count()
    out = train.run(StageContext.of(spark, cfg, DAY, tables=tables, log=lambda m: None))
    assert tables.read("collm_models").count() == models and out["features"]["weights"]
    row = tables.read("gate").where(F.col("gate_id").startswith("features_")).first()
    results = json.loads(row["results"])
    assert row["model_version"] is None and set(results) == RANKERS - {"collm"}
    winner = expected_winner(results, "features", cfg.gate.margin, cfg.gate.confidence)
    assert row["served"] == results[winner]["serves"]


def test_tempo_derives_the_days_windows_and_thresholds_from_what_it_knew(spark, gated, slice_dir):
    """Each derived setting against pandas on the slice's events before the cutoff; rows at and after it change
    nothing (they are in the warehouse: the slice runs to 1998-04-22)."""
    import dataclasses
    import math

    from collm_udf.spark.context import StageContext

    cfg0, tables, _ = gated
    e = pd.read_parquet(slice_dir / "events.parquet")
    known = e[e.event_time < pd.Timestamp(DAY)]
    likes = {m: int(((known.event_time >= pd.Timestamp(DAY) - pd.Timedelta(days=28 * m)) & (known.stars >= 4)).sum())
             for m in range(1, 14)}
    want_likes = likes[1] + 1  # one more than the last 28 days hold: the window must widen
    window = 28 * next(m for m in likes if likes[m] >= want_likes)
    assert window > 28
    cfg = dataclasses.replace(cfg0, tempo=dataclasses.replace(cfg0.tempo, enabled=True, label_likes=want_likes,
                                                                audience_quantile=0.8, item_quantile=0.6))
    ctx = StageContext.of(spark, cfg, DAY, tables=tables)
    days = known.assign(d=known.event_time.dt.floor("D"))[["customer", "d"]].drop_duplicates() \
        .sort_values(["customer", "d"])
    gaps = days.groupby("customer")["d"].diff().dt.days.dropna()
    audience = max(7, math.ceil(np.quantile(gaps[gaps > 0], 0.8)))
    items = max(2, math.ceil(np.quantile(known.groupby("product").size(), 0.6)))
    want = {"label_window_days": window, "recent_days": window, "active_within_days": audience,
            "min_item_interactions": items, "label_short": False}
    assert {k: ctx.tempo[k] for k in want} == want
    c = ctx.cfg
    assert (c.asof.label_window_days, c.candidates.recent_days, c.candidates.active_within_days,
            c.candidates.min_item_interactions) == (window, window, audience, items)
    assert not c.tempo.enabled and ctx.base_cfg is cfg  # the day's conf derives nothing more
    short = dataclasses.replace(cfg, tempo=dataclasses.replace(cfg.tempo, label_likes=10**7, max_label_window_days=56))
    s = StageContext.of(spark, short, DAY, tables=tables).tempo
    assert s["label_short"] and s["label_window_days"] == 56
