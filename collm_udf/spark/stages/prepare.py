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
    """history = the user's last `length` positive items strictly before this pair's timestamp, oldest first.

    Ratings given in the same instant carry no order, so none of them may enter another's history; likes of one
    instant are ordered by item id. Linear in the rows: each instant with a like gets a snapshot of the last
    `length` likes up to it (a bounded frame over the likes), and each row takes the newest snapshot of an earlier
    instant (a running last-non-null over rows and snapshots in time order), instead of collecting and sorting
    every earlier like for every row (quadratic in a user's rows)."""
    if length == 0:
        return df.withColumn("history", F.array().cast("array<string>"))
    t = F.unix_micros("ts").alias("_t")
    likes = Window.partitionBy("user_id").orderBy("_t", "item_id")
    # snapshots: user_id, _t, _h (array<string>, <= length items): the last likes up to instant _t, taken at
    # the instant's last like in (_t, item_id) order
    snaps = (df.where(F.col("label") == 1).select("user_id", t, "item_id")
             .select("user_id", "_t", F.collect_list("item_id").over(likes.rowsBetween(1 - length, 0)).alias("_h"),
                     F.lead("_t").over(likes).alias("_next"))
             .where(F.col("_next").isNull() | (F.col("_next") != F.col("_t")))
             .select("user_id", "_t", F.lit(1).alias("_k"), "_h"))
    # a snapshot sorts after the rows of its own instant, so a row sees only earlier instants' likes
    rows = df.select("*", t, F.lit(0).alias("_k"))
    upto = (Window.partitionBy("user_id").orderBy("_t", "_k")
            .rowsBetween(Window.unboundedPreceding, -1))
    hist = F.coalesce(F.last("_h", ignorenulls=True).over(upto), F.array().cast("array<string>"))
    return (rows.unionByName(snaps, allowMissingColumns=True)
            .withColumn("history", hist)
            .where(F.col("_k") == 0)
            .drop("_t", "_k", "_h"))


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
