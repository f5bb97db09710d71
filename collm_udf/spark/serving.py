"""The gate table: what serves the daily table from each training on (written by the train stage, read by the
score and evaluate stages). One row per training of a conf:

gate: gate_id, ds, mode, cutoff, conf (serving_conf), model_version (the CoLLM model trained, null for the
      features-only scorer), als_run_id (the label window's ALS fit), features (the features-only ranker, JSON:
      collm_udf/core/features.py), served ('collm:<model_version>' | 'features:<gate_id>' | 'als' | 'popularity' |
      'recent_popularity'), promoted (the new model serves), reason, k, margin, truth_users, results (JSON: each
      candidate ranker's held-out NDCG@k and Recall@k), trained_at          (partitioned by gate_id)

A day serves the decision of the newest row of its conf whose cutoff is not after its own (asof.newest_as_of), so
a replayed day never reads a later decision.
"""
from __future__ import annotations

import json
from typing import Optional

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.asof import AsOf, micros, newest_as_of
from collm_udf.spark.model_registry import model_conf_json
from collm_udf.spark.tables import Tables

def serving_conf(cfg: Config) -> str:
    """What makes a decision this conf's: its model section and its scorer."""
    return json.dumps({"model": json.loads(model_conf_json(cfg)), "scorer": cfg.score.scorer}, sort_keys=True)


def decision_as_of(tables: Tables, asof: AsOf, cfg: Config) -> Optional[dict]:
    """The newest decision of the conf as of the day, or None."""
    return newest_as_of(tables, "gate", asof, "gate_id", F.col("conf") == serving_conf(cfg))


def decision(tables: Tables, gate_id: str) -> Optional[dict]:
    if not tables.exists("gate"):
        return None
    row = tables.read("gate").where(F.col("gate_id") == gate_id).first()
    return None if row is None else row.asDict()


def record(spark: SparkSession, cfg: Config, tables: Tables, asof: AsOf, row: dict) -> dict:
    """Write (replace) the decision row `row` (gate_id, model_version, als_run_id, features, served, promoted,
    reason, k, margin, truth_users, results)."""
    cutoff_us = None if asof.cutoff is None else micros(asof.cutoff)
    df = spark.createDataFrame(
        [(row["gate_id"], asof.ds, asof.mode, cutoff_us, serving_conf(cfg), row.get("model_version"),
          row["als_run_id"], row["features"], row["served"], bool(row["promoted"]), row["reason"], row.get("k"),
          row.get("margin"), row.get("truth_users"), json.dumps(row.get("results") or {}))],
        "gate_id string, ds string, mode string, cutoff_us long, conf string, model_version string, "
        "als_run_id string, features string, served string, promoted boolean, reason string, k int, margin double, "
        "truth_users long, results string")
    df = (df.withColumn("cutoff", F.timestamp_micros("cutoff_us")).drop("cutoff_us")
          .withColumn("trained_at", F.current_timestamp()))
    tables.replace_partition(df, "gate", "gate_id", row["gate_id"])
    return row
