"""Stage 2, prepare: labels, the split (split mode) and each pair's history.

pairs: user_id, item_id, ts, rating, label (0/1), split (train/valid/test in split mode; null in daily mode),
       history (array<string>: up to history_len most recent positive item ids strictly before ts, oldest first)

Every column of a row depends only on that row and earlier events, so the table holds the whole warehouse
history and each day's stages take what they may see through collm_udf/spark/asof.py (warm/cold flags are
counted there too, against the part a day's ALS fit saw).
- label: the given label column, else rating >= like_threshold (CoLLM: >= 4 on MovieLens).
- split (split mode only): a given split column, else by global time: rows ordered by (ts, user_id, item_id) - a
  total order, so reruns give the same split - and cut at exactly train / train+valid of the row count. The cut
  needs one global row number (a single-partition sort of three narrow columns); a table too large for that
  should bring its own split column.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.context import StageContext

SPLITS = ("train", "valid", "test")


class PrepareError(ValueError):
    pass


def add_labels(df: DataFrame, cfg: Config) -> DataFrame:
    if cfg.interactions.columns.label is not None:
        bad = df.where(F.col("label").isNull() | ~F.col("label").isin(0, 1)).limit(1).collect()
        if bad:
            raise PrepareError(f"table interactions, column label ({cfg.interactions.columns.label}): value "
                               f"{bad[0]['label']!r} is not 0 or 1")
        return df
    bad = df.where(F.col("rating").isNull() | F.isnan("rating")).limit(1).collect()
    if bad:
        raise PrepareError(f"table interactions, column rating ({cfg.interactions.columns.rating}): value "
                           f"{bad[0]['rating']!r} for user {bad[0]['user_id']} item {bad[0]['item_id']}")
    return df.withColumn("label", (F.col("rating") >= cfg.prepare.like_threshold).cast("int"))


def add_split(df: DataFrame, cfg: Config) -> DataFrame:
    if cfg.asof.mode == "daily":
        return df.withColumn("split", F.lit(None).cast("string"))
    if cfg.interactions.columns.split is not None:
        bad = df.where(F.col("split").isNull() | ~F.col("split").isin(*SPLITS)).limit(1).collect()
        if bad:
            raise PrepareError(f"table interactions, column split ({cfg.interactions.columns.split}): value "
                               f"{bad[0]['split']!r} is not one of {', '.join(SPLITS)}")
        return df
    n = df.count()
    s = cfg.prepare.split
    n_train = int(round(n * s.train))
    n_valid = int(round(n * (s.train + s.valid))) - n_train
    order = Window.orderBy("ts", "user_id", "item_id")
    rn = F.row_number().over(order)
    split = (F.when(rn <= n_train, "train").when(rn <= n_train + n_valid, "valid").otherwise("test"))
    return df.withColumn("split", split)


def add_history(df: DataFrame, length: int) -> DataFrame:
    """history = the user's last `length` positive items strictly before this pair's timestamp."""
    # A range frame on microseconds ending at -1 excludes every event at the same instant, including this one:
    # ratings given in the same second carry no order, so none of them may leak into another's history.
    w = (Window.partitionBy("user_id").orderBy(F.unix_micros("ts"))
         .rangeBetween(Window.unboundedPreceding, -1))
    # Events are collected with their time and sorted by (time, item_id): a deterministic order even for ties.
    events = F.collect_list(F.when(F.col("label") == 1, F.struct(F.unix_micros("ts").alias("t"), "item_id")))
    if length == 0:
        return df.withColumn("history", F.array().cast("array<string>"))
    h = F.col("h")
    start = F.greatest(F.size(h) - F.lit(length - 1), F.lit(1))
    return (df.withColumn("h", F.transform(F.array_sort(events.over(w)), lambda e: e["item_id"]))
            .withColumn("history", F.when(F.size(h) > 0, F.slice(h, start, F.lit(length)))
                        .otherwise(F.array().cast("array<string>")))
            .drop("h"))


def deduplicate(df: DataFrame) -> DataFrame:
    """The same (user, item, ts) twice is one event; keep the highest rating/label (deterministic)."""
    return df.groupBy("user_id", "item_id", "ts").agg(
        F.max("rating").alias("rating"), F.max("label").alias("label"), F.max("split").alias("split"))


def run(ctx: StageContext) -> dict:
    cfg, tables, dq = ctx.cfg, ctx.tables, ctx.dq
    inter = tables.read("interactions")
    n_in = inter.count()
    df = deduplicate(inter)
    df = add_labels(df, cfg)
    df = add_split(df, cfg)
    df = add_history(df, cfg.prepare.history_len)
    cols = ["user_id", "item_id", "ts", "rating", "label", "split", "history"]
    tables.overwrite(df.select(*cols), "pairs")
    pairs = tables.read("pairs")
    counts = {r["split"]: r["count"] for r in pairs.groupBy("split").count().collect()}
    if cfg.asof.mode == "split" and not counts.get("train"):
        raise PrepareError("table interactions: the split left no training rows")
    if dq is not None:
        dq.add("prepare", "interactions", "user_id, item_id, ts", "duplicate events (same user, item and time; "
               "the highest rating/label kept)", n_in - sum(counts.values()), "merged")
    out = {"pairs": sum(counts.values()), "duplicates_merged": n_in - sum(counts.values())}
    if cfg.asof.mode == "split":
        out.update({f"{k}_pairs": counts.get(k, 0) for k in SPLITS})
    return out
