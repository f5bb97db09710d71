"""The collm_models table: which model a conf makes (model_conf_json), its version, writing a checkpoint and its
row (register), and which model a day uses (model_as_of).

collm_models: model_version, ds, mode, cutoff, als_run_id, path, spec (JSON), train (JSON: the model conf),
              holdout_auc_text, holdout_auc_cf, pairs (JSON), trained_at        (partitioned by model_version)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Optional

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.core import checkpoint
from collm_udf.spark.asof import AsOf, fit_dict, fit_rows, micros, newest_as_of
from collm_udf.spark.stages import als
from collm_udf.spark.tables import Tables


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


def collm_dir(cfg: Config) -> str:
    root = als.models_dir(cfg)
    if "://" in root and not root.startswith("file:"):
        raise ValueError(f"tables.models_dir: {root!r} is not a local or mounted path (e.g. /Volumes/...); "
                         "torch checkpoints are written with local file APIs")
    return os.path.join(root.removeprefix("file:"), "collm")


def register(spark: SparkSession, cfg: Config, tables: Tables, model, *, version: str, asof: AsOf,
             report: dict) -> dict:
    """Write the checkpoint under <models_dir>/collm/<version> and its row in collm_models."""
    return _publish(spark, cfg, tables, lambda staging: checkpoint.save(model, staging), model.spec,
                    version=version, asof=asof, report=report)


def register_checkpoint(spark: SparkSession, cfg: Config, tables: Tables, path: str, *, version: str,
                        asof: AsOf, report: dict) -> dict:
    """register() for a checkpoint directory already written (by rank 0 of a distributed training): moved."""
    return _publish(spark, cfg, tables, lambda staging: shutil.move(path, staging), checkpoint.read_spec(path),
                    version=version, asof=asof, report=report)


def _publish(spark: SparkSession, cfg: Config, tables: Tables, write, spec, *, version: str, asof: AsOf,
             report: dict) -> dict:
    final = os.path.join(collm_dir(cfg), version)
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


def find_model(tables: Tables, version: str) -> dict:
    """The collm_models row of one model version (an error naming it when it is gone)."""
    rows = fit_rows(tables, "collm_models")
    row = None if rows is None else rows.where(F.col("model_version") == version).first()
    if row is None:
        raise FileNotFoundError(f"table collm_models: no model {version!r} (named by table gate as what serves)")
    return fit_dict(row)
