"""The promotion gate: a newly trained ranker serves only when it ranks held-out users better than everything a
team could serve instead. Part of the train stage (daily mode, gate.enabled).

Who: the users gate_users holds out (gate.holdout_users of them, by a stable hash of the id): no model and no
features-only ranker trained on their label-window pairs, on this day or any other.
What: the day of the label window's start, as the daily job would have run it then (the candidate pool of
training_set.candidate_pool: its audience, the label fit's ALS top-K, the popular and cold items; histories and
statistics before that start), judged by what those users then liked in the label window, new to them
(backtest.prepare with the window as the truth). Nothing of the window reached the label fit or its statistics.
Rankers, each a top-k list per held-out user of that audience:
  collm              the new CoLLM model (score.scorer: collm)
  features           the features-only ranker fitted beside it on the same stage-2 labels
  serving            what served before this training, when it was a model (its factors rotated into the label
                     fit's space as any later day's are)
  als                the label fit's u . v over the same pool
  popularity, recent_popularity   the backtest's lists as of the window's start
Each ranker with a model is ranked as the score stage serves it: with score.cold_slots, its top_n list with the
cold slots of that day, cut to k.
Decision (collm_udf/core/promotion.py): gate.confidence 0 (the default), the point rule: the new ranker (collm, or
features when it is the conf's scorer) is promoted when its NDCG@k exceeds the best other's by gate.margin
(relative); otherwise the best other serves. gate.confidence > 0, the proof rule: the better list without a model
serves unless a ranker with a model proves better than it (a paired-bootstrap interval of its per-user lead above 0
on NDCG@k or Recall@k). Every ranker's figures go to metrics (segment 'gate') and the decision, with each model's
lead over the better list and its interval, to table gate (collm_udf/spark/serving.py), which the score stage reads.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from collm_udf.core.features import FeatureRanker
from collm_udf.core.promotion import decide
from collm_udf.spark import backtest, serving
from collm_udf.spark.asof import AsOf, micros, newest_as_of
from collm_udf.spark.context import StageContext
from collm_udf.spark.scorers import ALSScorer, CoLLMScorer, FeaturesScorer, cold_slots, rank_with_cold_slots, resolve
from collm_udf.spark.stages import candidates
from collm_udf.spark.training_set import POOL_CANDIDATE_COLUMNS, gate_users


def window_day(asof: AsOf) -> AsOf:
    """The label window's start as a day of its own: what it knew (before the start) and what judges it (the
    window)."""
    span = asof.cutoff - asof.label_start
    return dataclasses.replace(asof, cutoff=asof.label_start, label_start=asof.label_start - span,
                               horizon_end=asof.cutoff, horizon_days=span // dt.timedelta(days=1))


def previous(ctx: StageContext, asof: AsOf) -> Optional[dict]:
    """The decision serving before this day's training (strictly earlier cutoff: a rerun is not its own rival)."""
    before = F.col("_cutoff_us") < F.lit(micros(asof.cutoff))
    return newest_as_of(ctx.tables, "gate", asof, "gate_id", (F.col("conf") == serving.serving_conf(ctx.cfg)) & before)


def judge(ctx: StageContext, asof: AsOf, run: dict, *, model: Optional[dict], ranker: Optional[FeatureRanker],
          gate_id: str, pool: Optional[DataFrame] = None) -> dict:
    """Rank the held-out users' pool with every ranker, decide what serves, write the metric rows; returns the
    decision row for serving.record (served, promoted, reason, k, margin, truth_users, results). `pool`: the
    label window's training_set.candidate_pool when the train stage has built it (the same candidates)."""
    cfg, tables = ctx.cfg, ctx.tables
    k, margin = cfg.evaluate.k, cfg.gate.margin
    day = window_day(asof)
    new = "collm" if model is not None else "features"
    served = {"als": "als", "popularity": "popularity", "recent_popularity": "recent_popularity"}
    scorers = {"als": ALSScorer(tables, run)}
    if ranker is not None:  # a model without signals (the paper's) has none
        scorers["features"] = FeaturesScorer(cfg, tables, day, ranker=ranker, run=run, version=gate_id)
        served["features"] = f"features:{gate_id}"
    if model is not None:
        scorers["collm"] = CoLLMScorer(tables.spark, cfg, tables, day, model=model, run=run)
        served["collm"] = f"collm:{model['model_version']}"
    prev = previous(ctx, asof)
    if prev is not None and prev["served"].split(":")[0] in ("collm", "features"):
        scorers["serving"] = resolve(cfg, tables, day, prev["served"], run=run)
        served["serving"] = prev["served"]
    bt = backtest.prepare(cfg, tables, day, users=gate_users(cfg))
    held = None
    try:
        offered = (candidates.build(cfg, tables, day, run) if pool is None
                   else pool.select("user_id", "item_id", *POOL_CANDIDATE_COLUMNS))
        held = offered.join(bt.served, "user_id").cache()
        slots = cold_slots(cfg, tables, day)  # each ranker as the score stage would serve it
        n = slots["slots"] if slots else 0
        lists = {name: rank_with_cold_slots(sc.score_pairs(held), cfg.score.top_n, n).where(F.col("rank") <= k)
                 .select("user_id", "item_id", "rank") for name, sc in scorers.items()}
        lists.update(backtest.baseline_lists(cfg, bt, day, k))
        per_user: dict = {}
        figures = backtest.evaluate_lists(bt, lists, k, per_user=per_user)
    finally:
        if held is not None:
            held.unpersist()
        bt.close()
    truth_users = figures[new]["truth_users"]
    winner, leads, reason = decide(per_user, new, margin=margin, level=cfg.gate.confidence)
    results = {name: {"ndcg": figures[name][f"ndcg@{k}"], "recall": figures[name][f"recall@{k}"],
                      "served_truth_users": figures[name]["served_truth_users"], "serves": served[name],
                      **leads.get(name, {})}
               for name in lists}
    rows = []
    for name, r in results.items():
        for metric, v in (("ndcg_at_k", r["ndcg"]), ("recall_at_k", r["recall"])):
            rows.append((ctx.run_id, asof.ds, asof.mode, day.horizon_days, run["als_run_id"], served[name], name,
                         metric, "gate", k, v, None, truth_users))
    backtest.write_metrics(tables, rows)
    return {"served": served[winner], "promoted": winner == new, "reason": reason, "k": k, "margin": margin,
            "truth_users": truth_users, "results": results, "chosen": winner}
