"""The statistics among a CoLLM model's signals (collm_udf/core/signals.py), computed in Spark as of a cutoff.

add_stats joins to each pair, as column `_sig_<name>`, what the interactions of `known` (those before the
cutoff) say about its item and user: nothing at or after the cutoff enters (tests/test_daily.py plants rows
there). Serving uses the day's known part; training the part its ALS fit saw (the label window's start).
"""
from __future__ import annotations

import datetime as dt
from typing import Optional, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from collm_udf.core.signals import STATISTICS, column
from collm_udf.spark.asof import data_end, ts_from

LIKE_PRIOR = 5.0  # pseudo-interactions at the global like rate (collm_udf/core/signals.py: item_like_rate)


def end_of(known: DataFrame, cutoff: Optional[dt.datetime]) -> dt.datetime:
    """The cutoff, or (a fixed split's part) just after its newest interaction."""
    if cutoff is not None:
        return cutoff
    last = data_end(known)
    return (last or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(microseconds=1)


def add_stats(pairs: DataFrame, known: DataFrame, end: dt.datetime, names: Sequence[str],
              recent_days: int, trend_days: int = 7, *, rare_below: int) -> DataFrame:
    """pairs + one `_sig_<name>` column per statistic in `names` (derived signals are the core's); an item is rare
    with fewer than rare_below interactions in `known` (candidates.min_item_interactions)."""
    wanted = [n for n in names if n in STATISTICS]
    if not wanted:
        return pairs
    out = pairs
    item_names = [n for n in wanted if n.startswith("item_")]
    if item_names:
        glob = known.agg(F.avg("label")).first()[0] or 0.0
        recent = F.count(F.when(ts_from(end - dt.timedelta(days=recent_days)), 1))
        trend = F.count(F.when(ts_from(end - dt.timedelta(days=trend_days)), 1))
        items = known.groupBy("item_id").agg(F.count(F.lit(1)).alias("_n"), F.sum("label").alias("_likes"),
                                            recent.alias("_recent"), trend.alias("_trend"))
        rare, log_recent = F.coalesce("_n", F.lit(0)) < F.lit(rare_below), F.log1p(F.coalesce("_recent", F.lit(0)))
        exprs = {"item_recent": log_recent,
                 "item_rare": F.when(rare, 1.0).otherwise(0.0),
                 "item_rare_recent": F.when(rare, log_recent).otherwise(0.0),
                 "item_trend": F.log1p(F.coalesce("_trend", F.lit(0))),
                 "item_count": F.log1p(F.coalesce("_n", F.lit(0))),
                 "item_like_rate": (F.coalesce("_likes", F.lit(0)) + F.lit(LIKE_PRIOR * glob))
                 / (F.coalesce("_n", F.lit(0)) + F.lit(LIKE_PRIOR))}
        out = out.join(items, "item_id", "left")
        out = out.select(*pairs.columns, *[exprs[n].cast("double").alias(column(n)) for n in item_names])
    if "user_count" in wanted:
        users = known.groupBy("user_id").agg(F.count(F.lit(1)).alias("_un"))
        cols = out.columns
        out = (out.join(users, "user_id", "left")
               .select(*cols, F.log1p(F.coalesce("_un", F.lit(0))).cast("double").alias(column("user_count"))))
    return out.select(*pairs.columns, *[column(n) for n in wanted])
