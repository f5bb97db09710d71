"""The train stage's pairs, sampled in Spark and collected as pandas: stage 1's text pairs, stage 2's CF pairs
and the early-stopping holdout (training_frames), with the titles and ALS factors they mention (lookups) and the
ALS fit behind stage 2's factors (label_run). See collm_udf/spark/stages/train.py for which pairs and why."""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import Optional

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.core.signals import STATISTICS
from collm_udf.spark.stages import als, candidates
from collm_udf.spark.asof import AsOf, InsufficientHistory, history_as_of, micros, ts_before
from collm_udf.core.signals import column
from collm_udf.spark.scorers.features import signal_columns
from collm_udf.spark.signal_stats import add_stats, end_of
from collm_udf.spark.tables import Tables

PAIR_COLUMNS = ("user_id", "item_id", "label", "history")


def gated(cfg: Config, asof: AsOf) -> bool:
    """Whether the promotion gate judges this training (daily mode, gate.enabled)."""
    return asof.daily and cfg.gate.enabled


def gate_users(cfg: Config) -> Column:
    """True for the users the gate holds out: a stable hash of the user id and gate.seed, so a user is held out on
    every day alike and no earlier model trained on the label-window pairs of the users a later gate judges on."""
    share = int(round(cfg.gate.holdout_users * 10_000))
    return F.pmod(F.xxhash64(F.lit("collm-gate"), F.lit(cfg.gate.seed), F.col("user_id")), F.lit(10_000)) < share


def _take(part: DataFrame, n: int, seed: int, skip: int = 0) -> DataFrame:
    """Rows skip..skip+n of `part` in one seeded hash order (deterministic, and samples taken with different
    skips never overlap). Only a fraction of the part, the lowest hash buckets, is sorted."""
    total = part.count()
    if n <= 0 or total <= skip:
        return part.limit(0).withColumn("_k", F.lit(0).cast("long"))
    key = F.xxhash64(F.lit(seed), "user_id", "item_id", "ts")
    part = part.withColumn("_k", key).withColumn("_b", F.pmod(F.col("_k"), F.lit(1_000_000)))
    keep = min(1.0, 1.5 * (skip + n) / total + 1e-3)
    kept = part.where(F.col("_b") < F.lit(int(keep * 1_000_000)))
    if keep < 1.0 and kept.count() < min(total, skip + n):  # an unlucky hash draw: sort the whole split
        kept = part
    # Ordered by bucket first: the rows of a smaller `keep` are a prefix of the same order.
    w = Window.orderBy("_b", "_k", "user_id", "item_id")
    return kept.withColumn("_r", F.row_number().over(w)).where((F.col("_r") > skip) & (F.col("_r") <= skip + n)) \
        .drop("_r", "_b")


def training_frames(cfg: Config, tables: Tables, asof: AsOf, run: Optional[dict] = None,
                    notes: Optional[list] = None, pool: Optional[DataFrame] = None) -> dict:
    """{text, cf, hold} pandas frames of sampled pairs (the label window for cf and hold; see TrainingConfig),
    with the statistics among the model's signals as of the label window's start (`_sig_<name>` columns).
    With model.train.cf_negatives, cf and hold also hold candidate-pool rows (candidate_pool, from the ALS fit
    `run`): that many the user ignored and, with cf_pool_positives, up to as many the user then liked. Under the
    gate (gated), no label-window row of a held-out user (gate_users) is among them. `notes` gets a line for each
    part left out (a text pool whose window has no history yet). `pool`: the label window's candidate_pool when
    the caller has it already (the train stage builds it once for this, the features-only ranker and the gate)."""
    t = cfg.model.train
    pairs = tables.read("pairs").select(*PAIR_COLUMNS, "ts", "split")
    labels, before = asof.labels(pairs), asof.label_fit(pairs)
    trainable = ~gate_users(cfg) if gated(cfg, asof) else F.lit(True)
    labels = labels.where(trainable)
    n_cf_train = int(round(t.cf_pairs * t.cf_train_share))
    parts = {
        "hold": _take(labels, t.holdout_pairs, t.seed),
        "cf_valid": _take(labels, t.cf_pairs - n_cf_train, t.seed, skip=t.holdout_pairs),
        "text": _take(before, t.text_pairs, t.seed),
        "cf_train": _take(before, n_cf_train, t.seed, skip=t.text_pairs),
    }
    if (t.cf_negatives or t.text_negatives) and (not asof.daily or run is None):
        raise ValueError("model.train.cf_negatives / text_negatives: candidate-pool pairs need the daily mode "
                         "(asof.mode: daily) and the label window's ALS fit")
    pools = []
    if t.cf_negatives:
        if pool is None:
            pool = candidate_pool(cfg, tables, asof, run).cache()
            pools.append(pool)
        trains = pool.where(trainable)
        # a fifth of each label to the holdout, so that early stopping also judges the table's task
        for label, name, n in ((0, "neg", t.cf_negatives), (1, "pos", t.cf_negatives if t.cf_pool_positives else 0)):
            rows = trains.where(F.col("label") == label)
            n = min(n, rows.count())
            parts[f"hold_{name}"] = _take(rows, n // 5, t.seed)
            parts[f"cf_{name}"] = _take(rows, n - n // 5, t.seed, skip=n // 5)
    if t.text_negatives:
        # one window further back: offered at (label start - window), labelled before the label window starts
        back = dataclasses.replace(asof, cutoff=asof.label_start,
                                   label_start=asof.label_start - (asof.cutoff - asof.label_start))
        try:
            back_run = label_run(tables.spark, cfg, tables, back)
        except InsufficientHistory as e:  # the warehouse's first windows: stage 1 learns from rated pairs alone
            back_run = None
            if notes is not None:
                notes.append(f"model.train.text_negatives: no candidate pool one window back ({e})")
        if back_run is not None:
            back_pool = candidate_pool(cfg, tables, back, back_run).cache()
            pools.append(back_pool)
            for label, name in ((0, "neg"), (1, "pos")):
                rows = back_pool.where(F.col("label") == label)
                parts[f"text_{name}"] = _take(rows, min(t.text_negatives, rows.count()), t.seed)
    # what the stage-2 factors' fit saw also gives the statistics: nothing from the label window enters them
    names = cfg.model.signals
    end = end_of(before, asof.label_start)
    # one join of the statistics and one collect for all parts, each part in its own seeded order
    tagged = functools.reduce(DataFrame.unionByName, [v.select(*PAIR_COLUMNS, "_k", F.lit(k).alias("_part"))
                                                      for k, v in parts.items()])
    got = (add_stats(tagged, before, end, names, cfg.candidates.recent_days, cfg.evaluate.horizon_days,
                     rare_below=cfg.candidates.min_item_interactions)
           .orderBy("_part", F.pmod("_k", F.lit(1_000_000)), "_k", "user_id", "item_id")
           .select("_part", *PAIR_COLUMNS, *[column(n) for n in names if n in STATISTICS]).toPandas())
    frames = {k: got[got["_part"] == k].drop(columns="_part").reset_index(drop=True) for k in parts}
    for made in pools:
        made.unpersist()
    frames["text"] = pd.concat([frames.pop(k) for k in ("text", "text_neg", "text_pos") if k in frames],
                               ignore_index=True)
    frames["cf"] = pd.concat([frames.pop(k) for k in ("cf_valid", "cf_train", "cf_neg", "cf_pos") if k in frames],
                             ignore_index=True)
    frames["hold"] = pd.concat([frames.pop(k) for k in ("hold", "hold_neg", "hold_pos") if k in frames],
                               ignore_index=True)
    if len(frames["hold"]) == 0 or len(frames["cf"]) == 0:
        where = (f"the label window [{asof.label_start:%Y-%m-%d %H:%M}, {asof.cutoff:%Y-%m-%d %H:%M}) UTC"
                 if asof.daily else "the validation split")
        raise InsufficientHistory(f"table pairs: {where} has {len(frames['hold'])} holdout and {len(frames['cf'])} "
                                  "stage-2 rows; the train stage needs both (check asof.label_window_days or "
                                  "prepare.split)")
    return frames


POOL_CANDIDATE_COLUMNS = ("source", "als_rank", "pop_rank")


def candidate_pool(cfg: Config, tables: Tables, asof: AsOf, run: dict) -> DataFrame:
    """The table's task, one window back: the candidates the day of the label window's start would have offered
    (its audience, at most model.train.pool_users of it; the label fit's ALS top-K, its popular and cold items),
    labelled as the backtest labels a day: 1 where the user then liked the item in the window (pool_labels), else 0
    (ignored, or rated below the like threshold).
    History as of that start. Columns as PAIR_COLUMNS + ts (the start), and the candidates' source, als_rank and
    pop_rank (the gate ranks this pool as the score stage ranks a day's candidates)."""
    start = dataclasses.replace(asof, cutoff=asof.label_start)
    pairs = tables.read("pairs")
    offered = candidates.build(cfg, tables, start, run, max_users=cfg.model.train.pool_users if cfg.model else 0)
    window = pool_labels(cfg, asof, pairs).groupBy("user_id", "item_id").agg(F.max("label").alias("_liked"))
    hist = history_as_of(start.known(pairs), cfg.prepare.history_len)
    return (offered.join(window, ["user_id", "item_id"], "left").join(hist, "user_id", "left")
            .select("user_id", "item_id", F.coalesce("_liked", F.lit(0)).cast("int").alias("label"),
                    F.coalesce("history", F.array().cast("array<string>")).alias("history"),
                    F.timestamp_micros(F.lit(micros(asof.label_start))).alias("ts"),
                    *POOL_CANDIDATE_COLUMNS))


def pool_labels(cfg: Config, asof: AsOf, pairs: DataFrame) -> DataFrame:
    """The pairs whose likes label a pool offered at the label window's start: the whole window, or with
    model.train.pool_label horizon only its first evaluate.horizon_days (a day's table is judged by that span)."""
    labels = asof.labels(pairs)
    if cfg.model.train.pool_label == "horizon":
        labels = labels.where(ts_before(asof.label_start + dt.timedelta(days=cfg.evaluate.horizon_days)))
    return labels


RANKER_NEGATIVES = 200_000  # the features-only ranker's cap on ignored candidates collected to the driver


def ranker_rows(cfg: Config, tables: Tables, asof: AsOf, run: dict,
                pool: Optional[DataFrame] = None) -> pd.DataFrame:
    """The features-only ranker's training set (daily mode): the whole candidate pool of the label window's start
    (candidate_pool) of the users that train (not the gate's), with its signals as the features scorer computes
    them then (collm_udf/spark/scorers/features.py) and the label: every liked candidate and up to
    RANKER_NEGATIVES ignored ones (a seeded hash sample: a logistic ranker's weights do not depend on how many
    negatives it sees, only its intercept does, and ranking ignores that). `pool`: candidate_pool, when the
    caller has it already."""
    names = tuple(cfg.model.signals)
    pool = candidate_pool(cfg, tables, asof, run) if pool is None else pool
    if gated(cfg, asof):
        pool = pool.where(~gate_users(cfg))
    key = F.pmod(F.xxhash64(F.lit(cfg.model.train.seed), "user_id", "item_id"), F.lit(1_000_000))
    n_neg = pool.where(F.col("label") == 0).count()
    if n_neg > RANKER_NEGATIVES:
        pool = pool.where((F.col("label") == 1) | (key < F.lit(int(1_000_000 * RANKER_NEGATIVES / n_neg))))
    start = dataclasses.replace(asof, cutoff=asof.label_start)
    sig = signal_columns(pool, tables=tables, cfg=cfg, asof=start, run=run, names=names)
    # in a stable order: the same rows give the same fit, and the same version (model_registry.model_version)
    return (sig.select("user_id", "item_id", "label", *[column(n) for n in names]).orderBy("user_id", "item_id")
            .toPandas())


def lookups(spark: SparkSession, tables: Tables, frames: dict, run_id: str) -> tuple[dict, dict, dict]:
    """Item text, user factors and item factors for just the ids the sampled frames mention."""
    items, users = set(), set()
    for df in frames.values():
        users.update(df["user_id"])
        items.update(df["item_id"])
        for h in df["history"]:
            items.update(h if h is not None else [])
    ids = spark.createDataFrame([(i,) for i in sorted(items)], "item_id string")
    uids = spark.createDataFrame([(u,) for u in sorted(users)], "user_id string")
    text = {r["item_id"]: r["text"] for r in tables.read("items").join(ids, "item_id").select("item_id", "text")
            .collect()}
    U = {r["user_id"]: np.asarray(r["features"], np.float32) for r in tables.read("user_factors")
         .where(F.col("als_run_id") == run_id).join(uids, "user_id").select("user_id", "features").collect()}
    V = {r["item_id"]: np.asarray(r["features"], np.float32) for r in tables.read("item_factors")
         .where(F.col("als_run_id") == run_id).join(ids, "item_id").select("item_id", "features").collect()}
    return text, U, V


def label_run(spark: SparkSession, cfg: Config, tables: Tables, asof: AsOf) -> dict:
    """The ALS fit behind stage 2's factors: daily, the fit of the interactions before the label window (fitted
    now unless it exists); split, the training split's fit."""
    if not asof.daily:
        return als.run_as_of(tables, asof)
    return als.fit_run(spark, cfg, tables, asof.ds, asof.label_fit(tables.read("pairs")), mode="daily",
                       cutoff=asof.label_start)
