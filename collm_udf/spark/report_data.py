"""The evaluation report on Spark: aggregate the tables of one day into small pandas frames, then render them
with collm_udf.report (index.html + PNG figures).

Everything is aggregated in Spark (histogram bins, bucket counts, distinct counts); only a few hundred rows
come to the driver, so the report costs the same whatever the size of the day's recommendation table.
Called at the end of the evaluate stage and by `collm report --conf --ds [--out]`.
"""
from __future__ import annotations

import json
import logging
import os

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.core.promotion import fmt_lead
from collm_udf.report import POPULARITY_EDGES, ReportData, popularity_bucket_labels, render_html
from collm_udf.spark import serving, tempo
from collm_udf.spark.stages import als
from collm_udf.spark.asof import AsOf, backtest_status, history_as_of
from collm_udf.spark.scorers.als import ALSScorer
from collm_udf.spark.tables import Tables, check_ds

log = logging.getLogger(__name__)

HIST_BINS = 30


def default_out_dir(cfg: Config, ds: str) -> str:
    """<evaluate.report_dir>, else <tables.root>/reports, else <tables.models_dir>/reports; then ds=<ds>/."""
    base = cfg.evaluate.report_dir
    if base is None:
        parent = cfg.tables.root if cfg.tables.root is not None else cfg.tables.models_dir
        base = os.path.join(parent, "reports")
    if "://" in base and not base.startswith("file:"):
        raise ValueError(f"report directory {base!r} is not a local or mounted path (e.g. /Volumes/...); the "
                         "report is written with local file APIs: set evaluate.report_dir")
    return os.path.join(os.path.abspath(base.removeprefix("file:")), f"ds={ds}")


def _day(tables: Tables, name: str, ds: str) -> DataFrame:
    return tables.read(name).where(F.col("ds") == F.lit(ds).cast("date"))


def metrics_frame(tables: Tables, ds: str) -> tuple[pd.DataFrame, str | None]:
    """The metric rows of the day's latest evaluation run (a day evaluated twice shows its last run)."""
    cols = ["scorer", "model_version", "metric", "segment", "k", "value", "n_pairs", "n_users"]
    if not tables.exists("metrics"):
        return pd.DataFrame(columns=cols), None
    day = _day(tables, "metrics", ds)
    if "k" not in day.columns:  # metrics written before k had its own column
        day = day.withColumn("k", F.regexp_extract("segment", r"^k=(\d+)$", 1).cast("int"))
    last = day.orderBy(F.col("evaluated_at").desc(), F.col("run_id").desc()).select("run_id").first()
    if last is None:
        return pd.DataFrame(columns=cols), None
    # the gate's rows (the train stage's held-out comparison) have a section of their own (gate_frame)
    got = day.where((F.col("run_id") == last["run_id"]) & (F.col("segment") != "gate")).select(*cols).toPandas()
    return got, last["run_id"]


def gate_frame(cfg: Config, tables: Tables, ds: str) -> tuple[pd.DataFrame | None, str]:
    """The gate decision serving the day: each candidate ranker's held-out figures, and a line saying when it was
    decided, what serves and why."""
    if cfg.model is None or cfg.score.scorer == "als" or not tables.exists("gate"):
        return None, ""
    found = serving.decision_as_of(tables, AsOf.of(cfg, ds), cfg)
    if found is None:
        return None, ""
    res = json.loads(found["results"] or "{}")
    k = found["k"]
    rows = [{"ranker": name, "serves": r.get("serves"), f"NDCG@{k}": r.get("ndcg"), f"Recall@{k}": r.get("recall"),
             "served truth users": r.get("served_truth_users"),
             "NDCG lead (CI)": fmt_lead(r["ndcg_lead"]) if "ndcg_lead" in r else "",
             "Recall lead (CI)": fmt_lead(r["recall_lead"]) if "recall_lead" in r else "",
             "proven": r.get("proven", "")} for name, r in res.items()]
    note = (f"Decided by the training of {found['ds']}: {found['served']} serves "
            f"({'promoted' if found['promoted'] else 'not promoted'}): {found['reason']}.")
    return (pd.DataFrame(rows) if rows else None), note


def histogram(df: DataFrame, value: str, series: Column, panel: str, bins: int = HIST_BINS) -> pd.DataFrame:
    """panel, series, lo, hi, count: `bins` equal-width bins over the value's range (nulls and NaN left out),
    shared by every series so that they overlay. Empty bins are kept (zero), so a series draws as a step."""
    v = F.col(value).cast("double")
    df = df.where(v.isNotNull() & ~F.isnan(v))
    r = df.agg(F.min(v).alias("lo"), F.max(v).alias("hi"), F.count(F.lit(1)).alias("n")).first()
    if r is None or not r["n"]:
        return pd.DataFrame(columns=["panel", "series", "lo", "hi", "count"])
    lo, hi = float(r["lo"]), float(r["hi"])
    width = (hi - lo) / bins if hi > lo else 1.0
    b = F.least(F.lit(bins - 1), F.floor((v - F.lit(lo)) / F.lit(width)).cast("int"))
    got = df.groupBy(series.alias("series"), b.alias("bin")).count().toPandas()
    full = pd.MultiIndex.from_product([sorted(got["series"].unique()), range(bins)], names=["series", "bin"])
    out = got.set_index(["series", "bin"]).reindex(full, fill_value=0).reset_index()
    out["lo"] = lo + out["bin"] * width
    out["hi"] = out["lo"] + width
    out["panel"] = panel
    return out[["panel", "series", "lo", "hi", "count"]]


def _als_run(tables: Tables, recs: DataFrame, asof: AsOf) -> dict | None:
    """The ALS run behind the day's table (its als_run_id), else the day's fit."""
    row = recs.where(F.col("als_run_id").isNotNull()).select("als_run_id").first()
    found = als.find_run(tables, row["als_run_id"]) if row is not None else None
    return found or als.run_as_of(tables, asof, required=False)


def score_histograms(tables: Tables, recs: DataFrame, asof: AsOf, bins: int = HIST_BINS) -> pd.DataFrame:
    """The LM's and the signals' parts of the score and the ALS score of the day's recommendations (by source),
    and the ALS score of the labelled truth pairs (when the day's truth exists).

    The LM's truth-pair scores are not redone here: scoring them again would cost as much as the evaluate
    stage's own scoring pass."""
    source = (F.when(F.col("source") == "als", F.lit("ALS candidates"))
              .when(F.col("source") == "popular", F.lit("recently popular"))
              .when(F.col("source") == "text", F.lit("text neighbours (cold)"))
              .when(F.col("source") == "cold", F.lit("cold items")).otherwise(F.col("source")))
    parts = [histogram(recs, "lm_score", source, "LM part of the score (lm_score)", bins),
             histogram(recs, "signal_score", source, "Signals' part of the score (signal_score)", bins),
             histogram(recs, "als_score", source, "ALS score of the day's recommendations", bins)]
    run = _als_run(tables, recs, asof)
    if run is not None and tables.exists("pairs"):
        test = asof.truth(tables.read("pairs")).select("user_id", "item_id", "label")
        scored = ALSScorer(tables, run).score_pairs(test)
        label = F.when(F.col("label") == 1, F.lit("liked (label 1)")).otherwise(F.lit("not liked (label 0)"))
        parts.append(histogram(scored, "score", label, "ALS score of the day's truth pairs by label", bins))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["panel", "series", "lo", "hi", "count"])


def _bucket(count: Column) -> Column:
    labels = popularity_bucket_labels()
    expr = F.lit(labels[-1])
    for lo, label in reversed(list(zip(POPULARITY_EDGES[1:], labels[:-1]))):
        expr = F.when(count < F.lit(lo), F.lit(label)).otherwise(expr)
    return expr


def coverage(tables: Tables, ds: str, recs: DataFrame, asof: AsOf, top: int = 10) \
        -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(coverage counts, popularity buckets, most recommended items) of the day; popularity = interactions in
    what the day's ALS fit saw."""
    items = tables.read("items").select("item_id", "text").dropDuplicates(["item_id"])
    train = asof.fit(tables.read("pairs")).groupBy("item_id").agg(F.count(F.lit(1)).alias("train_count"))
    catalog = items.join(train, "item_id", "left").fillna(0, ["train_count"])
    rec_pop = recs.select("item_id").join(train, "item_id", "left").fillna(0, ["train_count"])
    # one job per frame: bucket counts and sums, whose totals give the frame's size and mean
    buckets, totals = pd.DataFrame({"bucket": popularity_bucket_labels()}), {}
    for name, df in (("catalog", catalog), ("recommended", rec_pop)):
        got = df.groupBy(_bucket(F.col("train_count")).alias("bucket")) \
            .agg(F.count(F.lit(1)).alias("n"), F.sum("train_count").alias("s")).toPandas()
        buckets[name] = buckets["bucket"].map(dict(zip(got["bucket"], got["n"]))).fillna(0).astype("int64")
        totals[name] = (int(got["n"].sum()), float(got["s"].sum()))
    cov: dict = {"catalog_items": totals["catalog"][0]}
    if tables.exists("candidates"):
        cov["candidate_items"] = _day(tables, "candidates", ds).select("item_id").distinct().count()
    # the day's totals and each source's distinct items in one pass (rollup's grand total: grouping = 1; an
    # empty day has no rows at all)
    cov.update(recommended_items=0, users=0, rows=0)
    by_source = recs.rollup("source").agg(F.grouping("source").alias("total"),
                                          F.countDistinct("item_id").alias("items"),
                                          F.countDistinct("user_id").alias("users"), F.count(F.lit(1)).alias("rows"))
    for row in by_source.orderBy("source").collect():
        if row["total"]:
            cov.update(recommended_items=int(row["items"]), users=int(row["users"]), rows=int(row["rows"]))
        else:
            cov[f"items_{row['source']}"] = int(row["items"])
    cov["catalog_share"] = round(cov["recommended_items"] / cov["catalog_items"], 4) if cov["catalog_items"] else None
    n, total = totals["catalog"]
    cov["mean_train_count_catalog"] = round(total / n, 2) if n else 0.0
    n, total = totals["recommended"]
    cov["mean_train_count_recommended"] = round(total / n, 2) if n else None

    top_items = (recs.groupBy("item_id").agg(F.count(F.lit(1)).alias("recommendations"))
                 .orderBy(F.col("recommendations").desc(), "item_id").limit(top)
                 .join(catalog, "item_id", "left").orderBy(F.col("recommendations").desc(), "item_id")
                 .select(F.col("item_id").alias("item"), "text", "recommendations", "train_count").toPandas())
    return cov, buckets, top_items


def signal_score(recs: DataFrame) -> Column:
    """recommendations.signal_score; null in a table written before schema version 2 added it."""
    return F.col("signal_score") if "signal_score" in recs.columns else F.lit(None).cast("double").alias("signal_score")


def example_recommendations(cfg: Config, tables: Tables, ds: str, users: int = 3, per_user: int = 5) -> pd.DataFrame:
    """The first `users` users (by id) of the day: history titles (their latest positives before the cutoff, as
    the scorer saw them) and top `per_user` recommendations with titles and scores."""
    recs = _day(tables, "recommendations", ds)
    who = [r["user_id"] for r in recs.select("user_id").distinct().orderBy("user_id").limit(users).collect()]
    cols = ["user_id", "history", "rank", "item", "score", "lm_score", "signal_score", "als_score", "source"]
    if not who:
        return pd.DataFrame(columns=cols)
    items = tables.read("items").select("item_id", "text")
    known = AsOf.of(cfg, ds).known(tables.read("pairs"))
    hist = (history_as_of(known.where(F.col("user_id").isin(who)), cfg.prepare.history_len)
            .select("user_id", F.posexplode("history").alias("pos", "item_id")).join(items, "item_id", "left")
            .toPandas())
    titles = {u: "; ".join(g.sort_values("pos")["text"].fillna("?")) for u, g in hist.groupby("user_id")}
    top = (recs.where(F.col("user_id").isin(who) & (F.col("rank") <= per_user)).join(items, "item_id", "left")
           .select("user_id", "rank", F.coalesce("text", "item_id").alias("item"), "score", "lm_score",
                   signal_score(recs), "als_score", "source").toPandas().sort_values(["user_id", "rank"]))
    top.insert(1, "history", top["user_id"].map(titles).fillna(""))
    return top[cols].reset_index(drop=True)


def holdout(tables: Tables, model_version: str | None) -> dict:
    """Holdout AUC after the model's stage 1 (text-only) and stage 2 (CoLLM), for a CoLLM-ranked day."""
    if not model_version or not model_version.startswith("collm:") or not tables.exists("collm_models"):
        return {}
    row = tables.read("collm_models").where(F.col("model_version") == model_version.removeprefix("collm:")).first()
    if row is None:
        return {}
    return {k: float(v) for k, v in (("text-only", row["holdout_auc_text"]), ("CoLLM", row["holdout_auc_cf"]))
            if v is not None}


def collect(spark: SparkSession, cfg: Config, tables: Tables, ds: str) -> ReportData:
    """The report's frames for day `ds` (see collm_udf.report.ReportData); `cfg` as loaded (with tempo, the day's
    settings are derived here)."""
    ds = check_ds(ds)
    cfg, _ = tempo.derive(cfg, tables, ds)
    metrics, run_id = metrics_frame(tables, ds)
    if tables.exists("recommendations"):
        day = _day(tables, "recommendations", ds)
        recs = day.select("user_id", "item_id", "rank", "lm_score", signal_score(day), "als_score", "source",
                          "als_run_id", "model_version")
    else:
        recs = spark.createDataFrame([], "user_id string, item_id string, rank int, lm_score double, signal_score "
                                     "double, als_score double, source string, als_run_id string, "
                                     "model_version string")
    # Read once for the several aggregations below (the day's partition only).
    recs = recs.cache()
    try:
        version = recs.select("model_version").first()
        version = version["model_version"] if version is not None else None
        asof = AsOf.of(cfg, ds)
        cov, pop, top_items = coverage(tables, ds, recs, asof)
        hists = score_histograms(tables, recs, asof)
    finally:
        recs.unpersist()
    ready, why = backtest_status(tables, asof) if tables.exists("pairs") else (False, "no pairs table yet")
    note = f"ds={ds}, judged by {why}" if ready else why.replace("; nothing written", "")
    if ready and metrics.empty:
        note += " (not evaluated yet: run the evaluate stage for this day)"
    gate, gate_note = gate_frame(cfg, tables, ds)
    return ReportData(name=cfg.name, ds=ds, metrics=metrics, hists=hists, popularity=pop, coverage=cov,
                      run_id=run_id, model_version=version, holdout=holdout(tables, version),
                      examples=example_recommendations(cfg, tables, ds), top_items=top_items, backtest=note,
                      gate=gate, gate_note=gate_note)


def write_report(spark: SparkSession, cfg: Config, tables: Tables, ds: str, out_dir: str | None = None,
                 data: ReportData | None = None) -> str:
    """Write the day's report (index.html + PNGs) to out_dir (default: default_out_dir); returns index.html.
    `data`: the day's frames when the caller has collected them already (collect)."""
    ds = check_ds(ds)
    out = out_dir or default_out_dir(cfg, ds)
    if data is not None and data.ds != ds:
        raise ValueError(f"write_report: the report data is of ds={data.ds}, not ds={ds}")
    path = render_html(data if data is not None else collect(spark, cfg, tables, ds), out)
    log.info("report for ds=%s: %s", ds, path)
    return path
