"""Stage 7, evaluate: pair-wise AUC/UAUC on the test split and Recall/NDCG@k of the day's ranked table.

metrics: run_id, ds DATE, als_run_id, model_version, scorer, metric, segment, value DOUBLE, n_pairs LONG,
         n_users LONG, evaluated_at TIMESTAMP   (appended; one row per metric x segment)

- AUC: MLlib BinaryClassificationEvaluator without binning (numBins=0), i.e. the exact ROC area with tied
  scores handled as sklearn's roc_auc_score does.
- UAUC: as in CoLLM, the mean of per-user AUCs over users whose test pairs hold both classes (per-user AUC by
  sklearn, inside applyInPandas).
- Segments: all; warm (user and item each >= warm_min_interactions training interactions); cold (not warm);
  cold_item (item never in training). Pairs the scorer cannot score (ALS: no factors) get its fallback score,
  the uninformed prior, so a scorer is never credited for pairs it skips.
- Recall@k / NDCG@k: MLlib RankingEvaluator over the users with at least one positive test pair; a user with
  no recommendations counts with an empty list (zero), so coverage gaps show in the figure.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pyspark.ml.evaluation import BinaryClassificationEvaluator, RankingEvaluator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from collm_udf.config import Config
from collm_udf.metrics import SEGMENTS, segment_masks
from collm_udf.spark import idmap
from collm_udf.spark.score import Scorer, make_scorer
from collm_udf.spark.tables import Tables

log = logging.getLogger(__name__)


def segment_filter(segment: str):
    return {"all": F.lit(True), "warm": F.col("warm"), "cold": ~F.col("warm"),
            "cold_item": F.col("cold_item")}[segment]


def auc(df: DataFrame) -> float | None:
    """Exact ROC AUC of `score` against `label`; None when one class is absent."""
    if df.select("label").distinct().count() < 2:
        return None
    ev = BinaryClassificationEvaluator(rawPredictionCol="score", labelCol="label",
                                       metricName="areaUnderROC", numBins=0)
    return float(ev.evaluate(df.select(F.col("score").cast("double"), F.col("label").cast("double"))))


def _user_aucs(pdf: pd.DataFrame) -> pd.DataFrame:
    """One user's AUC in every segment where their pairs hold both classes.

    Module-level so that executors import it instead of unpickling a closure."""
    rows = []
    for seg, m in segment_masks(pdf).items():
        y = pdf["label"].to_numpy()[m]
        if len(np.unique(y)) == 2:
            rows.append((pdf["user_id"].iloc[0], seg, float(roc_auc_score(y, pdf["score"].to_numpy()[m]))))
    return pd.DataFrame(rows, columns=["user_id", "segment", "auc"])


def uauc(scored: DataFrame) -> dict[str, tuple[float | None, int]]:
    """Per segment: mean per-user AUC over users with both classes there, and the number of such users."""
    per_user = (scored.select("user_id", "label", F.col("score").cast("double"), "warm", "cold_item")
                .groupBy("user_id").applyInPandas(_user_aucs, "user_id string, segment string, auc double"))
    got = {r["segment"]: (float(r["m"]), int(r["n"])) for r in
           per_user.groupBy("segment").agg(F.avg("auc").alias("m"), F.count("*").alias("n")).collect()}
    return {seg: got.get(seg, (None, 0)) for seg in SEGMENTS}


def score_test_pairs(tables: Tables, scorer: Scorer) -> DataFrame:
    # history rides along: a text scorer reads each test pair's own history (earlier positives), as in training
    test = tables.read("pairs").where(F.col("split") == "test").select(
        "user_id", "item_id", "label", "warm", "cold_item", "history")
    scored = scorer.score_pairs(test)
    return scored.withColumn("score", F.coalesce(F.col("score"), F.lit(scorer.fallback_score())))


def ranking_frame(tables: Tables, ds: str, k: int, by_als: bool = False) -> DataFrame:
    """Per test user with a positive: pred = recommended item_idx by rank (top k), truth = positive item_idx.

    by_als: rank the day's candidates by ALS instead (als_rank; cold items have none), i.e. the table ALS alone
    would have written, to compare with the table the configured scorer wrote."""
    items = idmap.indices(tables, "item", "item")
    truth = (tables.read("pairs").where((F.col("split") == "test") & (F.col("label") == 1))
             .join(items, "item_id").groupBy("user_id")
             .agg(F.collect_set(F.col("item_idx").cast("double")).alias("truth")))
    if by_als:
        ranked = (tables.read("candidates").where((F.col("ds") == F.lit(ds).cast("date")) & (F.col("als_rank") <= k))
                  .withColumnRenamed("als_rank", "rank"))
    else:
        ranked = tables.read("recommendations").where((F.col("ds") == F.lit(ds).cast("date")) & (F.col("rank") <= k))
    recs = (ranked.join(items, "item_id").groupBy("user_id")
            .agg(F.array_sort(F.collect_list(F.struct("rank", F.col("item_idx").cast("double").alias("i"))))
                 .alias("r"))
            .select("user_id", F.col("r.i").alias("pred")))
    return (truth.join(recs, "user_id", "left")
            .withColumn("pred", F.coalesce("pred", F.array().cast("array<double>"))))


def ranking_metrics(frame: DataFrame, k: int) -> dict:
    out = {}
    for name, metric in (("recall", "recallAtK"), ("ndcg", "ndcgAtK")):
        ev = RankingEvaluator(predictionCol="pred", labelCol="truth", metricName=metric, k=k)
        out[f"{name}@{k}"] = float(ev.evaluate(frame))
    return out


def pair_metrics(tables: Tables, scorer: Scorer) -> tuple[dict, list]:
    """AUC and UAUC per segment on the test pairs: (summary, metric rows)."""
    scored = score_test_pairs(tables, scorer).cache()
    if scored.limit(1).count() == 0:
        scored.unpersist()
        return {}, []
    rows, summary = [], {"auc": {}, "uauc": {}, "pairs": {}}
    per_user = uauc(scored)
    for seg in SEGMENTS:
        part = scored.where(segment_filter(seg))
        counts = part.agg(F.count("*").alias("n"), F.countDistinct("user_id").alias("u")).first()
        a = auc(part) if counts["n"] else None
        u, n_users = per_user[seg]
        summary["auc"][seg], summary["uauc"][seg], summary["pairs"][seg] = a, u, counts["n"]
        rows += [("auc", seg, a, counts["n"], counts["u"]), ("uauc", seg, u, counts["n"], n_users)]
    scored.unpersist()
    return summary, rows


def ranking(tables: Tables, ds: str, k: int, by_als: bool = False) -> tuple[dict, list]:
    frame = ranking_frame(tables, ds, k, by_als).cache()
    n_users = frame.count()
    ranked = ranking_metrics(frame, k) if n_users else {f"recall@{k}": None, f"ndcg@{k}": None}
    summary = dict(ranked, ranking_users=n_users, ranking_users_with_recs=frame.where(F.size("pred") > 0).count())
    frame.unpersist()
    return summary, [(name.split("@")[0] + "_at_k", f"k={k}", v, None, n_users) for name, v in ranked.items()]


def run(spark: SparkSession, cfg: Config, tables: Tables, ds: str, run_id: str,
        scorer: Scorer | None = None) -> dict:
    """Metrics of the configured scorer; when it is not ALS, ALS's figures on the same day too (scorer 'als')."""
    from collm_udf.spark import als
    from collm_udf.spark.score import ALSScorer

    scorer = scorer or make_scorer(cfg, tables)
    k = cfg.evaluate.k
    summary, rows = pair_metrics(tables, scorer)
    if not summary:
        return {"skipped": "no test pairs (split has no test part)"}
    ranked, more = ranking(tables, ds, k)
    summary.update(ranked)
    written = [(scorer, rows + more)]
    if not isinstance(scorer, ALSScorer):
        base = ALSScorer(tables, als.latest_run(tables))
        b_summary, b_rows = pair_metrics(tables, base)
        b_ranked, b_more = ranking(tables, ds, k, by_als=True)
        summary["als"] = dict(b_summary, **b_ranked)
        written.append((base, b_rows + b_more))

    out = []
    for sc, rs in written:
        als_run_id = getattr(sc, "run", {}).get("als_run_id")
        out += [(run_id, ds, als_run_id, sc.model_version, sc.name, m, s, v, n, u) for m, s, v, n, u in rs]
    df = spark.createDataFrame(out, "run_id string, ds string, als_run_id string, model_version string, "
                               "scorer string, metric string, segment string, value double, n_pairs long, "
                               "n_users long")
    df = df.withColumn("ds", F.col("ds").cast("date")).withColumn("evaluated_at", F.current_timestamp())
    tables.append(df, "metrics")
    summary.update(report(spark, cfg, tables, ds))
    return summary


def report(spark: SparkSession, cfg: Config, tables: Tables, ds: str) -> dict:
    """{'report': path of the day's HTML report}, or {'report_error': why} when it could not be written.

    The metrics are the stage's product and are committed by now; the report is a view of them, so a report
    that fails (an unwritable directory, say) is logged and named in the summary instead of failing the
    stage, whose rerun would append the same metrics again."""
    from collm_udf.spark.report import write_report

    try:
        return {"report": write_report(spark, cfg, tables, ds)}
    except Exception as e:  # noqa: BLE001
        log.warning("evaluate: the report for ds=%s was not written: %s", ds, e, exc_info=True)
        return {"report_error": f"{type(e).__name__}: {e}"}
