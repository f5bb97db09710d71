"""The daily mode on a real slice of ML-100K: two days replayed a week apart, each as of its own cutoff, checked
against a pandas reference built from the source file (what a day may know, who it serves, what judges it)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from collm_udf.spark.context import StageContext
from collm_udf.config import config_from_dict
from helpers import (DAYS, K, POPULAR_K, RECENT, TOP_N, active_users, cutoff, daily_conf, day, known, popular_lists,
                     recall_ndcg)

pytestmark = pytest.mark.slow


def test_replay_prints_a_backtest_line_per_day_and_the_mean(daily):
    _, _, summary, lines = daily
    assert [line.split()[1] for line in lines[:3]] == [*DAYS, "mean"], lines
    for line in lines[:3]:
        for ranker in ("als", "popularity", "recent_popularity"):
            assert f"{ranker} 0." in line, line
    table = pd.DataFrame(summary["replay"]["table"])
    assert sorted(table["ds"].unique()) == list(DAYS) and len(table) == 2 * 3
    mean = pd.DataFrame(summary["replay"]["mean"]).set_index("ranker")
    assert mean.loc["popularity", "ndcg"] == pytest.approx(table[table.ranker == "popularity"]["ndcg"].mean())


def test_no_row_of_a_day_is_an_item_the_user_had_before_the_cutoff(daily, events):
    _, tables, _, _ = daily
    for ds in DAYS:
        seen = set(zip(*known(events, ds)[["user_id", "item_id"]].to_numpy().T))
        for name in ("recommendations", "candidates"):
            rows = day(tables, name, ds)
            assert len(rows) and not any(p in seen for p in zip(rows.user_id, rows.item_id)), (name, ds)


def test_every_active_user_gets_top_n_rows_with_or_without_factors(daily, events):
    _, tables, summary, _ = daily
    for ds in DAYS:
        recs = day(tables, "recommendations", ds)
        assert set(recs.user_id) == active_users(events, ds), ds
        assert (recs.groupby("user_id").size() == TOP_N).all()
    # the second day reuses the first day's ALS fit (als.retrain_every_days = 10): users since have no factors
    cands = day(tables, "candidates", DAYS[1])
    assert cands["als_run_id"].unique().tolist() == [summary["runs"][DAYS[0]]["als_run_id"]]
    assert "reused" in summary["runs"][DAYS[1]]["stages"]["als"]
    factors = tables.read("user_factors").where(F.col("als_run_id") == cands["als_run_id"].iloc[0]).toPandas()
    bare = active_users(events, DAYS[1]) - set(factors.user_id)
    assert bare, "the slice has no user who arrived between the two days"
    recs = day(tables, "recommendations", DAYS[1])
    for u in bare:
        mine = recs[recs.user_id == u].sort_values("rank")
        assert set(mine.source) <= {"popular", "text", "cold"} and mine.als_score.isna().all()
        popular = cands[(cands.user_id == u) & cands.pop_rank.notna()].sort_values("pop_rank")
        assert mine.item_id.tolist() == popular.item_id.tolist()[:TOP_N]  # filled in recent-popularity order


def test_popular_candidates_are_each_users_unseen_recent_popular_items(daily, events):
    _, tables, _, _ = daily
    ds = DAYS[0]
    cands = day(tables, "candidates", ds)
    got = cands[cands.pop_rank.notna()].sort_values(["user_id", "pop_rank"]).groupby("user_id")["item_id"].apply(list)
    want = popular_lists(events, ds, active_users(events, ds), RECENT, n=POPULAR_K)
    assert got.to_dict() == want


@pytest.mark.parametrize("ds", DAYS)
def test_backtest_of_table_and_baselines_matches_pandas(daily, events, ds):
    cfg, tables, summary, _ = daily
    c = cutoff(ds)
    fut = events[(events.ts >= c) & (events.ts < c + pd.Timedelta(days=7)) & (events.label == 1)]
    seen = set(zip(*known(events, ds)[["user_id", "item_id"]].to_numpy().T))
    fut = fut[[(u, i) not in seen for u, i in zip(fut.user_id, fut.item_id)]]
    truth = fut.groupby("user_id")["item_id"].apply(set).to_dict()
    served = active_users(events, ds)
    recs = day(tables, "recommendations", ds).sort_values(["user_id", "rank"])
    lists = {"als": recs.groupby("user_id")["item_id"].apply(list).to_dict(),
             "popularity": popular_lists(events, ds, served, None),
             "recent_popularity": popular_lists(events, ds, served, RECENT)}
    m = day(tables, "metrics", ds)
    assert set(m["mode"]) == {"daily"} and set(m["horizon_days"]) == {7}
    for ranker, lst in lists.items():
        for seg, users in (("all", truth), ("served", {u: t for u, t in truth.items() if u in served})):
            want_recall, want_ndcg = recall_ndcg(lst, users, K)
            got = m[(m.scorer == ranker) & (m.segment == seg)].set_index("metric")
            assert got.loc["recall_at_k", "value"] == pytest.approx(want_recall, abs=1e-9), (ranker, seg)
            assert got.loc["ndcg_at_k", "value"] == pytest.approx(want_ndcg, abs=1e-9), (ranker, seg)
            assert got.loc["recall_at_k", "n_users"] == len(users) and got.loc["recall_at_k", "k"] == K
        cov = m[(m.scorer == ranker) & (m.metric == "coverage")].set_index("segment")["value"]
        assert cov["active"] == pytest.approx(1.0)
        assert cov["truth"] == pytest.approx(len(set(truth) & served) / len(truth))
        # personalisation: how alike the users' top-k lists are
        tops = [set(v[:K]) for v in lst.values()]
        overlap = np.mean([len(a & b) / K for i, a in enumerate(tops) for b in tops[i + 1:]])
        counts = pd.Series([i for t in tops for i in t]).value_counts()
        got = m[(m.scorer == ranker) & (m.segment == "served")].set_index("metric")["value"]
        assert got["overlap_at_k"] == pytest.approx(overlap, abs=1e-9)
        assert got["top_item_share"] == pytest.approx(counts.iloc[0] / len(tops))
    # the truth's segments: liked items cold / warm before the cutoff, users without factors in the day's fit
    n_known = known(events, ds).item_id.value_counts()
    cold = {i for t in truth.values() for i in t if n_known.get(i, 0) < cfg.candidates.min_item_interactions}
    with_f = set(tables.read("user_factors").where(F.col("als_run_id") == summary["runs"][ds]["als_run_id"])
                 .toPandas().user_id)
    segments = {"cold_item": {u: t & cold for u, t in truth.items() if t & cold},
                "warm_item": {u: t - cold for u, t in truth.items() if t - cold},
                "no_factors": {u: t for u, t in truth.items() if u not in with_f}}
    assert all(segments.values())  # each segment has truth users on both days
    for ranker, lst in lists.items():
        got = m[m.scorer == ranker]
        for seg, users in segments.items():
            want = recall_ndcg(lst, users, K)
            g = got[got.segment == seg].set_index("metric")
            assert (g.loc["recall_at_k", "value"], g.loc["ndcg_at_k", "value"]) == pytest.approx(want, abs=1e-9)
            assert g.loc["ndcg_at_k", "n_users"] == len(users), (ranker, seg)
        top = [i for v in lst.values() for i in v[:K]]
        share = got[got.metric == "cold_item_share"]["value"].iloc[0]
        assert share == pytest.approx(np.mean([n_known.get(i, 0) < cfg.candidates.min_item_interactions for i in top]))


def test_pair_auc_of_a_day_matches_sklearn(daily, events):
    _, tables, summary, _ = daily
    ds = DAYS[0]
    run_id = summary["runs"][ds]["als_run_id"]
    c = cutoff(ds)
    test = events[(events.ts >= c) & (events.ts < c + pd.Timedelta(days=7))].copy()
    U = {r.user_id: np.asarray(r.features) for r in tables.read("user_factors")
         .where(F.col("als_run_id") == run_id).toPandas().itertuples()}
    V = {r.item_id: np.asarray(r.features) for r in tables.read("item_factors")
         .where(F.col("als_run_id") == run_id).toPandas().itertuples()}
    fallback = known(events, ds)["rating"].mean()
    test["score"] = [float(U[u] @ V[i]) if u in U and i in V else fallback for u, i in zip(test.user_id, test.item_id)]
    k = known(events, ds)
    uc, ic = k.groupby("user_id").size(), k.groupby("item_id").size()
    test["warm"] = (test.user_id.map(uc).fillna(0) >= 3) & (test.item_id.map(ic).fillna(0) >= 3)
    m = day(tables, "metrics", ds)
    got = m[(m.scorer == "als") & (m.metric == "auc")].set_index("segment")["value"]
    assert got["all"] == pytest.approx(roc_auc_score(test.label, test.score), abs=1e-4)
    w = test[test.warm]
    assert got["warm"] == pytest.approx(roc_auc_score(w.label, w.score), abs=1e-4)


def test_rerun_of_a_replayed_day_gives_the_same_rows_and_uses_its_own_fit(spark, daily):
    from collm_udf.spark import pipeline

    cfg, tables, summary, _ = daily
    key = ["user_id", "rank", "item_id", "score"]
    before = day(tables, "recommendations", DAYS[0])[key].sort_values(key).reset_index(drop=True)
    again = pipeline.run(spark, cfg, stages=["idmap", "als", "candidates", "score"], ds=DAYS[0])
    assert "reused" in again["stages"]["als"]  # its own fit, not the later day's
    assert again["stages"]["candidates"]["als_run_id"] == summary["runs"][DAYS[0]]["als_run_id"]
    after = day(tables, "recommendations", DAYS[0])[key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


# ----------------------------------------------------------------------------- interactions after the cutoff
@pytest.fixture(scope="module")
def planted(spark, daily, slice_dir, events, tmp_path_factory):
    """The first day again on a source with rows planted at and after its cutoff: a new user, an item missing
    from the catalog, and ratings of the day's own recommendations by its users, the first at the cutoff
    instant itself. The day's stages up to score run on it (no evaluate)."""
    from collm_udf.spark import pipeline
    from collm_udf.spark.tables import Tables

    _, tables, _, _ = daily
    src = tmp_path_factory.mktemp("planted-src")
    e = pd.read_parquet(slice_dir / "events.parquet")
    recs = day(tables, "recommendations", DAYS[0])
    recs = recs[recs["rank"] <= 2]
    c = cutoff(DAYS[0])
    plant = pd.concat([
        pd.DataFrame({"customer": 99999, "product": e["product"].value_counts().index[:30], "stars": 5.0,
                      "event_time": c + pd.Timedelta(hours=3)}),
        pd.DataFrame({"customer": recs.user_id.astype("int64"), "product": recs.item_id, "stars": 5.0,
                      "event_time": [c + pd.Timedelta(seconds=i) for i in range(len(recs))]}),
        pd.DataFrame({"customer": e["customer"].unique()[:40], "product": "sku-9999", "stars": 1.0,
                      "event_time": c + pd.Timedelta(days=1)}),
    ])
    pd.concat([e, plant]).to_parquet(src / "events.parquet", index=False, coerce_timestamps="us")
    (src / "catalog.parquet").write_bytes((slice_dir / "catalog.parquet").read_bytes())
    cfg = daily_conf(src, tmp_path_factory.mktemp("planted-wh"))
    summary = pipeline.run(spark, cfg, stages=["ingest", "prepare", "idmap", "als", "candidates", "score"],
                           ds=DAYS[0])
    return cfg, Tables(spark, cfg.tables), summary, len(plant)


def test_no_stage_reads_an_interaction_at_or_after_the_cutoff(daily, planted, events):
    from collm_udf.spark import training_set
    from collm_udf.spark.asof import AsOf, history_as_of

    cfg_a, a, summary_a, _ = daily
    cfg_b, b, summary_b, n_planted = planted
    ds = DAYS[0]
    late = [f for f in summary_b["data_quality"] if "at or after the cutoff" in f["check"]]
    assert late and late[0]["rows"] == (events.ts >= cutoff(ds)).sum() + n_planted
    assert summary_b["als_run_id"] == summary_a["runs"][ds]["als_run_id"]  # same input fingerprint
    ids_b = b.read("id_map").toPandas()
    assert "99999" not in set(ids_b.id) and "sku-9999" not in set(ids_b.id)
    ids_a = a.read("id_map").toPandas().merge(ids_b[["entity", "id"]])
    assert sorted(map(tuple, ids_a[["entity", "id", "idx"]].to_numpy())) == \
        sorted(map(tuple, ids_b[["entity", "id", "idx"]].to_numpy()))
    run_id = summary_b["als_run_id"]
    for name in ("user_factors", "item_factors"):
        fa, fb = (t.read(name).where(F.col("als_run_id") == run_id).toPandas().sort_values(name[:4] + "_id")
                  for t in (a, b))
        assert len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa.features, fb.features))
    for name, key in (("candidates", ["user_id", "item_id", "source", "als_rank", "pop_rank"]),
                      ("recommendations", ["user_id", "rank", "item_id", "score", "source"])):
        ra, rb = (day(t, name, ds)[key].sort_values(key[:3]).reset_index(drop=True) for t in (a, b))
        pd.testing.assert_frame_equal(ra, rb, check_dtype=False)
    # the train stage's samples and the scorer's prompt histories are the same too
    with_model = config_from_dict({**slice_conf_dict(cfg_b), "model": {"train": {"text_pairs": 64, "cf_pairs": 64,
                                                                                "holdout_pairs": 32}}})
    asof = AsOf.of(cfg_b, ds)
    fa, fb = (training_set.training_frames(with_model, t, asof) for t in (a, b))
    for part in ("text", "cf", "hold"):
        pd.testing.assert_frame_equal(fa[part].assign(history=fa[part].history.map(list)),
                                      fb[part].assign(history=fb[part].history.map(list)))
    ha, hb = (history_as_of(asof.known(t.read("pairs")), 10).toPandas().sort_values("user_id")
              .reset_index(drop=True) for t in (a, b))
    assert ha.history.map(list).tolist() == hb.history.map(list).tolist()


def slice_conf_dict(cfg) -> dict:
    """A Config back to the mapping it was built from (for a variant with one more section)."""
    import dataclasses

    d = dataclasses.asdict(cfg)
    d.pop("source_path", None)
    d.pop("model", None)
    return d


def test_backtest_without_future_data_says_so_writes_nothing_and_catches_up_later(spark, planted):
    import dataclasses

    from collm_udf.spark.stages import evaluate

    cfg, tables, _, _ = planted
    cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, catch_up_days=30))
    late = "1998-05-01"  # the slice ends 1998-04-22: its week has not happened
    out = evaluate.run(StageContext.of(spark, cfg, late, tables=tables, run_id="run_late"))
    assert out["backtest"]["status"] == "waiting" and "not available yet" in out["backtest"]["truth"]
    m = tables.read("metrics").toPandas()
    assert not (m["ds"].astype(str) == late).any()  # no fake zero for the day
    # ...and the first day, scored but never evaluated, is backtested now that its week is in the data
    assert list(out["caught_up"]) == [DAYS[0]]
    assert set(m.loc[m.ds.astype(str) == DAYS[0], "run_id"]) == {"run_late"}
    # evaluate.report off (the daily slice conf): no page, and the summary names none
    assert not {"report", "report_error"} & set(out) and not os.path.exists(os.path.join(cfg.tables.root, "reports"))


def test_collm_trains_on_its_label_window_and_later_days_score_with_aligned_factors(
        spark, daily, slice_dir, tiny_encoder, events, tmp_path_factory):
    import json
    import shutil

    from collm_udf.spark.stages import als, score, train
    from collm_udf.spark import model_registry, training_set
    from collm_udf.spark.asof import AsOf
    from collm_udf.spark.tables import Tables

    cfg0, _, summary, _ = daily
    root = tmp_path_factory.mktemp("daily-lm-wh")
    shutil.copytree(cfg0.tables.root, root, dirs_exist_ok=True)  # this test's copy: it adds models and fits
    model_sec = {"backbone": tiny_encoder, "max_tokens": 48, "candidate_max_tokens": 12,
                 "signals": ["als_dot", "als_missing", "item_recent", "item_like_rate", "user_count"],
                 "train": {"text_pairs": 96, "cf_pairs": 96, "holdout_pairs": 48, "text_epochs": 1,
                           "cf_epochs": 1, "retrain_every_days": 14, "cf_negatives": 60, "cf_pool_positives": True,
                           "text_negatives": 40}}
    # the gate off: this test is about windows and factor spaces; tests/test_gate.py judges models
    cfg = daily_conf(slice_dir, root, score={"top_n": TOP_N, "scorer": "collm", "partitions": 2,
                                             "arrow_batch_rows": 500}, model=model_sec, gate={"enabled": False})
    tables = Tables(spark, cfg.tables)
    first = train.run(StageContext.of(spark, cfg, DAYS[0], tables=tables, log=lambda m: None))
    model = model_registry.model_as_of(tables, AsOf.of(cfg, DAYS[0]))
    # the candidate pool one window back, labelled as the backtest labels a day: liked in the window -> 1
    start = cutoff(DAYS[0]) - pd.Timedelta(days=28)
    pool = training_set.candidate_pool(cfg, tables, AsOf.of(cfg, DAYS[0]), als.find_run(tables, model["als_run_id"]))
    pool = pool.toPandas()
    liked = events[(events.ts >= start) & (events.ts < cutoff(DAYS[0])) & (events.label == 1)]
    want = pool.merge(liked[["user_id", "item_id"]].drop_duplicates().assign(want=1), how="left")["want"]
    assert (pool["label"].to_numpy() == want.fillna(0).to_numpy()).all() and 0 < pool["label"].sum() < len(pool)
    # model.train.pool_users caps the pool's users, and a kept user's candidates and labels are the same
    few = dataclasses.replace(cfg.model, train=dataclasses.replace(cfg.model.train, pool_users=3))
    capped = training_set.candidate_pool(dataclasses.replace(cfg, model=few), tables, AsOf.of(cfg, DAYS[0]),
                                         als.find_run(tables, model["als_run_id"])).toPandas()
    assert capped.user_id.nunique() == 3 < pool.user_id.nunique() and len(capped) > 3
    cols = ["user_id", "item_id", "label", "source"]
    kept = pool[pool.user_id.isin(capped.user_id)]
    pd.testing.assert_frame_equal(capped[cols].sort_values(cols).reset_index(drop=True),
                                  kept[cols].sort_values(cols).reset_index(drop=True))
    pos = min(60, int(pool["label"].sum()))  # rated pairs + 60 ignored candidates + up to 60 liked ones
    assert first["pairs"]["cf"] == 96 + 48 + pos - pos // 5 and first["pairs"]["hold"] == 48 + 12 + pos // 5
    # stage 1's pool: one window further back, labelled by the window that ends where stage 2's begins
    back = dataclasses.replace(AsOf.of(cfg, DAYS[0]), cutoff=start.to_pydatetime().replace(tzinfo=dt.timezone.utc))
    back = dataclasses.replace(back, label_start=back.cutoff - dt.timedelta(days=28))
    back_fit = als.find_run(tables, training_set.label_run(spark, cfg, tables, back)["als_run_id"])
    assert back_fit["cutoff"].isoformat() == f"{(start - pd.Timedelta(days=28)).date()}T00:00:00+00:00"
    text_pool = training_set.candidate_pool(cfg, tables, back, back_fit).toPandas()
    liked = events[(events.ts >= start - pd.Timedelta(days=28)) & (events.ts < start) & (events.label == 1)]
    want = text_pool.merge(liked[["user_id", "item_id"]].drop_duplicates().assign(want=1), how="left")["want"]
    assert (text_pool["label"].to_numpy() == want.fillna(0).to_numpy()).all() and text_pool["label"].sum() > 0
    n_back = {v: min(40, int((text_pool["label"] == v).sum())) for v in (0, 1)}
    assert first["pairs"]["text"] == 96 + n_back[0] + n_back[1]
    spec = json.loads(model["spec"])
    assert spec["signals"][2:] == ["item_recent", "item_like_rate", "user_count"] and len(spec["signal_std"]) == 5
    assert model["model_version"] == first["model_version"] and model["mode"] == "daily"
    assert model["cutoff"].isoformat() == f"{DAYS[0]}T00:00:00+00:00"
    label_fit = als.find_run(tables, model["als_run_id"])  # the fit behind stage 2 ends where its window starts
    assert label_fit["cutoff"].isoformat() == f"{start.date()}T00:00:00+00:00"
    assert label_fit["train_rows"] == (events.ts < start).sum()
    assert model_registry.model_as_of(tables, AsOf.of(cfg, "1998-04-01"), required=False) is None  # never a later model
    assert "reused" in train.run(StageContext.of(spark, cfg, DAYS[1], tables=tables, log=lambda m: None))  # 7 < retrain_every_days
    out = score.run(StageContext.of(spark, cfg, DAYS[1], tables=tables))
    assert out["model_version"] == f"collm:{first['model_version']}"
    s = out["scorer"]
    assert s["model_als_run_id"] == label_fit["als_run_id"] != s["scored_als_run_id"]
    assert s["scored_als_run_id"] == summary["runs"][DAYS[0]]["als_run_id"] and 0 < s["alignment_residual"] <= 0.5
    recs = day(tables, "recommendations", DAYS[1])
    assert set(recs.user_id) == active_users(events, DAYS[1]) and (recs.groupby("user_id").size() == TOP_N).all()
    assert recs.lm_score.notna().all()
    np.testing.assert_allclose(recs.lm_score + recs.signal_score, recs.score, rtol=0, atol=1e-12)
    assert recs.signal_score.abs().max() > 0  # the model's skip over its signals carries part of every score
    # A newer model of another model conf in the same warehouse (another replay, a conf changed since): each
    # conf's scorer takes its own conf's model, never the newest of any.
    from collm_udf.spark.scorers.collm import CoLLMScorer

    other = daily_conf(slice_dir, root, score={"scorer": "collm"},
                       model={**model_sec, "train": {**model_sec["train"], "text_pairs": 97}})
    row = (tables.read("collm_models").where(F.col("model_version") == first["model_version"])
           .withColumn("model_version", F.lit("collm_other")).withColumn("train", F.lit(model_registry.model_conf_json(other)))
           .withColumn("trained_at", F.col("trained_at") + F.expr("INTERVAL 1 DAY")))
    tables.append(row, "collm_models")
    for c, want in ((cfg, first["model_version"]), (other, "collm_other")):
        assert CoLLMScorer(spark, c, tables, AsOf.of(c, DAYS[1])).model["model_version"] == want
    with pytest.raises(FileNotFoundError, match="of the conf's model section"):
        model_registry.model_as_of(tables, AsOf.of(cfg, DAYS[1]), conf="{}")


def test_signal_statistics_count_only_what_came_before_the_cutoff(daily, planted, events):
    from collm_udf.spark.asof import AsOf
    from collm_udf.core.signals import column
    from collm_udf.spark.signal_stats import add_stats, end_of

    cfg, a, _, _ = daily
    _, b, _, _ = planted
    names = ["item_recent", "item_trend", "item_count", "item_like_rate", "user_count", "item_rare", "item_rare_recent"]
    ds = DAYS[0]
    asof = AsOf.of(cfg, ds)
    k = known(events, ds)
    n_item, n_user = k.groupby("item_id").size(), k.groupby("user_id").size()
    rare_below = int(n_item.median())  # both sides among the candidates (asserted below)

    def stats(t):
        known = asof.known(t.read("pairs"))
        cands = t.read("candidates").where(F.col("ds") == F.lit(ds).cast("date")).select("user_id", "item_id")
        return add_stats(cands, known, end_of(known, asof.cutoff), names, RECENT, 7, rare_below=rare_below).toPandas() \
            .sort_values(["user_id", "item_id"]).reset_index(drop=True)

    got = stats(a)
    pd.testing.assert_frame_equal(got, stats(b))  # rows planted at and after the cutoff change nothing
    recent = k[k.ts >= cutoff(ds) - pd.Timedelta(days=RECENT)].groupby("item_id").size()
    rate = (k.groupby("item_id")["label"].sum() + 5 * k["label"].mean()) / (n_item + 5)
    np.testing.assert_allclose(got[column("item_count")], np.log1p(got.item_id.map(n_item).fillna(0)))
    np.testing.assert_allclose(got[column("item_recent")], np.log1p(got.item_id.map(recent).fillna(0)))
    trend = k[k.ts >= cutoff(ds) - pd.Timedelta(days=7)].groupby("item_id").size()
    np.testing.assert_allclose(got[column("item_trend")], np.log1p(got.item_id.map(trend).fillna(0)))
    np.testing.assert_allclose(got[column("user_count")], np.log1p(got.user_id.map(n_user).fillna(0)))
    want_rate = got.item_id.map(rate).fillna(k["label"].mean())
    np.testing.assert_allclose(got[column("item_like_rate")], want_rate, rtol=1e-9)
    rare = got.item_id.map(n_item).fillna(0) < rare_below
    assert 0 < rare.sum() < len(got)
    np.testing.assert_array_equal(got[column("item_rare")], rare.astype(float))
    np.testing.assert_allclose(got[column("item_rare_recent")], np.where(rare, got[column("item_recent")], 0.0))
