"""Stage 4, ALS: MLlib ALS on the training pairs; factors go to Delta, the model to the models dir.

user_factors: als_run_id, user_id, user_idx, features ARRAY<FLOAT>, trained_at   (partitioned by als_run_id)
item_factors: als_run_id, item_id, item_idx, features ARRAY<FLOAT>, trained_at   (partitioned by als_run_id)
als_runs:     als_run_id, ds, trained_at, params (JSON), input_fingerprint, train_rows, users, items,
              target_mean, model_path

The run id is derived from the params and a fingerprint of the training input. ALS with a fixed seed on
deterministic input gives the same factors, so the same input gives the same id and a rerun replaces its own
partition instead of adding a copy. MLlib's two classic failure modes are headed off: a checkpoint dir is set
(long lineage -> StackOverflowError) and the input is read from Delta and persisted (nondeterministic input ->
ArrayIndexOutOfBounds when a lost block is recomputed differently).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark import idmap
from collm_udf.spark.tables import Tables


def training_frame(cfg: Config, tables: Tables) -> DataFrame:
    """(user_idx, item_idx, target) for the training split; target is the like label or the rating."""
    pairs = tables.read("pairs").where(F.col("split") == "train")
    target = F.col("label") if (cfg.als.implicit or cfg.als.target == "label") else F.col("rating")
    return (pairs.join(idmap.indices(tables, "user", "user"), "user_id")
            .join(idmap.indices(tables, "item", "item"), "item_id")
            .select("user_idx", "item_idx", target.cast("float").alias("target")))


def estimator(cfg: Config) -> ALS:
    a = cfg.als
    return ALS(rank=a.rank, maxIter=a.max_iter, regParam=a.reg, alpha=a.alpha, implicitPrefs=a.implicit,
               nonnegative=a.nonnegative, seed=a.seed, checkpointInterval=a.checkpoint_interval,
               userCol="user_idx", itemCol="item_idx", ratingCol="target", coldStartStrategy="nan")


def fingerprint(df: DataFrame) -> tuple[str, int, float]:
    """Order-independent fingerprint of the training input, its row count and the target mean."""
    r = df.agg(F.sum(F.xxhash64("user_idx", "item_idx", "target").cast("decimal(20,0)")).alias("h"), F.count("*").alias("n"),
               F.avg("target").alias("m")).first()
    return f"{int(r['h'] or 0) % 2**64:016x}", r["n"], float(r["m"] or 0.0)


def models_dir(cfg: Config) -> str:
    if cfg.tables.models_dir:
        return cfg.tables.models_dir
    return os.path.join(cfg.tables.root, "_models")


def run(spark: SparkSession, cfg: Config, tables: Tables, ds: str) -> dict:
    train = training_frame(cfg, tables).persist(StorageLevel.MEMORY_AND_DISK)
    fp, n, target_mean = fingerprint(train)
    params = dataclasses.asdict(cfg.als)
    params_json = json.dumps(params, sort_keys=True)
    digest = hashlib.sha1(f"{params_json}|{fp}|{n}".encode()).hexdigest()[:10]
    run_id = f"als_{ds.replace('-', '')}_{digest}"

    model = estimator(cfg).fit(train)
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
    row = spark.createDataFrame(
        [(run_id, ds, params_json, fp, n, n_users, n_items, target_mean, path)],
        "als_run_id string, ds string, params string, input_fingerprint string, train_rows long, users long, "
        "items long, target_mean double, model_path string").withColumn("trained_at", now)
    tables.replace_partition(row, "als_runs", "als_run_id", run_id)
    return {"als_run_id": run_id, "train_rows": n, "users": n_users, "items": n_items}


def latest_run(tables: Tables) -> dict:
    """The most recently trained ALS run (a row of als_runs as a dict)."""
    if not tables.exists("als_runs"):
        raise FileNotFoundError("no ALS run yet: run the als stage first")
    r = tables.read("als_runs").orderBy(F.col("trained_at").desc(), F.col("als_run_id").desc()).first()
    return r.asDict()


def load_model(run: dict) -> ALSModel:
    return ALSModel.load(run["model_path"])
