"""Stage 6, score and write: rank each user's candidates with a Scorer and write the daily table.

recommendations: ds DATE, user_id, item_id, rank INT (1 = best), score DOUBLE (what ranked) = lm_score DOUBLE
                 (the LM's part; null when no LM ranked the row) + signal_score DOUBLE (the rest: the skip's part,
                 bias included, or the whole score of a ranker without an LM), als_score DOUBLE, source ('als' |
                 'popular' | 'text' | 'cold'), als_run_id, model_version, generated_at TIMESTAMP
                 (partitioned by ds; a rerun of a day replaces that day's partition, never duplicates it)

After the write: the latest view (catalog tables) and retention (tables.retention_days): collm_udf/spark/publish.py.

A Scorer (collm_udf/spark/scorers/) maps a frame of (user_id, item_id, ...) pairs to the same frame plus a `score`
column; it is all this stage knows of a model. make_scorer picks what serves the day: ALS, or what the newest
promotion-gate decision of the conf serves (a CoLLM model, the features-only ranker, ALS or a popularity list,
whose pairs are the list itself), or score.fallback when nothing was trained yet. All are the day's, as of its
cutoff (the newest ALS fit, model and decision not after it). Pairs a scorer cannot score
(ALS: a user or item without factors) rank after the scored ones in recent-popularity order, so a user without
factors still gets top_n rows; remaining ties are broken by item_id so that a rerun ranks identically.
With score.cold_slots, the cold sources' best-scored items (text neighbours, cold catalog items) get a floor in
each list: as many slots as cold items' share of the recent likes, each cold pair listed at its score's place or
its slot, whichever is earlier (cold_slots; the run summary says the share, the slots and their positions).
"""
from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark import publish
from collm_udf.spark.asof import AsOf
from collm_udf.spark.context import StageContext
from collm_udf.spark.scorers import ALSScorer, Scorer, cold_slots, make_scorer, rank_with_cold_slots
from collm_udf.spark.stages import als
from collm_udf.spark.progress import spark_progress
from collm_udf.spark.session import session_conf
from collm_udf.spark.tables import Tables


def run(ctx: StageContext) -> dict:
    """Score the day's candidates with the conf's scorer and replace the day's partition of recommendations."""
    return write_day(ctx, make_scorer(ctx.cfg, ctx.tables, AsOf.of(ctx.cfg, ctx.ds)))


def write_day(ctx: StageContext, scorer: Scorer) -> dict:
    """Rank the day's candidates with `scorer` and replace the day's partition of recommendations. The
    context's `progress` gets a line every ~15 s while the scoring runs long (collm_udf/spark/progress.py)."""
    spark, cfg, tables, ds, progress = ctx.spark, ctx.cfg, ctx.tables, ctx.ds, ctx.progress
    asof = AsOf.of(cfg, ds)
    cands = tables.read("candidates").where(F.col("ds") == F.lit(ds).cast("date"))
    if cands.limit(1).count() == 0:
        raise ValueError(f"table candidates: no rows for ds={ds}; run the candidates stage for that day")
    if "pop_rank" not in cands.columns:  # candidates written before the popular source existed
        cands = cands.withColumn("pop_rank", F.lit(None).cast("int"))
    cands = scorer.pool(cands, cfg.score.top_n)  # a popularity list brings its own pairs
    # The ALS score rides along in the daily table whatever ranks it; when ALS ranks, it is computed once.
    als_scorer = scorer if isinstance(scorer, ALSScorer) else ALSScorer(tables, als.run_as_of(tables, asof))
    with_als = als_scorer.score_pairs(cands).withColumnRenamed("score", "als_score")
    if scorer is als_scorer:
        scored = with_als.withColumn("score", F.col("als_score"))
    else:
        scored = scorer.score_pairs(with_als)
    # score = lm_score + signal_score: a scorer with an LM (CoLLM) gives both parts; for any other ranker the LM's
    # part is null and the whole score is the signals'
    if "lm_score" not in scored.columns:
        scored = scored.withColumn("lm_score", F.lit(None).cast("double")).withColumn("signal_score", F.col("score"))
    slots = cold_slots(cfg, tables, asof)
    out = rank_with_cold_slots(scored, cfg.score.top_n, slots["slots"] if slots else 0).select(
        "ds", "user_id", "item_id", F.col("rank").cast("int").alias("rank"), "score", "lm_score", "signal_score",
        "als_score", "source", "als_run_id", F.lit(scorer.model_version).alias("model_version"),
        F.current_timestamp().alias("generated_at"))
    with arrow_batch_rows(spark, cfg.score.arrow_batch_rows), \
            spark_progress(spark, f"score ds={ds}", progress, rows=cands.count, unit="pairs"):
        # Scored once: the guard counts and the write read the same persisted rows.
        out = out.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            got = out.agg(F.count("*").alias("rows"), F.countDistinct("user_id").alias("users")).first()
            guard_output(cfg, tables, ds, int(got["rows"]), int(got["users"]))
            tables.replace_partition(out, "recommendations", "ds", ds)
        finally:
            out.unpersist()
    # the written partition is exactly the persisted rows the guard counted
    result = {"recommendations": int(got["rows"]), "users": int(got["users"]), "model_version": scorer.model_version}
    if slots:
        result["cold_slots"] = slots
    retention = publish.apply_retention(tables, cfg.tables.retention_days, ds)
    if retention is not None:
        result["retention"] = retention
    view = publish.refresh_latest_view(tables)
    if view is not None:
        result["latest_view"] = view
    if hasattr(scorer, "describe"):
        result["scorer"] = scorer.describe()
        if "drift" in result["scorer"] and progress is not None:
            progress(f"[score] ds={ds}: the day's ALS factors did not align with the model's; scored "
                     f"with the model's own ALS run: {result['scorer']['drift']['reason']}")
    return result


class OutputGuardError(RuntimeError):
    """The day's output is empty or too small next to the latest earlier day's: nothing was written."""


def guard_output(cfg: Config, tables: Tables, ds: str, rows: int, users: int) -> None:
    if rows == 0:
        raise OutputGuardError(f"table recommendations, ds={ds}: the scored output is empty; nothing written "
                               "(the previous partition of that day, if any, is unchanged)")
    if not tables.exists("recommendations"):
        return
    prev = (tables.read("recommendations").where(F.col("ds") < F.lit(ds).cast("date"))
            .groupBy("ds").agg(F.count("*").alias("rows"), F.countDistinct("user_id").alias("users"))
            .orderBy(F.col("ds").desc()).first())
    s = cfg.score
    if prev is None or prev["users"] < s.guard_min_users:
        return
    for what, now, before, frac in (("rows", rows, prev["rows"], s.min_rows_fraction),
                                    ("users", users, prev["users"], s.min_users_fraction)):
        if now < frac * before:
            raise OutputGuardError(
                f"table recommendations, ds={ds}: {now} {what} is below {frac:g} x the {before} {what} of "
                f"ds={prev['ds']} (score.min_{what}_fraction); nothing written, the day's previous partition "
                "(if any) is unchanged")


def arrow_batch_rows(spark: SparkSession, rows: int):
    """The Arrow batch size for the UDF while this stage runs; the caller's session gets its value back."""
    return session_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", str(rows))
