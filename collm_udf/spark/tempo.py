"""Settings sized by the data as of each day (conf section tempo, daily mode): what a window or a threshold tuned
on one warehouse would get wrong on another of another size or pace (ML-100K's 28-day label window holds ~5,000
likes; the same 28 days of ml-latest-small hold ~300).

derive(cfg, tables, ds) returns the conf with, measured on the interactions before the day's cutoff only:
  asof.label_window_days          the shortest multiple of the conf's window holding tempo.label_likes likes (up
                                  to tempo.max_label_window_days; `label_short` when even that falls short, and
                                  the train stage then trains nothing)
  candidates.recent_days          the same window (recent popularity over as many recent events)
  candidates.active_within_days   the tempo.audience_quantile of the gaps between a user's consecutive active
                                  days (at least 7)
  candidates.min_item_interactions  the tempo.item_quantile of the known items' interaction counts (at least 2)
and a dict of those values for the run summary. The returned conf has tempo.enabled off: it is one day's, and
deriving it again changes nothing; derive another day from the conf as loaded (StageContext.base_cfg).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math

from pyspark.sql import Window
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.asof import AsOf, ts_from
from collm_udf.spark.tables import Tables


def derive(cfg: Config, tables: Tables, ds: str) -> tuple[Config, dict]:
    """(the day's conf, what was derived); the conf unchanged when tempo is off, in split mode or before the
    pairs table exists."""
    t = cfg.tempo
    if not t.enabled or cfg.asof.mode != "daily" or not tables.exists("pairs"):
        return cfg, {}
    asof = AsOf.of(cfg, ds)
    known = asof.known(tables.read("pairs"))
    step = cfg.asof.label_window_days
    spans = list(range(step, max(step, t.max_label_window_days) + 1, step))
    likes = known.agg(*[F.sum(F.when(ts_from(asof.cutoff - dt.timedelta(days=d)) & (F.col("label") == 1), 1)
                              .otherwise(0)).alias(f"w{d}") for d in spans]).first()
    got = {d: int(likes[f"w{d}"] or 0) for d in spans}
    window = next((d for d in spans if got[d] >= t.label_likes), spans[-1])
    # UTC day numbers (no session time zone moves a day): a user's active days, and the gaps between them
    days = known.select("user_id", F.floor(F.unix_seconds("ts") / 86400).alias("_d")).distinct()
    gap = F.col("_d") - F.lag("_d").over(Window.partitionBy("user_id").orderBy("_d"))
    q_gap = days.select(gap.alias("_g")).where(F.col("_g") > 0).agg(F.percentile("_g", t.audience_quantile)).first()[0]
    counts = known.groupBy("item_id").agg(F.count(F.lit(1)).alias("_n"))
    q_items = counts.agg(F.percentile("_n", t.item_quantile)).first()[0]
    c = cfg.candidates
    audience = max(7, math.ceil(q_gap)) if q_gap is not None else c.active_within_days
    min_items = max(2, math.ceil(q_items)) if q_items is not None else c.min_item_interactions
    info = {"ds": ds, "label_window_days": window, "label_likes": got[window],
            "label_short": got[window] < t.label_likes, "recent_days": window, "active_within_days": audience,
            "min_item_interactions": min_items}
    day = dataclasses.replace(
        cfg, asof=dataclasses.replace(cfg.asof, label_window_days=window),
        candidates=dataclasses.replace(c, recent_days=window, active_within_days=audience,
                                       min_item_interactions=min_items),
        tempo=dataclasses.replace(t, enabled=False))
    return day, info
