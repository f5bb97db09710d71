"""Stage 6, candidates: for each user of the day's audience, ALS's top-K unseen items, the recently popular
unseen items and the catalog's cold items.

candidates: ds DATE, user_id, item_id, source ('als' | 'popular' | 'cold'), als_rank INT, pop_rank INT,
            als_run_id        (partitioned by ds; a rerun of a day replaces that day)

Everything is as of the day's cutoff (collm_udf/spark/asof.py): "seen" = the user's interactions before it.
- audience: the users with an interaction in the last candidates.active_within_days before the cutoff (every
  known user when unset). Each of them gets candidates, with or without ALS factors.
- als: ALSModel.recommendForAllUsers of the day's ALS fit (asof: the newest fit not after the cutoff), restricted
  to items with >= min_item_interactions known interactions, asked for K plus enough extra items to cover the
  seen ones it drops (capped by candidates.seen_buffer). Users the fit does not know get none.
- popular: the popular_k most interacted items of the last recent_days that the user has not seen (ties: all
  known interactions). It is what fills a user without factors, and what a user's list falls back to.
- cold: catalog items without any known interaction (text-only for a scorer), up to max_cold_items, by id.
A pair offered by several sources is kept once, named after the first of als, popular, cold, with both ranks.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.context import StageContext
from collm_udf.spark.stages import als, idmap
from collm_udf.spark.asof import AsOf, popular_unseen, popularity_order, served_users
from collm_udf.spark.tables import Tables

SOURCES = ("als", "popular", "cold")


def cold_items(cfg: Config, tables: Tables, known: DataFrame) -> DataFrame:
    cold = tables.read("items").select("item_id").join(known.select("item_id").distinct(), "item_id", "left_anti")
    return cold.orderBy("item_id").limit(cfg.candidates.max_cold_items)


def als_candidates(cfg: Config, tables: Tables, run: dict, known: DataFrame, users: DataFrame) -> DataFrame:
    seen = known.select("user_id", "item_id").distinct()
    counts = known.groupBy("item_id").count()
    eligible = counts.where(F.col("count") >= cfg.candidates.min_item_interactions).select("item_id")
    max_seen = seen.groupBy("user_id").count().agg(F.max("count")).first()[0] or 0
    n_ineligible = counts.count() - eligible.count()
    k_fetch = cfg.candidates.top_k + min(max_seen + n_ineligible, cfg.candidates.seen_buffer)
    user_idx = idmap.indices(tables, "user", "user").join(users, "user_id")
    recs = als.load_model(run).recommendForUserSubset(user_idx.select("user_idx"), k_fetch)
    flat = (recs.select("user_idx", F.posexplode("recommendations").alias("pos", "rec"))
            .select("user_idx", F.col("rec.item_idx").alias("item_idx"), "pos"))
    flat = (flat.join(user_idx, "user_idx")
            .join(idmap.indices(tables, "item", "item"), "item_idx")
            .join(eligible, "item_id")
            .join(seen, ["user_id", "item_id"], "left_anti"))
    w = Window.partitionBy("user_id").orderBy("pos")
    return (flat.withColumn("als_rank", F.row_number().over(w)).where(F.col("als_rank") <= cfg.candidates.top_k)
            .select("user_id", "item_id", F.col("als_rank").cast("int")))


def build(cfg: Config, tables: Tables, asof: AsOf, run: dict) -> DataFrame:
    """user_id, item_id, source, als_rank, pop_rank: the day's candidates (one row per pair)."""
    known = asof.known(tables.read("pairs"))
    users = served_users(cfg, asof, known)
    c = cfg.candidates
    warm = als_candidates(cfg, tables, run, known, users)
    popular = popular_unseen(users, known, popularity_order(known, asof, c.recent_days), c.popular_k, c.seen_buffer)
    cold = users.crossJoin(F.broadcast(cold_items(cfg, tables, known)))
    tagged = (warm.select("user_id", "item_id", F.lit(0).alias("_src"), "als_rank",
                          F.lit(None).cast("int").alias("pop_rank"))
              .unionByName(popular.select("user_id", "item_id", F.lit(1).alias("_src"),
                                          F.lit(None).cast("int").alias("als_rank"), "pop_rank"))
              .unionByName(cold.select("user_id", "item_id", F.lit(2).alias("_src"),
                                       F.lit(None).cast("int").alias("als_rank"),
                                       F.lit(None).cast("int").alias("pop_rank"))))
    names = F.element_at(F.array(*[F.lit(s) for s in SOURCES]), F.col("_src") + 1)
    return (tagged.groupBy("user_id", "item_id")
            .agg(F.min("_src").alias("_src"), F.min("als_rank").alias("als_rank"), F.min("pop_rank").alias("pop_rank"))
            .select("user_id", "item_id", names.alias("source"), "als_rank", "pop_rank"))


def run(ctx: StageContext) -> dict:
    cfg, tables, ds = ctx.cfg, ctx.tables, ctx.ds
    asof = AsOf.of(cfg, ds)
    run_ = als.run_as_of(tables, asof)
    out = build(cfg, tables, asof, run_).select(
        F.lit(ds).cast("date").alias("ds"), "user_id", "item_id", "source", "als_rank", "pop_rank",
        F.lit(run_["als_run_id"]).alias("als_run_id"))
    tables.replace_partition(out, "candidates", "ds", ds)
    c = tables.read("candidates").where(F.col("ds") == F.lit(ds).cast("date"))
    by_source = {r["source"]: r["count"] for r in c.groupBy("source").count().collect()}
    return {"candidates": sum(by_source.values()), **{f"{s}_candidates": by_source.get(s, 0) for s in SOURCES},
            "users": c.select("user_id").distinct().count(), "als_run_id": run_["als_run_id"]}
