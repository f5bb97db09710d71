"""As of ds: which interactions a run for day ds may use, and which ones judge it.

Every stage from idmap on reads the `pairs` table through an AsOf view, never through `ts` or `split` directly,
so that one place decides what a day may know.

daily (asof.mode: daily, production). cutoff = ds 00:00 UTC + asof.cutoff_shift_hours.
    known      ts < cutoff: the serving ALS fit, the candidates' "seen" set, prompt histories, popularity and
               the day's audience (users active in the last candidates.active_within_days)
    label_fit  ts < cutoff - asof.label_window_days: the ALS fit behind the CoLLM CF stage's factors, and
               stage 1's text pairs
    labels     [cutoff - label_window_days, cutoff): the CF stage's pairs, whose labels that fit never saw
    truth      [cutoff, cutoff + evaluate.horizon_days): what the day's table is judged by (evaluate only)
split (asof.mode: split, the paper's offline protocol, a benchmark mode). One fixed split whatever ds is:
    label_fit = fit = split 'train', labels = 'valid', truth = 'test', known = train + valid.

Time comparisons use the literal's microseconds (timestamp_micros), never a Python datetime, so no session or
driver time zone can move a cutoff.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.tables import Tables, check_ds

UTC = dt.timezone.utc


class InsufficientHistory(ValueError):
    """What a day may know is too little for a fit (no interactions before a cutoff, an empty label window): the
    train stage records it and the day is served by score.fallback instead of failing."""


EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def micros(t: dt.datetime) -> int:
    return int((t - EPOCH) // dt.timedelta(microseconds=1))


def from_micros(us: Optional[int]) -> Optional[dt.datetime]:
    return None if us is None else EPOCH + dt.timedelta(microseconds=int(us))


def ts_before(t: dt.datetime) -> Column:
    return F.col("ts") < F.timestamp_micros(F.lit(micros(t)))


def ts_from(t: dt.datetime) -> Column:
    return F.col("ts") >= F.timestamp_micros(F.lit(micros(t)))


@dataclass(frozen=True)
class AsOf:
    """The views of one run day. Datetimes are timezone-aware UTC; all None in split mode."""

    mode: str
    ds: str
    cutoff: Optional[dt.datetime] = None
    label_start: Optional[dt.datetime] = None
    horizon_end: Optional[dt.datetime] = None
    horizon_days: Optional[int] = None

    @classmethod
    def of(cls, cfg: Config, ds: str) -> "AsOf":
        ds = check_ds(ds)
        if cfg.asof.mode == "split":
            return cls("split", ds)
        day = dt.datetime.fromisoformat(ds).replace(tzinfo=UTC)
        cutoff = day + dt.timedelta(hours=cfg.asof.cutoff_shift_hours)
        return cls("daily", ds, cutoff, cutoff - dt.timedelta(days=cfg.asof.label_window_days),
                   cutoff + dt.timedelta(days=cfg.evaluate.horizon_days), cfg.evaluate.horizon_days)

    @property
    def daily(self) -> bool:
        return self.mode == "daily"

    def _split(self, pairs: DataFrame, *names: str) -> DataFrame:
        return pairs.where(F.col("split").isin(*names))

    def known(self, pairs: DataFrame) -> DataFrame:
        return pairs.where(ts_before(self.cutoff)) if self.daily else self._split(pairs, "train", "valid")

    def fit(self, pairs: DataFrame) -> DataFrame:
        """What the serving ALS fit and the warm/cold counts see."""
        return pairs.where(ts_before(self.cutoff)) if self.daily else self._split(pairs, "train")

    def label_fit(self, pairs: DataFrame) -> DataFrame:
        return pairs.where(ts_before(self.label_start)) if self.daily else self._split(pairs, "train")

    def labels(self, pairs: DataFrame) -> DataFrame:
        if self.daily:
            return pairs.where(ts_from(self.label_start) & ts_before(self.cutoff))
        return self._split(pairs, "valid")

    def truth(self, pairs: DataFrame) -> DataFrame:
        if self.daily:
            return pairs.where(ts_from(self.cutoff) & ts_before(self.horizon_end))
        return self._split(pairs, "test")

    def describe(self) -> dict:
        if not self.daily:
            return {"mode": "split", "ds": self.ds}
        iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
        return {"mode": "daily", "ds": self.ds, "cutoff": iso(self.cutoff), "label_start": iso(self.label_start),
                "horizon_end": iso(self.horizon_end), "horizon_days": self.horizon_days}


# ------------------------------------------------------------------------------------------ derived views
def segments(part: DataFrame, fit: DataFrame, min_count: int) -> DataFrame:
    """part + user_train_count, item_train_count (interactions in `fit`), warm (both >= min_count), cold_user,
    cold_item (none)."""
    users = fit.groupBy("user_id").agg(F.count(F.lit(1)).alias("user_train_count"))
    items = fit.groupBy("item_id").agg(F.count(F.lit(1)).alias("item_train_count"))
    out = (part.join(users, "user_id", "left").join(items, "item_id", "left")
           .fillna(0, ["user_train_count", "item_train_count"]))
    return (out
            .withColumn("warm", (F.col("user_train_count") >= min_count) & (F.col("item_train_count") >= min_count))
            .withColumn("cold_user", F.col("user_train_count") == 0)
            .withColumn("cold_item", F.col("item_train_count") == 0))


def history_as_of(known: DataFrame, length: int) -> DataFrame:
    """user_id, history: each user's latest `length` positive items of `known` (item ids, oldest first), i.e.
    the prompt history a scorer may use as of the cutoff."""
    w = Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col("item_id").desc())
    pos = (known.where(F.col("label") == 1).withColumn("_r", F.row_number().over(w))
           .where(F.col("_r") <= length))
    return pos.groupBy("user_id").agg(F.array_sort(F.collect_list(F.struct("ts", "item_id"))).alias("_h")) \
        .select("user_id", F.col("_h.item_id").alias("history"))


def served_users(cfg: Config, asof: AsOf, known: DataFrame) -> DataFrame:
    """user_id of the day's audience: users with an interaction in the last candidates.active_within_days before
    the cutoff (split mode: before the end of the known part), or every known user when that is unset."""
    days = cfg.candidates.active_within_days
    if days is None:
        return known.select("user_id").distinct()
    end = _end(asof, known)
    if end is None:
        return known.select("user_id").limit(0)
    return known.where(ts_from(end - dt.timedelta(days=days))).select("user_id").distinct()


def recent_counts(known: DataFrame, asof: AsOf, days: int) -> DataFrame:
    """item_id, _recent: each item's interactions in the last `days` before the cutoff (items with none: no row)."""
    end = _end(asof, known) or dt.datetime.now(UTC)
    return known.where(ts_from(end - dt.timedelta(days=days))).groupBy("item_id").agg(
        F.count(F.lit(1)).alias("_recent"))


def popularity_order(known: DataFrame, asof: AsOf, recent_days: Optional[int]) -> DataFrame:
    """item_id, pop_rank (1 = most popular): items of `known` by their interactions in the last recent_days
    before the cutoff (None: all of `known`), ties broken by all known interactions, then item_id."""
    counts = known.groupBy("item_id").agg(F.count(F.lit(1)).alias("_all"))
    if recent_days is not None:
        counts = counts.join(recent_counts(known, asof, recent_days), "item_id", "left").fillna(0, ["_recent"])
    else:
        counts = counts.withColumn("_recent", F.col("_all"))
    w = Window.orderBy(F.col("_recent").desc(), F.col("_all").desc(), F.col("item_id"))
    return counts.select("item_id", F.row_number().over(w).alias("pop_rank"))


def popular_unseen(users: DataFrame, known: DataFrame, order: DataFrame, k: int,
                   seen_buffer: Optional[int] = None) -> DataFrame:
    """user_id, item_id, pop_rank (1..k per user): each user's first k items of `order` that the user has no
    interaction with in `known`. Only the first k + (the most interactions of any of these users, capped by
    seen_buffer) of the order can be needed: that head, as one array, is filtered in place against each user's
    seen items, so only k rows per user are exploded."""
    if k <= 0:
        return users.select("user_id", F.lit(None).cast("string").alias("item_id"),
                            F.lit(None).cast("int").alias("pop_rank")).limit(0)
    mine = known.select("user_id", "item_id").join(users, "user_id")
    most = mine.groupBy("user_id").count().agg(F.max("count")).first()[0] or 0  # >= the most distinct items
    seen = mine.groupBy("user_id").agg(F.collect_set("item_id").alias("_seen"))
    if seen_buffer is not None:
        most = min(most, seen_buffer)
    head = (order.where(F.col("pop_rank") <= k + most)
            .agg(F.sort_array(F.collect_list(F.struct("pop_rank", "item_id"))).alias("_h"))
            .select(F.col("_h.item_id").alias("_order")))
    # array_except keeps the first array's order (Spark iterates it); tests check pop_rank against a reference
    kept = F.slice(F.array_except("_order", F.coalesce("_seen", F.array().cast("array<string>"))), 1, k)
    return (users.join(seen, "user_id", "left").crossJoin(F.broadcast(head))
            .select("user_id", F.posexplode(kept).alias("_pos", "item_id"))
            .select("user_id", "item_id", (F.col("_pos") + 1).cast("int").alias("pop_rank")))


def data_end(pairs: DataFrame) -> Optional[dt.datetime]:
    """The newest interaction time of `pairs` (UTC), None when empty. Read as microseconds: a collected
    TIMESTAMP would come back in the driver's local time."""
    return from_micros(pairs.agg(F.max(F.unix_micros("ts"))).first()[0])


def backtest_status(tables: Tables, asof: AsOf) -> tuple[bool, str]:
    """(ready, why): whether the day's truth exists yet."""
    if not asof.daily:
        return True, "the test split (split mode: the paper's fixed split)"
    end = data_end(tables.read("pairs"))
    if end is None or end < asof.horizon_end:
        seen = "no interactions" if end is None else f"interactions reach {end:%Y-%m-%d %H:%M} UTC"
        return False, (f"backtest of ds={asof.ds} not available yet: it needs the interactions of "
                       f"[{asof.cutoff:%Y-%m-%d %H:%M}, {asof.horizon_end:%Y-%m-%d %H:%M}) UTC and the "
                       f"{seen}; nothing written")
    return True, f"the interactions of [{asof.cutoff:%Y-%m-%d %H:%M}, {asof.horizon_end:%Y-%m-%d %H:%M}) UTC"


def _end(asof: AsOf, known: DataFrame) -> Optional[dt.datetime]:
    """Where "the last N days" end: the cutoff; in split mode just after the newest known interaction."""
    if asof.cutoff is not None:
        return asof.cutoff
    last = data_end(known)
    return None if last is None else last + dt.timedelta(microseconds=1)


# ------------------------------------------------------------------------- fits a day may use (ALS, CoLLM)
def fit_rows(tables: Tables, name: str) -> Optional[DataFrame]:
    """The rows of a table of fits (als_runs, collm_models) with mode, cutoff and _cutoff_us (rows written
    before the daily mode existed have neither: they count as split-mode fits)."""
    if not tables.exists(name):
        return None
    df = tables.read(name)
    for col, kind in (("mode", "string"), ("cutoff", "timestamp")):
        if col not in df.columns:
            df = df.withColumn(col, F.lit(None).cast(kind))
    return df.withColumn("mode", F.coalesce("mode", F.lit("split"))).withColumn("_cutoff_us", F.unix_micros("cutoff"))


def fit_dict(row) -> dict:
    """A row of fit_rows() as a dict, its cutoff an aware UTC datetime (a collected TIMESTAMP is local time)."""
    d = row.asDict()
    d["cutoff"] = from_micros(d.pop("_cutoff_us", None))
    return d


def newest_as_of(tables: Tables, name: str, asof: AsOf, key: str, where: Optional[Column] = None) -> Optional[dict]:
    """The fit a day uses: daily mode, the newest daily fit whose cutoff is not after the day's cutoff (a replayed
    day never sees a later fit); split mode, the newest split-mode fit. None when there is none."""
    df = fit_rows(tables, name)
    if df is None:
        return None
    if where is not None:
        df = df.where(where)
    if asof.daily:
        df = df.where((F.col("mode") == "daily") & (F.col("_cutoff_us") <= F.lit(micros(asof.cutoff))))
    else:
        df = df.where(F.col("mode") == "split")
    row = df.orderBy(F.col("_cutoff_us").desc_nulls_last(), F.col("trained_at").desc(), F.col(key).desc()).first()
    return None if row is None else fit_dict(row)


def cold_share(known: DataFrame, end: dt.datetime, days: int, min_items: int) -> tuple[float, int]:
    """(share, likes): of the likes (label 1) in the `days` before `end`, the share whose item had fewer than
    min_items interactions before that window began - how much of what users like is what CF cannot rank yet."""
    start = end - dt.timedelta(days=days)
    before = known.where(ts_before(start)).groupBy("item_id").agg(F.count(F.lit(1)).alias("_n"))
    likes = known.where(ts_from(start) & (F.col("label") == 1)).join(before, "item_id", "left")
    got = likes.agg(F.count(F.lit(1)).alias("likes"),
                    F.sum(F.when(F.coalesce("_n", F.lit(0)) < min_items, 1).otherwise(0)).alias("cold")).first()
    n = int(got["likes"] or 0)
    return (float(got["cold"] or 0) / n if n else 0.0), n
