"""Stage 5, train: the CoLLM scorer on sampled pairs and their ALS factors; a checkpoint per version.

collm_models: model_version, ds, mode, cutoff, als_run_id, path, spec (JSON), train (JSON: the model conf),
              holdout_auc_text, holdout_auc_cf, pairs (JSON), trained_at        (partitioned by model_version)

Which pairs (collm_udf/spark/asof.py): stage 1 (text) samples the part before the label window, stage 2 (CF) and
the early-stopping holdout sample the label window, with the factors of an ALS fit that ends where the window
starts (daily mode: fitted here when it does not exist yet; split mode: the training split's fit). The labels of
stage 2 are thus never among the ALS fit's own targets. Daily mode trains when the newest model of the same model
conf is model.train.retrain_every_days older than the cutoff; a day uses the newest model whose cutoff is not after
its own (model_as_of), its factors rotated into the model's ALS space by the scorer.

Spark samples the pairs deterministically (a hash of the pair and the seed orders them, so a rerun picks the
same rows) and collects only those rows, the titles they mention and their factors; the torch core
(collm_udf.core.training.fit) trains on the driver, or, with model.train.distributed.num_processes > 1, in that many
DistributedDataParallel processes started by pyspark's TorchDistributor (collm_udf/spark/distributed.py). The
model version is derived from the model conf, the ALS run and the sample, so a rerun of the same inputs replaces
its own checkpoint and row. With model.train.mlflow.enabled the run is logged to MLflow (collm_udf/tracking.py).
Without a `model` section in the conf the stage does nothing.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from typing import Optional

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.core.signals import STATISTICS
from collm_udf.spark.stages import als, candidates
from collm_udf.spark.asof import AsOf, history_as_of, micros, newest_as_of
from collm_udf.core.signals import column
from collm_udf.spark.signals import add_stats, end_of
from collm_udf.spark.tables import Tables

PAIR_COLUMNS = ("user_id", "item_id", "label", "history")


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


def training_frames(cfg: Config, tables: Tables, asof: AsOf, run: Optional[dict] = None) -> dict:
    """{text, cf, hold} pandas frames of sampled pairs (the label window for cf and hold; see TrainingConfig),
    with the statistics among the model's signals as of the label window's start (`_sig_<name>` columns).
    With model.train.cf_negatives, cf and hold also hold candidate-pool rows (candidate_pool, from the ALS fit
    `run`): that many the user ignored and, with cf_pool_positives, up to as many the user then liked."""
    t = cfg.model.train
    pairs = tables.read("pairs").select(*PAIR_COLUMNS, "ts", "split")
    labels, before = asof.labels(pairs), asof.label_fit(pairs)
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
        pool = candidate_pool(cfg, tables, asof, run).cache()
        pools.append(pool)
        # a fifth of each label to the holdout, so that early stopping also judges the table's task
        for label, name, n in ((0, "neg", t.cf_negatives), (1, "pos", t.cf_negatives if t.cf_pool_positives else 0)):
            rows = pool.where(F.col("label") == label)
            n = min(n, rows.count())
            parts[f"hold_{name}"] = _take(rows, n // 5, t.seed)
            parts[f"cf_{name}"] = _take(rows, n - n // 5, t.seed, skip=n // 5)
    if t.text_negatives:
        # one window further back: offered at (label start - window), labelled before the label window starts
        back = dataclasses.replace(asof, cutoff=asof.label_start,
                                   label_start=asof.label_start - (asof.cutoff - asof.label_start))
        pool = candidate_pool(cfg, tables, back, label_run(tables.spark, cfg, tables, back)).cache()
        pools.append(pool)
        for label, name in ((0, "neg"), (1, "pos")):
            rows = pool.where(F.col("label") == label)
            parts[f"text_{name}"] = _take(rows, min(t.text_negatives, rows.count()), t.seed)
    # what the stage-2 factors' fit saw also gives the statistics: nothing from the label window enters them
    names = cfg.model.signals
    end = end_of(before, asof.label_start)
    frames = {k: add_stats(v, before, end, names, cfg.candidates.recent_days)
              .orderBy(F.pmod("_k", F.lit(1_000_000)), "_k", "user_id", "item_id")
              .select(*PAIR_COLUMNS, *[column(n) for n in names if n in STATISTICS]).toPandas()
              for k, v in parts.items()}
    for pool in pools:
        pool.unpersist()
    frames["text"] = pd.concat([frames.pop(k) for k in ("text", "text_neg", "text_pos") if k in frames],
                               ignore_index=True)
    frames["cf"] = pd.concat([frames.pop(k) for k in ("cf_valid", "cf_train", "cf_neg", "cf_pos") if k in frames],
                             ignore_index=True)
    frames["hold"] = pd.concat([frames.pop(k) for k in ("hold", "hold_neg", "hold_pos") if k in frames],
                               ignore_index=True)
    if len(frames["hold"]) == 0 or len(frames["cf"]) == 0:
        where = (f"the label window [{asof.label_start:%Y-%m-%d %H:%M}, {asof.cutoff:%Y-%m-%d %H:%M}) UTC"
                 if asof.daily else "the validation split")
        raise ValueError(f"table pairs: {where} has {len(frames['hold'])} holdout and {len(frames['cf'])} stage-2 "
                         "rows; the train stage needs both (check asof.label_window_days or prepare.split)")
    return frames


def candidate_pool(cfg: Config, tables: Tables, asof: AsOf, run: dict) -> DataFrame:
    """The table's task, one window back: the candidates the day of the label window's start would have offered
    (its audience, the label fit's ALS top-K, its popular and cold items), labelled as the backtest labels a day:
    1 where the user then liked the item in the window, else 0 (ignored, or rated below the like threshold).
    History as of that start. Columns as PAIR_COLUMNS + ts (the start)."""
    start = dataclasses.replace(asof, cutoff=asof.label_start)
    pairs = tables.read("pairs")
    offered = candidates.build(cfg, tables, start, run).select("user_id", "item_id")
    window = asof.labels(pairs).groupBy("user_id", "item_id").agg(F.max("label").alias("_liked"))
    hist = history_as_of(start.known(pairs), cfg.prepare.history_len)
    return (offered.join(window, ["user_id", "item_id"], "left").join(hist, "user_id", "left")
            .select("user_id", "item_id", F.coalesce("_liked", F.lit(0)).cast("int").alias("label"),
                    F.coalesce("history", F.array().cast("array<string>")).alias("history"),
                    F.timestamp_micros(F.lit(micros(asof.label_start))).alias("ts")))


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


def model_conf_json(cfg: Config) -> str:
    """The model conf that makes a model: where it trains, whether it is tracked and how often it is retrained
    do not make another one (and versions stay as before)."""
    model = dataclasses.asdict(cfg.model)
    model["train"] = {k: v for k, v in model["train"].items()
                      if k not in ("distributed", "mlflow", "retrain_every_days")}
    return json.dumps(model, sort_keys=True)


def model_version(cfg: Config, run_id: str, ds: str, frames: dict) -> str:
    sample = hashlib.sha1()
    for k in sorted(frames):
        sample.update(k.encode())
        sample.update(frames[k][["user_id", "item_id", "label"]].to_csv(index=False).encode())
    digest = hashlib.sha1(f"{model_conf_json(cfg)}|{run_id}|{sample.hexdigest()}".encode()).hexdigest()[:10]
    return f"collm_{ds.replace('-', '')}_{digest}"


def label_run(spark: SparkSession, cfg: Config, tables: Tables, asof: AsOf) -> dict:
    """The ALS fit behind stage 2's factors: daily, the fit of the interactions before the label window (fitted
    now unless it exists); split, the training split's fit."""
    if not asof.daily:
        return als.run_as_of(tables, asof)
    return als.fit_run(spark, cfg, tables, asof.ds, asof.label_fit(tables.read("pairs")), "daily", asof.label_start)


def run(spark: SparkSession, cfg: Config, tables: Tables, ds: str, log=print) -> dict:
    from collm_udf.core.pairs import PairSet
    from collm_udf.core.training import fit

    if cfg.model is None:
        return {"skipped": "no model section in the conf"}
    asof = AsOf.of(cfg, ds)
    if asof.daily:
        prev = model_as_of(tables, asof, conf=model_conf_json(cfg), required=False)
        every = cfg.model.train.retrain_every_days
        if prev is not None and asof.cutoff - prev["cutoff"] < dt.timedelta(days=every):
            return {"model_version": prev["model_version"], "als_run_id": prev["als_run_id"],
                    "reused": f"model of {prev['ds']} (cutoff {prev['cutoff']:%Y-%m-%d %H:%M} UTC; "
                              f"model.train.retrain_every_days = {every})"}
    tracked = cfg.model.train.mlflow
    if tracked.enabled:
        from collm_udf import tracking

        tracking.require_mlflow(tracked)  # fail before training, not after it
    run = label_run(spark, cfg, tables, asof)
    run_id = run["als_run_id"]
    d = json.loads(run["params"])["rank"]
    frames = training_frames(cfg, tables, asof, run)
    text, U, V = lookups(spark, tables, frames, run_id)
    sets = {k: PairSet.from_ids(df["user_id"], df["item_id"], df["history"], df["label"], text, U, V, d,
                                stats={n: df[column(n)] for n in cfg.model.signals if n in STATISTICS})
            for k, df in frames.items()}
    version = model_version(cfg, run_id, ds, frames)
    if cfg.model.train.distributed.num_processes > 1:
        from collm_udf.spark import distributed

        # Shared by every process, and named by the version: it is kept after a failure, so a rerun of the same
        # inputs resumes from the last finished epoch's state; removed after success.
        work = os.path.join(_collm_dir(cfg), f"{version}.train")
        ckpt, report = distributed.fit_distributed(spark, cfg, sets, d, run_id, work, log=log)
        out = register_checkpoint(spark, cfg, tables, ckpt, version, asof, report)
        shutil.rmtree(work, ignore_errors=True)
    else:
        with tempfile.TemporaryDirectory(prefix="collm-train-") as state:
            model, _, report = fit(cfg.model.spec(d, run_id), cfg.model.stages(), sets,
                                     skip_init=cfg.model.train.skip_init, state_dir=state, log=log)
        out = register(spark, cfg, tables, model, version, asof, report)
    if tracked.enabled:
        out["mlflow"] = tracking.log_training(
            tracked, model_conf=dataclasses.asdict(cfg.model), als_run_id=run_id, model_version=version, ds=ds,
            report=report, checkpoint_dir=out["path"])
        log(f"[train] MLflow run {out['mlflow']['run_id']}: {out['mlflow']['model_uri']}")
    return out


def _collm_dir(cfg: Config) -> str:
    root = als.models_dir(cfg)
    if "://" in root and not root.startswith("file:"):
        raise ValueError(f"tables.models_dir: {root!r} is not a local or mounted path (e.g. /Volumes/...); "
                         "torch checkpoints are written with local file APIs")
    return os.path.join(root.removeprefix("file:"), "collm")


def register(spark: SparkSession, cfg: Config, tables: Tables, model, version: str, asof: AsOf,
             report: dict) -> dict:
    """Write the checkpoint under <models_dir>/collm/<version> and its row in collm_models."""
    from collm_udf.core import checkpoint

    return _publish(spark, cfg, tables, lambda staging: checkpoint.save(model, staging), model.spec, version, asof,
                    report)


def register_checkpoint(spark: SparkSession, cfg: Config, tables: Tables, path: str, version: str, asof: AsOf,
                        report: dict) -> dict:
    """register() for a checkpoint directory already written (by rank 0 of a distributed training): moved."""
    from collm_udf.core import checkpoint

    return _publish(spark, cfg, tables, lambda staging: shutil.move(path, staging), checkpoint.read_spec(path),
                    version, asof, report)


def _publish(spark: SparkSession, cfg: Config, tables: Tables, write, spec, version: str, asof: AsOf,
             report: dict) -> dict:
    final = os.path.join(_collm_dir(cfg), version)
    staging = final + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    write(staging)
    # Swap in the finished checkpoint: a crash above never leaves a half-written model under `final`.
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)

    best = {s: report[s]["best_auc"] if s in report else None for s in ("text", "cf")}
    conf = model_conf_json(cfg) if cfg.model is not None else "{}"
    cutoff_us = None if asof.cutoff is None else micros(asof.cutoff)
    row = spark.createDataFrame(
        [(version, asof.ds, asof.mode, cutoff_us, spec.als_run_id, final, json.dumps(spec.to_dict()), conf,
          best["text"], best["cf"], json.dumps(report.get("pairs", {})))],
        "model_version string, ds string, mode string, cutoff_us long, als_run_id string, path string, "
        "spec string, train string, holdout_auc_text double, holdout_auc_cf double, pairs string")
    row = (row.withColumn("cutoff", F.timestamp_micros("cutoff_us")).drop("cutoff_us")
           .withColumn("trained_at", F.current_timestamp()))
    tables.replace_partition(row, "collm_models", "model_version", version)
    return {"model_version": version, "als_run_id": spec.als_run_id, "holdout_auc_text": best["text"],
            "holdout_auc_cf": best["cf"], "pairs": report.get("pairs", {}), "path": final}


def model_as_of(tables: Tables, asof: AsOf, conf: Optional[str] = None, required: bool = True) -> Optional[dict]:
    """The CoLLM model a day uses: daily mode, the newest model whose cutoff is not after the day's; split mode,
    the newest split-mode model. `conf`: only models of this model conf (model_conf_json)."""
    found = newest_as_of(tables, "collm_models", asof, "model_version",
                         None if conf is None else F.col("train") == conf)
    if found is None and required:
        when = f"as of ds={asof.ds} (cutoff {asof.cutoff:%Y-%m-%d %H:%M} UTC)" if asof.daily else "in split mode"
        when += "" if conf is None else " of the conf's model section"
        raise FileNotFoundError(f"table collm_models: no CoLLM model {when}: run the train stage first (it needs "
                                "a model section)")
    return found
