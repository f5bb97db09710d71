"""Stage 6, candidates: for each user of the day's audience, ALS's top-K unseen items, the recently popular
unseen items and the catalog's cold items.

candidates: ds DATE, user_id, item_id, source ('als' | 'popular' | 'text' | 'cold'), als_rank INT, pop_rank INT,
            als_run_id        (partitioned by ds; a rerun of a day replaces that day)

Everything is as of the day's cutoff (collm_udf/spark/asof.py): "seen" = the user's interactions before it.
- audience: the users with an interaction in the last candidates.active_within_days before the cutoff (every
  known user when unset). Each of them gets candidates, with or without ALS factors.
- als: the top_k unseen items by u . v of the day's ALS fit (asof: the newest fit not after the cutoff), among
  items with >= min_item_interactions known interactions (an exact search with the seen items masked,
  als_candidates). Users the fit does not know get none.
- popular: the popular_k most interacted items of the last recent_days that the user has not seen (ties: all
  known interactions). It is what fills a user without factors, and what a user's list falls back to.
- text: the text_k items the user has not seen, among those ALS leaves out (fewer than min_item_interactions known
  interactions, never-seen ones included), whose texts are nearest to the user's history, the lately
  interacted ones first as far as text_recency says (collm_udf/spark/text_neighbours.py). Users without a
  positive history get none.
- cold: catalog items without any known interaction (text-only for a scorer), up to max_cold_items, by id.
A pair offered by several sources is kept once, named after the first of als, popular, text, cold, with both ranks.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from collm_udf.config import Config
from collm_udf.core.topk import best_k, masked_scores
from collm_udf.spark.context import StageContext
from collm_udf.spark.stages import als
from collm_udf.spark.asof import AsOf, popular_unseen, popularity_order, recent_counts, served_users
from collm_udf.spark.tables import Tables
from collm_udf.spark.task import task_cpus
from collm_udf.spark.text_neighbours import text_candidates

SOURCES = ("als", "popular", "text", "cold")
ALS_CANDIDATES = T.StructType([T.StructField("user_id", T.StringType()), T.StructField("item_id", T.StringType()),
                               T.StructField("als_rank", T.IntegerType())])
USERS_PER_CHUNK = 512  # the search's (users, items) score matrix: 512 x 50k floats = 100 MB


def cold_items(cfg: Config, tables: Tables, known: DataFrame) -> DataFrame:
    cold = tables.read("items").select("item_id").join(known.select("item_id").distinct(), "item_id", "left_anti")
    return cold.orderBy("item_id").limit(cfg.candidates.max_cold_items)


def rare_items(cfg: Config, tables: Tables, known: DataFrame, asof: AsOf) -> DataFrame:
    """item_id, _recent: the catalog's items with fewer than min_item_interactions known interactions (none
    included), with their interactions in the last recent_days (0 for none)."""
    warm = known.groupBy("item_id").count().where(F.col("count") >= cfg.candidates.min_item_interactions)
    rare = tables.read("items").select("item_id").join(warm.select("item_id"), "item_id", "left_anti")
    return (rare.join(recent_counts(known, asof, cfg.candidates.recent_days), "item_id", "left")
            .fillna(0, ["_recent"]))


def als_candidates(cfg: Config, tables: Tables, run: dict, known: DataFrame, users: DataFrame) -> DataFrame:
    """user_id, item_id, als_rank (1..top_k): each user's top_k items by the ALS fit's u . v among the items that
    are eligible (>= min_item_interactions) and unseen by the user. Users the fit does not know get none.

    An exact search in a pandas UDF, distributed over users: each task holds the eligible items' factors (a
    broadcast, items x rank floats) and scores a chunk of users against all of them at once, with each user's
    seen items masked out before the top-k. MLlib's recommendForUserSubset cannot leave items out, so it had to be
    asked for top_k plus up to seen_buffer more and the list filtered after: at 20M interactions (46k users, 50k
    items, half of them too rare) that long top-k ran over 10 minutes (benchmarks/README.md, Scale)."""
    c = cfg.candidates
    rid = run["als_run_id"]
    spark = known.sparkSession
    counts = known.groupBy("item_id").count().where(F.col("count") >= c.min_item_interactions)
    rows = (tables.read("item_factors").where(F.col("als_run_id") == rid).join(counts.select("item_id"), "item_id")
            .select("item_id", "features").orderBy("item_id").collect())
    if not rows:
        return spark.createDataFrame([], ALS_CANDIDATES)
    bc = spark.sparkContext.broadcast((np.array([r["item_id"] for r in rows], dtype=object),
                                       np.stack([np.asarray(r["features"], np.float32) for r in rows])))
    seen = (known.select("user_id", "item_id").join(users, "user_id").groupBy("user_id")
            .agg(F.collect_set("item_id").alias("_seen")))
    factors = (tables.read("user_factors").where(F.col("als_run_id") == rid).join(users, "user_id")
               .join(seen, "user_id", "left").select("user_id", "features", "_seen"))
    k = c.top_k

    def search(batches):
        from threadpoolctl import threadpool_limits

        ids, items = bc.value
        where = pd.Index(ids)
        with threadpool_limits(max(1, task_cpus())):  # BLAS threads: the task's cores, not the machine's
            for pdf in batches:
                for s in range(0, len(pdf), USERS_PER_CHUNK):  # (chunk, items) floats at a time
                    part = pdf.iloc[s:s + USERS_PER_CHUNK]
                    cols = [None if v is None else where.get_indexer(v) for v in part["_seen"]]
                    scores = masked_scores(np.stack(part["features"].to_numpy()), items,
                                           [None if j is None else j[j >= 0] for j in cols])
                    best = best_k(scores, k)
                    user, rank = np.nonzero(best >= 0)
                    yield pd.DataFrame({"user_id": part["user_id"].to_numpy()[user], "item_id": ids[best[user, rank]],
                                        "als_rank": (rank + 1).astype(np.int32)})

    return factors.mapInPandas(search, ALS_CANDIDATES)


def capped_users(users: DataFrame, max_users: int, seed: int) -> DataFrame:
    """`users` (user_id), or when they are more than max_users > 0, the max_users lowest in a seeded hash of the
    user id: the same users on every run, and a user kept at a cap is kept at any larger one."""
    if max_users <= 0 or users.count() <= max_users:
        return users
    key = F.xxhash64(F.lit("collm-pool"), F.lit(seed), F.col("user_id"))
    return users.select("user_id", key.alias("_h")).orderBy("_h", "user_id").limit(max_users).select("user_id")


def build(cfg: Config, tables: Tables, asof: AsOf, run: dict, max_users: int = 0) -> DataFrame:
    """user_id, item_id, source, als_rank, pop_rank: the day's candidates (one row per pair); with max_users, for
    at most that many users of the audience (capped_users); a user's candidates are the same either way."""
    known = asof.known(tables.read("pairs"))
    users = capped_users(served_users(cfg, asof, known), max_users, cfg.model.train.seed if cfg.model else 0)
    c = cfg.candidates
    warm = als_candidates(cfg, tables, run, known, users)
    popular = popular_unseen(users, known, popularity_order(known, asof, c.recent_days), c.popular_k, c.seen_buffer)
    cold = users.crossJoin(F.broadcast(cold_items(cfg, tables, known)))
    text = (text_candidates(cfg, tables.read("items"), known, users, rare_items(cfg, tables, known, asof),
                           c.text_k)
            if c.text_k else cold.limit(0))
    tagged = (warm.select("user_id", "item_id", F.lit(0).alias("_src"), "als_rank",
                          F.lit(None).cast("int").alias("pop_rank"))
              .unionByName(popular.select("user_id", "item_id", F.lit(1).alias("_src"),
                                          F.lit(None).cast("int").alias("als_rank"), "pop_rank"))
              .unionByName(text.select("user_id", "item_id", F.lit(2).alias("_src"),
                                       F.lit(None).cast("int").alias("als_rank"),
                                       F.lit(None).cast("int").alias("pop_rank")))
              .unionByName(cold.select("user_id", "item_id", F.lit(3).alias("_src"),
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
