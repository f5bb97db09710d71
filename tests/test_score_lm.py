"""The CoLLM scorer inside Spark (mapInPandas over real Delta tables), checked against the bare torch core."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from collm_udf.config import config_from_dict
from collm_udf.spark.asof import AsOf
from collm_udf.spark.context import StageContext
from helpers import slice_conf

pytestmark = pytest.mark.slow
LM_DS = "2026-02-01"


def lm_conf(root, slice_dir, backbone, **score):
    return config_from_dict(slice_conf(
        slice_dir, Path(root),
        model={"backbone": backbone, "max_tokens": 48, "candidate_max_tokens": 12,
               "train": {"text_pairs": 128, "cf_pairs": 128, "holdout_pairs": 64, "text_epochs": 1, "cf_epochs": 1}},
        score={"top_n": 10, "scorer": "collm", "partitions": 3, "arrow_batch_rows": 200, **score}))


@pytest.fixture(scope="module")
def lm_run(spark, pipeline_run, slice_dir, tiny_encoder, tmp_path_factory):
    """Train, score and evaluate with CoLLM on a copy of the pipeline's warehouse (the copy is this module's to
    change: it adds days, ALS runs and models that the pipeline tests must not see)."""
    from collm_udf.spark import pipeline
    from collm_udf.spark.tables import Tables

    cfg0, _, _ = pipeline_run
    root = tmp_path_factory.mktemp("lm-warehouse")
    shutil.copytree(cfg0.tables.root, root, dirs_exist_ok=True)
    cfg = lm_conf(root, slice_dir, tiny_encoder)
    tables = Tables(spark, cfg.tables)
    summary = pipeline.run(spark, cfg, stages=["train", "candidates", "score", "evaluate"], ds=LM_DS,
                           run_id="run_lm_1")
    return cfg, tables, summary


def day(tables, name="recommendations"):
    return tables.read(name).where(F.col("ds") == F.lit(LM_DS).cast("date")).toPandas()


def test_daily_table_is_ranked_by_the_lm(lm_run):
    cfg, tables, summary = lm_run
    version = summary["stages"]["train"]["model_version"]
    recs = day(tables)
    assert len(recs) and (recs["model_version"] == f"collm:{version}").all()
    # every row's score is its LM part plus its signals' part (this model has no signals: that part is 0)
    assert recs["lm_score"].notna().all() and recs["signal_score"].notna().all()
    np.testing.assert_allclose(recs["lm_score"] + recs["signal_score"], recs["score"], rtol=0, atol=1e-12)
    assert (recs["signal_score"] == 0).all() and (recs["lm_score"] != 0).any()
    assert recs.loc[recs.source == "als", "als_score"].notna().all()
    for _, g in recs.groupby("user_id"):
        g = g.sort_values("rank")
        assert g["rank"].tolist() == list(range(1, len(g) + 1))
        assert (np.diff(g["score"].to_numpy()) <= 0).all()
    # the ranking is the LM's own, not ALS's order: most users' rows, put in order of their ALS score, come out in
    # another order than the table's; and cold candidates (no ALS score) reach the table when the day has any
    differs = [g.sort_values("als_score", ascending=False, na_position="last", kind="stable")["item_id"].tolist()
               != g.sort_values("rank")["item_id"].tolist() for _, g in recs.groupby("user_id")]
    assert sum(differs) > len(differs) / 2, f"{sum(differs)} of {len(differs)} users"
    cands = day(tables, "candidates")
    assert (recs["source"] == "cold").any() or not (cands["source"] == "cold").any()
    row = tables.read("collm_models").where(F.col("model_version") == version).first()
    assert row["als_run_id"] == summary["als_run_id"] and os.path.isfile(Path(row["path"], "model.safetensors"))


def test_spark_scores_equal_the_bare_core(spark, lm_run):
    from collm_udf.core.inference import load_predict_fn
    from collm_udf.spark.scorers.collm import CoLLMScorer

    cfg, tables, _ = lm_run
    scorer = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, LM_DS))
    users = [r["user_id"] for r in tables.read("candidates").where(F.col("ds") == F.lit(LM_DS).cast("date"))
             .select("user_id").distinct().orderBy("user_id").limit(4).collect()]
    pairs = tables.read("candidates").where((F.col("ds") == F.lit(LM_DS).cast("date")) & F.col("user_id").isin(users))
    got = scorer.score_pairs(pairs).select("user_id", "item_id", "score").toPandas()
    inp = scorer.inputs(pairs).toPandas()
    bare = load_predict_fn(scorer.model["path"], "cpu", bf16=cfg.score.bf16)
    z = np.zeros(8, np.float32)
    inp["want"] = bare([list(h) if h is not None else [] for h in inp["_history_text"]], inp["_candidate"].tolist(),
                       np.stack([z if f is None else np.asarray(f) for f in inp["_user_f"]]),
                       np.stack([z if f is None else np.asarray(f) for f in inp["_item_f"]]),
                       inp["_user_f"].notna().to_numpy(), inp["_item_f"].notna().to_numpy())
    m = got.merge(inp[["user_id", "item_id", "want"]], on=["user_id", "item_id"])
    assert len(m) == len(got) == len(inp) > 20
    np.testing.assert_allclose(m["score"], m["want"], rtol=1e-4, atol=1e-5)


def _probe(inner):
    """Wrap the real scoring function; report this worker's pid and how often it loaded a model."""
    def fn(batches):
        from collm_udf.spark.scorers import model_cache

        for out in inner(batches):
            yield pd.DataFrame({"pid": [os.getpid()], "loads": [max(model_cache.LOADS.values())],
                                "rows": [len(out)]})
    return fn


def test_model_is_loaded_once_per_worker(spark, lm_run):
    from collm_udf.spark.scorers.collm import CoLLMScorer
    from collm_udf.spark.scorers.udf import COLUMNS, score_udf

    cfg, tables, _ = lm_run
    scorer = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, LM_DS))
    pairs = tables.read("candidates").where(F.col("ds") == F.lit(LM_DS).cast("date")).select("user_id", "item_id")
    inp = scorer.inputs(pairs).repartition(8, "user_id").select("user_id", "item_id", *COLUMNS)
    inner = score_udf(make_predict_fn=scorer.make_predict_fn, key=("once-per-worker",), device="cpu", factor_dim=8,
                      rotation=np.eye(8).tolist(), keep=["user_id", "item_id"])
    got = inp.mapInPandas(_probe(inner), "pid long, loads long, rows long").toPandas()
    assert got["rows"].sum() == pairs.count()
    assert got["pid"].nunique() < len(got)  # several tasks per worker...
    assert (got["loads"] == 1).all()  # ...and no worker loaded any model (key) twice


def test_scoring_keeps_its_partitions_under_adaptive_execution(spark, lm_run):
    """score.partitions 0 means spark.sql.shuffle.partitions: as many as the joins before the UDF leave, which
    adaptive execution would coalesce into one task (the whole day on one core) were the repartition redundant."""
    import dataclasses

    from collm_udf.spark.scorers.collm import CoLLMScorer

    cfg, tables, _ = lm_run
    cfg = dataclasses.replace(cfg, score=dataclasses.replace(cfg.score, partitions=0))
    assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
    n = int(spark.conf.get("spark.sql.shuffle.partitions"))
    pairs = tables.read("candidates").where(F.col("ds") == F.lit(LM_DS).cast("date"))
    out = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, LM_DS)).score_pairs(pairs) \
        .withColumn("p", F.spark_partition_id()).cache()  # the task each row was scored in
    per_task = out.groupBy("p").agg(F.count(F.lit(1)).alias("rows")).toPandas()
    assert n > 1 and len(per_task) == n and per_task["rows"].sum() == pairs.count()
    users = out.groupBy("user_id").agg(F.countDistinct("p").alias("parts")).toPandas()
    assert (users["parts"] == 1).all()  # a user's candidates stay in one task (they share one prefix)
    out.unpersist()


def test_the_model_cache_keeps_the_three_most_recently_used():
    from collm_udf.spark.scorers import model_cache

    model_cache.clear()
    loads = []

    def get(key):
        return model_cache.get(key, lambda: loads.append(key) or key)

    for key in ("a", "b", "c", "a", "d", "a", "b"):  # d evicts b (least recent), so b loads again
        assert get(key) == key
    assert loads == ["a", "b", "c", "d", "b"]
    model_cache.clear()


def test_evaluate_reports_lm_and_als_on_the_same_day(lm_run):
    _, tables, summary = lm_run
    met = tables.read("metrics").where(F.col("run_id") == "run_lm_1").toPandas()
    assert set(met["scorer"]) == {"collm", "als", "popularity", "recent_popularity"}
    ranking = {"recall_at_k", "ndcg_at_k", "coverage", "overlap_at_k", "top_item_share", "cold_item_share",
               "cold_items"}
    assert {"auc", "uauc"} | ranking == set(met[met.scorer == "als"]["metric"])
    # the CoLLM scorer also records how far the day's factors were from its model's (the drift it rotated over)
    assert {"auc", "uauc", "alignment_residual"} | ranking == set(met[met.scorer == "collm"]["metric"])
    residual = met[(met.scorer == "collm") & (met.metric == "alignment_residual")]["value"]
    assert len(residual) == 1 and 0.0 <= float(residual.iloc[0]) < 0.5
    for baseline in ("popularity", "recent_popularity"):  # they rank; they score no pairs
        assert ranking == set(met[met.scorer == baseline]["metric"])
    assert summary["metrics"]["auc"]["all"] is not None and summary["metrics"]["als"]["auc"]["all"] is not None


def test_rerun_of_the_day_gives_the_same_rows(spark, lm_run):
    from collm_udf.spark.stages import score

    cfg, tables, _ = lm_run
    before = day(tables)
    score.run(StageContext.of(spark, cfg, LM_DS, tables=tables))
    after = day(tables)
    key = ["user_id", "rank"]
    cols = key + ["item_id", "score", "model_version"]
    pd.testing.assert_frame_equal(before.sort_values(key)[cols].reset_index(drop=True),
                                  after.sort_values(key)[cols].reset_index(drop=True), rtol=1e-6)


def _fake_run(spark, tables, run0: str, new: str, transform) -> dict:
    """A second ALS run whose factors are transform(first run's factors)."""
    for entity in ("user", "item"):
        pdf = tables.read(f"{entity}_factors").where(F.col("als_run_id") == run0).toPandas()
        pdf["features"] = [transform(np.asarray(f, np.float32)).astype(np.float32).tolist() for f in pdf["features"]]
        pdf["als_run_id"] = new
        df = spark.createDataFrame(pdf[["als_run_id", f"{entity}_id", f"{entity}_idx", "features"]],
                                   f"als_run_id string, {entity}_id string, {entity}_idx int, features array<float>")
        tables.replace_partition(df.withColumn("trained_at", F.current_timestamp()), f"{entity}_factors",
                                 "als_run_id", new)
    return {"als_run_id": new}


def test_new_als_run_is_aligned_or_scored_with_the_models_own_factors(spark, lm_run):
    """A rotated run aligns (same scores). An unrelated run leaves a residual over the limit: the day is scored
    with the factors of the model's own ALS run (the same scores as that run gives), written whole, and the stage's
    output and metrics say so. score.align off does the same without trying a rotation."""
    from collm_udf.spark.scorers.collm import CoLLMScorer
    from collm_udf.spark.stages import evaluate, score

    cfg, tables, _ = lm_run
    base = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, LM_DS))
    run0 = base.run["als_run_id"]
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))
    rotated = _fake_run(spark, tables, run0, "als_test_rotated", lambda f: f @ Q.T)
    aligned = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, LM_DS), run=rotated)
    assert aligned.alignment.residual < 1e-4 and aligned.alignment.shared_items > 20
    # the moments Spark summed per partition equal numpy's over the collected factors, and give align()'s rotation
    from collm_udf.core.align import Moments, align
    from collm_udf.spark.scorers.collm import factor_moments

    got = factor_moments(tables, run0, "als_test_rotated")
    f = {r: {x["item_id"]: np.asarray(x["features"]) for x in tables.read("item_factors")
             .where(F.col("als_run_id") == r).collect()} for r in (run0, "als_test_rotated")}
    ids = sorted(f[run0])
    want = Moments.of(np.stack([f["als_test_rotated"][i] for i in ids]), np.stack([f[run0][i] for i in ids]))
    assert got.shared == want.shared == aligned.alignment.shared_items
    np.testing.assert_allclose(got.cross, want.cross, rtol=1e-9, atol=1e-9)
    assert (got.new_sq, got.ref_sq) == pytest.approx((want.new_sq, want.ref_sq), rel=1e-9)
    np.testing.assert_allclose(aligned.alignment.rotation,
                               align(f[run0], f["als_test_rotated"], run0, "x", 0.5).rotation, atol=1e-5)
    assert aligned.describe()["factors"] == "rotated"
    pairs = tables.read("candidates").where(F.col("ds") == F.lit(LM_DS).cast("date")).limit(60)
    a = base.score_pairs(pairs).toPandas().sort_values(["user_id", "item_id"])["score"].to_numpy()
    b = aligned.score_pairs(pairs).toPandas().sort_values(["user_id", "item_id"])["score"].to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    unrelated = _fake_run(spark, tables, run0, "als_test_unrelated",
                          lambda f: np.random.default_rng(int(abs(f[0]) * 1e6)).normal(size=f.shape))
    drifted = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, LM_DS), run=unrelated)
    d = drifted.describe()
    assert d["factors"] == "reference" and d["scored_als_run_id"] == run0
    assert d["drift"]["day_als_run_id"] == "als_test_unrelated" and d["drift"]["residual"] > 0.5
    assert f"trained on ALS run {run0} cannot score factors of ALS run als_test_unrelated" in d["drift"]["reason"]
    c = drifted.score_pairs(pairs).toPandas().sort_values(["user_id", "item_id"])["score"].to_numpy()
    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)
    before = day(tables)
    ctx = StageContext.of(spark, cfg, LM_DS, tables=tables, run_id="run_drift")
    try:
        out = score.write_day(ctx, drifted)
        assert out["scorer"]["factors"] == "reference" and out["recommendations"] == len(before)
        m = evaluate.evaluate_day(spark, cfg, tables, LM_DS, "run_drift", scorer=drifted)
        assert m["rankers"]["collm"]["truth_users"] > 0
        rows = tables.read("metrics").where((F.col("run_id") == "run_drift") &
                                            (F.col("metric") == "alignment_residual")).toPandas()
        assert rows.segment.tolist() == ["reference"] and rows.value.iloc[0] > 0.5
    finally:
        score.write_day(ctx, base)  # the module's day as it was
    cfg.score.align = False
    try:
        off = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, LM_DS), run=rotated)
        assert off.describe()["factors"] == "reference" and off.drift["reason"] == "score.align is off"
    finally:
        cfg.score.align = True


def test_a_task_that_fails_once_is_retried_and_the_table_is_unchanged(spark, lm_run, tmp_path):
    from collm_udf.spark.stages import score
    from collm_udf.spark.scorers.collm import CoLLMScorer

    cfg, tables, _ = lm_run
    before = day(tables)
    marker = str(tmp_path / "failed-once")
    real = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, LM_DS)).make_predict_fn

    def fails_once(device):  # a nested function: cloudpickle sends it by value, with `real` and `marker`
        predict = real(device)

        def once(*args, **kw):
            if not os.path.exists(marker):  # the first scoring call of the job dies, once
                open(marker, "w").close()
                raise RuntimeError(f"injected scoring failure ({marker})")
            return predict(*args, **kw)
        return once

    scorer = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, LM_DS), make_predict_fn=fails_once)
    score.write_day(StageContext.of(spark, cfg, LM_DS, tables=tables), scorer)
    assert os.path.exists(marker)  # the failure happened, Spark retried the task, the job went on
    after = day(tables)
    key = ["user_id", "rank"]
    cols = key + ["item_id", "score", "model_version"]
    pd.testing.assert_frame_equal(before.sort_values(key)[cols].reset_index(drop=True),
                                  after.sort_values(key)[cols].reset_index(drop=True), rtol=1e-6)


def test_task_gpu_addresses_outside_spark_is_empty():
    from collm_udf.spark.task import task_gpu_addresses

    assert task_gpu_addresses() == []
