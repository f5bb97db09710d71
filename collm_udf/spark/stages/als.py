"""Stage 4, ALS: MLlib ALS on what the day may know; factors go to Delta, the model to the models dir.

user_factors: als_run_id, user_id, user_idx, features ARRAY<FLOAT>, trained_at   (partitioned by als_run_id)
item_factors: als_run_id, item_id, item_idx, features ARRAY<FLOAT>, trained_at   (partitioned by als_run_id)
als_runs:     als_run_id, ds, mode, cutoff, params (JSON), input_fingerprint, train_rows, users, items,
              target_mean, model_path, trained_at

Daily mode: the fit sees the interactions before ds's cutoff (collm_udf/spark/asof.py) and records that cutoff;
a day uses the newest fit whose cutoff is not after its own (run_as_of), so replaying an old day never reads a
later fit. The stage refits when that fit is als.retrain_every_days old. The train stage asks for one more fit,
ending where its label window starts (fit_run). Split mode: the training split, as in the paper.

The run id is derived from the params, the cutoff and a fingerprint of the training input. ALS with a fixed seed
on deterministic input gives the same factors, so the same input gives the same id: a fit whose run exists
already is reused instead of repeated. MLlib's two classic failure modes are headed off: a checkpoint dir is set
(long lineage -> StackOverflowError) and the input is read from Delta and persisted (nondeterministic input ->
ArrayIndexOutOfBounds when a lost block is recomputed differently).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from typing import Optional

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.context import StageContext
from collm_udf.spark.stages import idmap
from collm_udf.spark.asof import AsOf, InsufficientHistory, fit_dict, fit_rows, micros, newest_as_of
from collm_udf.spark.tables import Tables


def training_frame(cfg: Config, tables: Tables, part: DataFrame) -> DataFrame:
    """(user_idx, item_idx, target) of the pairs `part`; target is the like label or the rating (als.target):
    explicit ALS fits it, implicit ALS takes it as the confidence weight (1 + alpha * target)."""
    target = F.col("rating") if cfg.als.target == "rating" else F.col("label")
    return (part.join(idmap.indices(tables, "user", "user"), "user_id")
            .join(idmap.indices(tables, "item", "item"), "item_id")
            .select("user_idx", "item_idx", target.cast("float").alias("target")))


def estimator(cfg: Config) -> ALS:
    a = cfg.als
    return ALS(rank=a.rank, maxIter=a.max_iter, regParam=a.reg, alpha=a.alpha, implicitPrefs=a.implicit,
               nonnegative=a.nonnegative, seed=a.seed, checkpointInterval=a.checkpoint_interval,
               userCol="user_idx", itemCol="item_idx", ratingCol="target", coldStartStrategy="nan")


def fingerprint(df: DataFrame) -> tuple[str, int, float]:
    """Order-independent fingerprint of the training input, its row count and the target mean."""
    h = F.sum(F.xxhash64("user_idx", "item_idx", "target").cast("decimal(20,0)"))
    r = df.agg(h.alias("h"), F.count("*").alias("n"), F.avg("target").alias("m")).first()
    return f"{int(r['h'] or 0) % 2**64:016x}", r["n"], float(r["m"] or 0.0)


def models_dir(cfg: Config) -> str:
    if cfg.tables.models_dir:
        return cfg.tables.models_dir
    return os.path.join(cfg.tables.root, "_models")


def params_json(cfg: Config) -> str:
    """The params that make a fit (the retrain schedule is not one of them)."""
    params = {k: v for k, v in dataclasses.asdict(cfg.als).items() if k != "retrain_every_days"}
    return json.dumps(params, sort_keys=True)


def fit_run(spark: SparkSession, cfg: Config, tables: Tables, ds: str, part: DataFrame, *, mode: str,
            cutoff: Optional[dt.datetime], refit: bool = False) -> dict:
    """Fit ALS on the pairs `part` (the run id says which: params, mode, cutoff, input fingerprint) and return its
    als_runs row; an existing run of the same id is returned as it is unless `refit`."""
    train = training_frame(cfg, tables, part).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        fp, n, target_mean = fingerprint(train)
        if n == 0:
            raise InsufficientHistory(f"table pairs: no interactions for ALS ({mode} mode, ds={ds}"
                                      + (f", before {cutoff:%Y-%m-%d %H:%M} UTC)" if cutoff else ")"))
        params = params_json(cfg)
        stamp = f"{cutoff:%Y%m%d%H%M}" if cutoff is not None else ""
        digest = hashlib.sha1(f"{params}|{mode}|{stamp}|{fp}|{n}".encode()).hexdigest()[:10]
        run_id = f"als_{(cutoff.strftime('%Y%m%d') if cutoff else ds.replace('-', ''))}_{digest}"
        if not refit:
            found = find_run(tables, run_id)
            if found is not None and os.path.isdir(found["model_path"].removeprefix("file:")):
                return dict(found, reused=True)
        model = estimator(cfg).fit(train)
    finally:
        train.unpersist()
    path = os.path.join(models_dir(cfg), "als", run_id)
    model.write().overwrite().save(path)

    now = F.current_timestamp()
    for entity, factors in (("user", model.userFactors), ("item", model.itemFactors)):
        ids = idmap.indices(tables, entity, entity)
        out = (factors.withColumnRenamed("id", f"{entity}_idx").join(ids, f"{entity}_idx")
               .select(F.lit(run_id).alias("als_run_id"), f"{entity}_id", f"{entity}_idx",
                       F.col("features").cast("array<float>").alias("features"), now.alias("trained_at")))
        tables.replace_partition(out, f"{entity}_factors", "als_run_id", run_id)

    n_users = tables.read("user_factors").where(F.col("als_run_id") == run_id).count()
    n_items = tables.read("item_factors").where(F.col("als_run_id") == run_id).count()
    cutoff_us = None if cutoff is None else micros(cutoff)
    row = spark.createDataFrame(
        [(run_id, ds, mode, cutoff_us, params, fp, n, n_users, n_items, target_mean, path)],
        "als_run_id string, ds string, mode string, cutoff_us long, params string, input_fingerprint string, "
        "train_rows long, users long, items long, target_mean double, model_path string")
    row = (row.withColumn("cutoff", F.timestamp_micros("cutoff_us")).drop("cutoff_us")
           .withColumn("trained_at", now))
    tables.replace_partition(row, "als_runs", "als_run_id", run_id)
    return dict(find_run(tables, run_id), reused=False)


def run(ctx: StageContext) -> dict:
    spark, cfg, tables, ds = ctx.spark, ctx.cfg, ctx.tables, ctx.ds
    asof = AsOf.of(cfg, ds)
    if asof.daily:
        prev = run_as_of(tables, asof, params=params_json(cfg), required=False)
        if prev is not None and asof.cutoff - prev["cutoff"] < dt.timedelta(days=cfg.als.retrain_every_days):
            return {"als_run_id": prev["als_run_id"], "reused": f"fit of {prev['ds']} (cutoff "
                    f"{prev['cutoff']:%Y-%m-%d %H:%M} UTC; als.retrain_every_days = {cfg.als.retrain_every_days})",
                    "train_rows": prev["train_rows"], "users": prev["users"], "items": prev["items"]}
    r = fit_run(spark, cfg, tables, ds, asof.fit(tables.read("pairs")), mode=asof.mode, cutoff=asof.cutoff)
    out = {"als_run_id": r["als_run_id"], "train_rows": r["train_rows"], "users": r["users"], "items": r["items"]}
    if r["reused"]:
        out["reused"] = "the same input was fitted before"
    return out


def find_run(tables: Tables, run_id: str) -> Optional[dict]:
    runs = fit_rows(tables, "als_runs")
    row = None if runs is None else runs.where(F.col("als_run_id") == run_id).first()
    return None if row is None else fit_dict(row)


def run_as_of(tables: Tables, asof: AsOf, params: Optional[str] = None, required: bool = True) -> Optional[dict]:
    """The ALS fit a day uses (asof.newest_as_of); `params`: only fits with these params. None, or an error when
    `required`, when there is none."""
    found = newest_as_of(tables, "als_runs", asof, "als_run_id",
                         None if params is None else F.col("params") == params)
    if found is None and required:
        when = f"as of ds={asof.ds} (cutoff {asof.cutoff:%Y-%m-%d %H:%M} UTC)" if asof.daily else "in split mode"
        raise FileNotFoundError(f"table als_runs: no ALS fit {when}; run the als stage for that day first")
    return found


def load_model(run: dict) -> ALSModel:
    return ALSModel.load(run["model_path"])
