"""Stage 8, evaluate: the day's backtest. Pair AUC/UAUC (the paper's metrics) and Recall/NDCG@k of the day's
table beside the baselines a team would ship without it, all on the same truth.

metrics: run_id, ds DATE, mode, horizon_days INT, als_run_id, model_version, scorer, metric, segment, k INT,
         value DOUBLE, n_pairs LONG, n_users LONG, evaluated_at TIMESTAMP   (appended; one row per metric x
         segment x scorer, the baselines' rows with scorer popularity / recent_popularity / als)

The truth (collm_udf/spark/asof.py): daily mode, the interactions of [cutoff, cutoff + evaluate.horizon_days),
available once the interactions table reaches the end of that window; until then the stage says so in its result
and writes no metric row (no fake zero). Each later run's evaluate stage catches up: it also backtests the
earlier days of the last evaluate.catch_up_days whose horizon has completed since and that have no backtest yet.
Split mode: the test split. Test pairs are scored as of the cutoff (daily: the users' histories before it; split:
each pair's own history, the paper's protocol); warm/cold count interactions in the part the day's ALS fit saw.

- AUC: sklearn's roc_auc_score (the exact ROC area, ties averaged) of each segment's pairs.
- UAUC: as in CoLLM, the mean of per-user AUCs over users whose test pairs hold both classes.
  Both in one Spark job per scorer (segment_rows: a pandas group per segment, collm_udf/core/metrics.py); 16
  MLlib evaluator passes did the same in 57 jobs.
- Segments: all; warm (user and item each >= warm_min_interactions training interactions); cold (not warm);
  cold_item (item never in training). Pairs the scorer cannot score (ALS: no factors) get its fallback score,
  the uninformed prior, so a scorer is never credited for pairs it skips.
- Recall@k / NDCG@k and coverage of the table and the baselines: collm_udf/spark/backtest.py, over all truth
  users and over the truth's segments cold_item / warm_item (the liked items with fewer / at least
  candidates.min_item_interactions interactions before the cutoff, the day's derived threshold under tempo) and
  no_factors (truth users without factors in the day's ALS fit); each list's cold_item_share and cold_items.
- evaluate.shadow: when the gate passed over the newest CoLLM model, that model too, as ranker `shadow` (ranked as
  the score stage would serve it), so that what the LM would have added is measured on every truth user.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Optional

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.core.metrics import SEGMENTS, segment_figures
from collm_udf.spark.stages import als
from collm_udf.spark import backtest
from collm_udf.spark.asof import AsOf, backtest_status, segments
from collm_udf.spark.context import StageContext
from collm_udf.spark import serving, tempo
from collm_udf.spark.scorers import (ALSScorer, Scorer, cold_slots, make_scorer, rank, rank_with_cold_slots,
                                    resolve)
from collm_udf.spark.tables import Tables

log = logging.getLogger(__name__)


FIGURES_SCHEMA = "segment string, auc double, uauc double, pairs long, users long, uauc_users long"


def _segment_figures(pdf: pd.DataFrame) -> pd.DataFrame:
    """One segment's scored pairs -> its one row of FIGURES_SCHEMA (sklearn's exact AUC, ties as roc_auc_score).

    Module-level so that executors import it instead of unpickling a closure."""
    return pd.DataFrame([{"segment": pdf["segment"].iloc[0], **segment_figures(pdf)}])


def segment_rows(scored: DataFrame) -> dict[str, dict]:
    """{segment: {auc, uauc, pairs, users, uauc_users}} of scored truth pairs, in one Spark job: each pair goes
    to every segment it is in (all; warm or cold; cold_item), and each segment is one pandas group (a task holds
    a segment's pairs: a day's truth, not the interaction log)."""
    seg = F.explode(F.array(F.lit("all"), F.when(F.col("warm"), F.lit("warm")).otherwise(F.lit("cold")),
                            F.when(F.col("cold_item"), F.lit("cold_item"))))
    got = (scored.select("user_id", "label", F.col("score").cast("double"), seg.alias("segment"))
           .where(F.col("segment").isNotNull())
           .groupBy("segment").applyInPandas(_segment_figures, FIGURES_SCHEMA).collect())
    return {r["segment"]: r.asDict() for r in got}


def truth_pairs(cfg: Config, tables: Tables, asof: AsOf) -> DataFrame:
    """The day's labelled truth pairs with their warm/cold segments (counted in what the ALS fit saw)."""
    pairs = tables.read("pairs")
    truth = asof.truth(pairs).select("user_id", "item_id", "label", "history")
    if asof.daily:  # scored as of the cutoff: the user's history before it, not the pair's own
        truth = truth.drop("history")
    return segments(truth, asof.fit(pairs), cfg.prepare.warm_min_interactions)


def score_test_pairs(truth: DataFrame, scorer: Scorer) -> DataFrame:
    cols = [c for c in ("user_id", "item_id", "label", "warm", "cold_item", "history") if c in truth.columns]
    scored = scorer.score_pairs(truth.select(*cols))
    return scored.withColumn("score", F.coalesce(F.col("score"), F.lit(scorer.fallback_score())))


def pair_metrics(truth: DataFrame, scorer: Scorer) -> tuple[dict, list]:
    """AUC and UAUC per segment on the truth pairs: (summary, metric rows); {} and [] when there are none."""
    got = segment_rows(score_test_pairs(truth, scorer))
    if not got:
        return {}, []
    rows, summary = [], {"auc": {}, "uauc": {}, "pairs": {}}
    for seg in SEGMENTS:
        r = got.get(seg) or {"auc": None, "uauc": None, "pairs": 0, "users": 0, "uauc_users": 0}
        summary["auc"][seg], summary["uauc"][seg], summary["pairs"][seg] = r["auc"], r["uauc"], r["pairs"]
        rows += [("auc", seg, r["auc"], r["pairs"], r["users"], None),
                 ("uauc", seg, r["uauc"], r["pairs"], r["uauc_users"], None)]
    return summary, rows


def evaluate_day(spark: SparkSession, cfg: Config, tables: Tables, ds: str, run_id: str,
                 scorer: Scorer | None = None) -> dict:
    """The backtest of one day: its summary, and its metric rows appended to `metrics` (none when not ready).
    `cfg`: the conf as loaded (with tempo, the day's settings are derived here)."""
    cfg, _ = tempo.derive(cfg, tables, ds)
    asof = AsOf.of(cfg, ds)
    ready, why = backtest_status(tables, asof)
    info = dict(asof.describe(), truth=why)
    if not ready:
        return {"backtest": dict(info, status="waiting")}
    scorer = scorer or make_scorer(cfg, tables, asof)
    k = cfg.evaluate.k
    truth = truth_pairs(cfg, tables, asof).cache()
    summary, rows = pair_metrics(truth, scorer)
    day = F.col("ds") == F.lit(ds).cast("date")
    # The table is named after the conf's scorer whatever served it (model_version says what did), so a table that
    # the gate had served by a popularity list is still judged beside that list as a baseline.
    table = cfg.score.scorer
    lists = {table: tables.read("recommendations").where(day).select("user_id", "item_id", "rank")}
    written = {table: scorer}
    b_summary, b_rows = None, []
    cands = tables.read("candidates").where(day)
    fit = ALSScorer(tables, als.run_as_of(tables, asof))
    if table != "als":  # the ALS-ranked candidates as a baseline (also when the gate had ALS serve the table)
        base = fit
        b_summary, b_rows = pair_metrics(truth, base)
        als_ranked = rank(base.score_pairs(cands.select("user_id", "item_id", "pop_rank", "source")), k)
        lists["als"] = als_ranked.select("user_id", "item_id", "rank")
        written["als"] = base
    features = features_baseline(cfg, tables, asof)
    if features is not None and table != "features":
        lists["features"] = rank(features.score_pairs(cands.select("user_id", "item_id", "pop_rank")), k) \
            .select("user_id", "item_id", "rank")
        written["features"] = features
    shadow = shadow_model(cfg, tables, asof, scorer)
    if shadow is scorer:  # the model served: what it would have added is what it added
        lists["shadow"], written["shadow"] = lists[table], scorer
    elif shadow is not None:  # the model the gate passed over, as it would have served the day
        slots = cold_slots(cfg, tables, asof)
        scored = shadow.score_pairs(cands.select("user_id", "item_id", "source", "als_rank", "pop_rank"))
        lists["shadow"] = rank_with_cold_slots(scored, cfg.score.top_n, slots["slots"] if slots else 0) \
            .where(F.col("rank") <= k).select("user_id", "item_id", "rank")
        written["shadow"] = shadow
    n_truth = truth.agg(F.count(F.lit(1)).alias("n")).first()["n"]
    truth.unpersist()
    bt = backtest.prepare(cfg, tables, asof)
    per_user: Optional[dict] = {} if cfg.evaluate.user_figures else None
    try:
        lists.update(backtest.baseline_lists(cfg, bt, asof, k))
        segs = backtest.Segments.of(bt, cfg.candidates.min_item_interactions, fit.users_with_factors())
        ranked = backtest.evaluate_lists(bt, lists, k, per_user=per_user, segments=segs)
    finally:
        bt.close()
    main = ranked[table]
    summary.update({f"recall@{k}": main[f"recall@{k}"], f"ndcg@{k}": main[f"ndcg@{k}"],
                    "ranking_users": main["truth_users"], "ranking_users_with_recs": main["truth_users_with_list"]})
    if b_summary is not None:
        summary["als"] = dict(b_summary, **{x: ranked["als"][x] for x in (f"recall@{k}", f"ndcg@{k}")})
    summary["rankers"] = ranked
    lifted = None
    if "features" in ranked and table != "features":  # the language model's own part: the table over the same signals
        lifted = summary["lm_lift"] = backtest.lift(main, ranked["features"], k)
    if per_user is not None:
        summary["per_user"] = {name: df.to_dict(orient="list") for name, df in per_user.items()}
    summary["served"] = scorer.model_version
    summary["backtest"] = dict(info, status="done", truth_pairs=n_truth, truth_users=main["truth_users"],
                               served_users=main["served_users"], served_truth_users=main["served_truth_users"])

    out = []
    for name, r in ranked.items():
        sc = written.get(name)
        version = sc.model_version if sc is not None else f"{name}:{ds}"
        als_run = getattr(sc, "run", {}).get("als_run_id") if sc is not None else None
        pair_rows = rows if name == table else (b_rows if name == "als" else [])  # baselines rank only
        extra = scorer.metric_rows() if name == table else []
        extra += backtest.lift_rows(lifted, "features", k) if name == table and lifted else []
        for m, seg, v, n, u, kk in pair_rows + extra + backtest.metric_rows(name, r, k):
            out.append((run_id, ds, asof.mode, asof.horizon_days, als_run, version, name, m, seg, kk, v, n, u))
    backtest.write_metrics(tables, out)
    return summary


def features_baseline(cfg: Config, tables: Tables, asof: AsOf) -> Optional[Scorer]:
    """The features-only ranker of the conf's gate decision as of the day, on the day's ALS fit (None: no model
    section, or nothing trained yet)."""
    if cfg.model is None or not cfg.model.signals:
        return None
    found = serving.decision_as_of(tables, asof, cfg)
    if found is None or found["features"] in (None, "{}"):
        return None
    return resolve(cfg, tables, asof, f"features:{found['gate_id']}")


def shadow_model(cfg: Config, tables: Tables, asof: AsOf, served: Scorer) -> Optional[Scorer]:
    """With evaluate.shadow: the CoLLM model of the conf's gate decision as of the day (`served` itself when it
    is that model; None: off, or no decision or model)."""
    if not cfg.evaluate.shadow or cfg.score.scorer != "collm":
        return None
    found = serving.decision_as_of(tables, asof, cfg)
    if found is None or not found.get("model_version"):
        return None
    ref = f"collm:{found['model_version']}"
    return served if served.model_version == ref else resolve(cfg, tables, asof, ref)


def pending_days(cfg: Config, tables: Tables, ds: str) -> list[str]:
    """Earlier days of the last evaluate.catch_up_days with a table, no backtest yet, and a completed horizon."""
    n = cfg.evaluate.catch_up_days
    if cfg.asof.mode != "daily" or n == 0 or not tables.exists("recommendations"):
        return []
    start = (dt.date.fromisoformat(ds) - dt.timedelta(days=n)).isoformat()
    days = {str(r["ds"]) for r in tables.read("recommendations")
            .where((F.col("ds") >= F.lit(start).cast("date")) & (F.col("ds") < F.lit(ds).cast("date")))
            .select("ds").distinct().collect()}
    if tables.exists("metrics"):
        days -= {str(r["ds"]) for r in tables.read("metrics").where(F.col("ds") >= F.lit(start).cast("date"))
                 .select("ds").distinct().collect()}
    return sorted(d for d in days if backtest_status(tables, AsOf.of(cfg, d))[0])


def run(ctx: StageContext) -> dict:
    """The day's backtest (see the module docstring), the catch-up of earlier days, and (evaluate.report) the
    day's report."""
    spark, cfg, tables, ds, run_id = ctx.spark, ctx.base_cfg or ctx.cfg, ctx.tables, ctx.ds, ctx.run_id
    summary = evaluate_day(spark, cfg, tables, ds, run_id)
    caught_up = {}
    for d in pending_days(cfg, tables, ds):
        r = evaluate_day(spark, cfg, tables, d, run_id)
        caught_up[d] = {x: r.get(x) for x in (f"recall@{cfg.evaluate.k}", f"ndcg@{cfg.evaluate.k}")}
    if caught_up:
        summary["caught_up"] = caught_up
    if cfg.evaluate.report:
        summary.update(report(spark, cfg, tables, ds))
    return summary


def report(spark: SparkSession, cfg: Config, tables: Tables, ds: str) -> dict:
    """{'report': path of the day's HTML report}, or {'report_error': why} when it could not be written.

    The metrics are the stage's product and are committed by now; the report is a view of them, so a report
    that fails (an unwritable directory, say) is logged and named in the summary instead of failing the
    stage, whose rerun would append the same metrics again."""
    from collm_udf.spark.report_data import write_report

    try:
        return {"report": write_report(spark, cfg, tables, ds)}
    except Exception as e:  # noqa: BLE001
        log.warning("evaluate: the report for ds=%s was not written: %s", ds, e, exc_info=True)
        return {"report_error": f"{type(e).__name__}: {e}"}
