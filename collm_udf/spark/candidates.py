"""Stage 5, candidates: per user, ALS's top-K unseen items plus the catalog's cold items.

candidates: ds DATE, user_id, item_id, source ('als' | 'cold'), als_rank INT (null for cold), als_run_id
            (partitioned by ds; a rerun of a day replaces that day)

Unseen = not among the user's training interactions. Cold items (in the catalog, never in training) have no
ALS factors; they are added for every user so that a text-aware scorer can reach them. ALS candidates come
from ALSModel.recommendForAllUsers, restricted to items with >= min_item_interactions training
interactions, asked for K plus enough extra items to cover the seen ones it will drop
(capped by candidates.seen_buffer; a user with more seen or ineligible items than that may get fewer than K).
Users without ALS factors (no training interactions) get no candidates from this stage; with
candidates.active_within_days only recently active users get any.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark import als, idmap
from collm_udf.spark.tables import Tables


def cold_items(cfg: Config, tables: Tables) -> DataFrame:
    train_items = tables.read("pairs").where(F.col("split") == "train").select("item_id").distinct()
    cold = tables.read("items").select("item_id").join(train_items, "item_id", "left_anti")
    return cold.orderBy("item_id").limit(cfg.candidates.max_cold_items)


def als_candidates(cfg: Config, tables: Tables, run: dict) -> DataFrame:
    train = tables.read("pairs").where(F.col("split") == "train")
    seen = train.select("user_id", "item_id").distinct()
    eligible = (train.groupBy("item_id").count()
                .where(F.col("count") >= cfg.candidates.min_item_interactions).select("item_id"))
    max_seen = seen.groupBy("user_id").count().agg(F.max("count")).first()[0] or 0
    n_ineligible = train.select("item_id").distinct().count() - eligible.count()
    k_fetch = cfg.candidates.top_k + min(max_seen + n_ineligible, cfg.candidates.seen_buffer)
    recs = als.load_model(run).recommendForAllUsers(k_fetch)
    flat = (recs.select("user_idx", F.posexplode("recommendations").alias("pos", "rec"))
            .select("user_idx", F.col("rec.item_idx").alias("item_idx"), "pos"))
    flat = (flat.join(idmap.indices(tables, "user", "user"), "user_idx")
            .join(idmap.indices(tables, "item", "item"), "item_idx")
            .join(eligible, "item_id")
            .join(seen, ["user_id", "item_id"], "left_anti"))
    w = Window.partitionBy("user_id").orderBy("pos")
    return (flat.withColumn("als_rank", F.row_number().over(w)).where(F.col("als_rank") <= cfg.candidates.top_k)
            .select("user_id", "item_id", F.lit("als").alias("source"), "als_rank"))


def active_users(cfg: Config, tables: Tables) -> DataFrame | None:
    """Users with a training interaction in the last active_within_days days of the training data (or None)."""
    days = cfg.candidates.active_within_days
    if days is None:
        return None
    train = tables.read("pairs").where(F.col("split") == "train")
    last = train.agg(F.max("ts")).first()[0]
    return train.where(F.col("ts") > F.lit(last) - F.expr(f"INTERVAL {int(days)} DAYS")).select("user_id").distinct()


def run(spark: SparkSession, cfg: Config, tables: Tables, ds: str) -> dict:
    run_ = als.latest_run(tables)
    warm = als_candidates(cfg, tables, run_)
    users = tables.read("user_factors").where(F.col("als_run_id") == run_["als_run_id"]).select("user_id")
    active = active_users(cfg, tables)
    if active is not None:
        users = users.join(active, "user_id")
        warm = warm.join(active, "user_id")
    cold = (users.crossJoin(cold_items(cfg, tables))
            .select("user_id", "item_id", F.lit("cold").alias("source"), F.lit(None).cast("int").alias("als_rank")))
    out = (warm.unionByName(cold)
           .select(F.lit(ds).cast("date").alias("ds"), "user_id", "item_id", "source", "als_rank",
                   F.lit(run_["als_run_id"]).alias("als_run_id")))
    tables.replace_partition(out, "candidates", "ds", ds)
    c = tables.read("candidates").where(F.col("ds") == F.lit(ds).cast("date"))
    by_source = {r["source"]: r["count"] for r in c.groupBy("source").count().collect()}
    return {"candidates": sum(by_source.values()), "als_candidates": by_source.get("als", 0),
            "cold_candidates": by_source.get("cold", 0), "users": c.select("user_id").distinct().count()}
