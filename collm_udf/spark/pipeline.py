"""The stages in order (collm_udf/spark/stages: the registry), run one at a time or all together over one stage
context, and the run summary.

Each stage reads its inputs from Delta tables and writes its outputs to Delta tables, so any stage can run on
its own (a scheduler task per stage) or all in one process. See README for the tables.
"""
from __future__ import annotations

import logging
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark import stages as registry
from collm_udf.spark.asof import AsOf
from collm_udf.spark.context import StageContext
from collm_udf.spark.data_quality import DataQuality
from collm_udf.spark.stages import als
from collm_udf.spark.tables import TABLES, Tables

log = logging.getLogger(__name__)

PARTITIONED_BY_DS = ("candidates", "recommendations")


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
    stages = registry.select(stages)
    ctx = StageContext.of(spark, cfg, ds, run_id=run_id, dq=DataQuality(), progress=progress)
    tables, ds, dq = ctx.tables, ctx.ds, ctx.dq
    t0 = time.time()
    summary: dict = {"name": cfg.name, "run_id": ctx.run_id, "ds": ds, "stages": {}}
    try:
        for s in stages:
            t = time.time()
            if progress:
                progress(f"[collm] {s} ...")
            result = registry.stage(s)(ctx)
            result["wall_s"] = round(time.time() - t, 1)
            if s == "prepare" and ctx.base_cfg.tempo.enabled:  # the pairs the day's settings are measured on
                ctx = ctx.rederived()
            summary["stages"][s] = result
            if progress:
                progress(f"[collm] {s} done in {result['wall_s']}s")
    finally:  # what a failed run found is kept too: it says why the run failed
        dq.write(spark, tables, ctx.run_id, ds)
    summary["data_quality"] = dq.summary()
    summary["asof"] = AsOf.of(ctx.cfg, ds).describe()
    if ctx.tempo:
        summary["tempo"] = ctx.tempo
    fit = als.run_as_of(tables, AsOf.of(ctx.cfg, ds), required=False)
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
