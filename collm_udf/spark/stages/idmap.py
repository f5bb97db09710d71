"""Stage 3, id map: warehouse ids (strings or longs, any size) -> the dense int indices ALS needs.

id_map: entity ('user' | 'item'), id STRING, idx INT, added_at TIMESTAMP

Stable across runs: an id keeps its index forever; ids seen for the first time get the next free indices, in
id order so that a rerun on the same input assigns the same ones. The table is only ever appended to. A day maps
the ids it may know (its interactions before the cutoff, and the item catalog), so interactions after the cutoff
cannot shift the indices, and with them the ALS fit, of that day.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from collm_udf.spark.context import StageContext
from collm_udf.spark.asof import AsOf
from collm_udf.spark.tables import Tables

INT_MAX = 2**31 - 1  # ALS stores ids as Int


class IdMapError(ValueError):
    pass


def _new_rows(existing: DataFrame | None, ids: DataFrame, entity: str) -> DataFrame:
    ids = ids.select(F.col("id")).distinct()
    offset = 0
    if existing is not None:
        cur = existing.where(F.col("entity") == entity)
        ids = ids.join(cur.select("id"), "id", "left_anti")
        offset = (cur.agg(F.max("idx")).first()[0] or -1) + 1
    rn = F.row_number().over(Window.orderBy("id")) - 1
    return ids.select(F.lit(entity).alias("entity"), "id", (F.lit(offset) + rn).cast("long").alias("idx"))


def update(spark: SparkSession, tables: Tables, users: DataFrame, items: DataFrame) -> dict:
    """Append indices for ids not yet mapped; `users`/`items` are one-column frames named id."""
    existing = tables.read("id_map") if tables.exists("id_map") else None
    new = _new_rows(existing, users, "user").unionByName(_new_rows(existing, items, "item")).cache()
    top = new.agg(F.max("idx")).first()[0]
    if top is not None and top > INT_MAX:
        raise IdMapError(f"table id_map: index {top} would exceed ALS's int range ({INT_MAX}); "
                         "more than 2^31 distinct ids of one entity")
    counts = {r["entity"]: r["count"] for r in new.groupBy("entity").count().collect()}
    if counts:
        tables.append(new.select("entity", "id", F.col("idx").cast("int").alias("idx"),
                                 F.current_timestamp().alias("added_at")), "id_map")
    new.unpersist()
    return {"new_users": counts.get("user", 0), "new_items": counts.get("item", 0)}


def indices(tables: Tables, entity: str, prefix: str) -> DataFrame:
    """(<prefix>_id, <prefix>_idx) for one entity, ready to join on <prefix>_id."""
    m = tables.read("id_map").where(F.col("entity") == entity)
    return m.select(F.col("id").alias(f"{prefix}_id"), F.col("idx").alias(f"{prefix}_idx"))


def run(ctx: StageContext) -> dict:
    spark, cfg, tables, ds = ctx.spark, ctx.cfg, ctx.tables, ctx.ds
    asof = AsOf.of(cfg, ds)
    # split mode maps every pair (its test part is scored with the same map); a daily run what it may know
    pairs = asof.known(tables.read("pairs")) if asof.daily else tables.read("pairs")
    users = pairs.select(F.col("user_id").alias("id"))
    items = pairs.select(F.col("item_id").alias("id")).unionByName(
        tables.read("items").select(F.col("item_id").alias("id")))
    out = update(spark, tables, users, items)
    m = tables.read("id_map")
    out["users"] = m.where(F.col("entity") == "user").count()
    out["items"] = m.where(F.col("entity") == "item").count()
    return out
