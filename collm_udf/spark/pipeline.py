"""The stages in order, run one at a time or all together, and the run summary.

Each stage reads its inputs from Delta tables and writes its outputs to Delta tables, so any stage can run on
its own (a scheduler task per stage) or all in one process. See README for the tables.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.stages import als, candidates, evaluate, idmap, ingest, prepare, score, train
from collm_udf.spark.asof import AsOf
from collm_udf.spark.data_quality import DataQuality
from collm_udf.spark.tables import TABLES, Tables, check_ds

log = logging.getLogger(__name__)

from collm_udf.spark.stages import STAGES  # noqa: E402
PARTITIONED_BY_DS = ("candidates", "recommendations")


def new_run_id(ds: str) -> str:
    return f"run_{ds.replace('-', '')}_{dt.datetime.now(dt.timezone.utc):%H%M%S}_{uuid.uuid4().hex[:6]}"


def run_stage(stage: str, spark: SparkSession, cfg: Config, tables: Tables, ds: str, run_id: str,
              dq: DataQuality | None = None, progress=None) -> dict:
    if stage == "ingest":
        return ingest.run(spark, cfg, tables, dq, ds=ds)
    if stage == "prepare":
        return prepare.run(spark, cfg, tables, dq)
    if stage == "idmap":
        return idmap.run(spark, cfg, tables, ds)
    if stage == "als":
        return als.run(spark, cfg, tables, ds)
    if stage == "train":
        return train.run(spark, cfg, tables, ds)
    if stage == "candidates":
        return candidates.run(spark, cfg, tables, ds)
    if stage == "score":
        return score.run(spark, cfg, tables, ds, progress=progress)  # progress lines of long scoring
    if stage == "evaluate":
        return evaluate.run(spark, cfg, tables, ds, run_id)
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def table_report(tables: Tables, ds: str) -> dict:
    """Location and row count of every table that exists (ds-partitioned tables: that day's rows)."""
    out = {}
    for name in TABLES:
        if not tables.exists(name):
            continue
        df = tables.read(name)
        if name in PARTITIONED_BY_DS:
            df = df.where(F.col("ds") == F.lit(ds).cast("date"))
        out[name] = {"location": tables.location(name), "rows": df.count()}
    return out


def run(spark: SparkSession, cfg: Config, stages: list[str] | None = None, ds: str | None = None,
        run_id: str | None = None, progress=None) -> dict:
    """Run `stages` (default: all) for day `ds` (default: today, UTC) and return the run summary."""
    ds = check_ds(ds or dt.datetime.now(dt.timezone.utc).date().isoformat())
    stages = list(stages or STAGES)
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}; stages: {', '.join(STAGES)}")
    run_id = run_id or new_run_id(ds)
    tables = Tables(spark, cfg.tables)
    t0 = time.time()
    summary: dict = {"name": cfg.name, "run_id": run_id, "ds": ds, "stages": {}}
    dq = DataQuality()
    try:
        for s in sorted(stages, key=STAGES.index):
            t = time.time()
            if progress:
                progress(f"[collm] {s} ...")
            result = run_stage(s, spark, cfg, tables, ds, run_id, dq, progress)
            result["wall_s"] = round(time.time() - t, 1)
            summary["stages"][s] = result
            if progress:
                progress(f"[collm] {s} done in {result['wall_s']}s")
    finally:  # what a failed run found is kept too: it says why the run failed
        dq.write(spark, tables, run_id, ds)
    summary["data_quality"] = dq.summary()
    summary["asof"] = AsOf.of(cfg, ds).describe()
    fit = als.run_as_of(tables, AsOf.of(cfg, ds), required=False)
    if fit is not None:
        summary["als_run_id"] = fit["als_run_id"]
    if "score" in summary["stages"]:
        summary["model_version"] = summary["stages"]["score"]["model_version"]
    if "evaluate" in summary["stages"]:
        summary["metrics"] = summary["stages"]["evaluate"]
        summary["stages"]["evaluate"] = {"wall_s": summary["metrics"].pop("wall_s")}
    summary["tables"] = table_report(tables, ds)
    try:
        summary["spark_master"] = spark.sparkContext.master
    except Exception:  # Spark Connect sessions have no SparkContext
        pass
    summary["wall_s"] = round(time.time() - t0, 1)
    return summary
