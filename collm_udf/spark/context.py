"""What every stage's run(ctx) gets: the session, the conf, the tables, the day and the run it belongs to."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from pyspark.sql import SparkSession

from collm_udf.config import Config
from collm_udf.spark.data_quality import DataQuality
from collm_udf.spark.runs import default_ds, new_run_id
from collm_udf.spark.tables import Tables, check_ds


@dataclass(frozen=True)
class StageContext:
    spark: SparkSession
    cfg: Config
    tables: Tables
    ds: str  # the day the run is for (YYYY-MM-DD); daily mode: what is known before its cutoff
    run_id: str
    dq: Optional[DataQuality] = None  # ingest and prepare count the rows they drop here (data_quality table)
    progress: Optional[Callable[[str], None]] = None  # lines while a long stage runs (score)
    log: Callable[[str], None] = print  # the train stage's epoch lines

    @classmethod
    def of(cls, spark: SparkSession, cfg: Config, ds: Optional[str] = None, *, tables: Optional[Tables] = None,
           run_id: Optional[str] = None, dq: Optional[DataQuality] = None,
           progress: Optional[Callable[[str], None]] = None, log: Callable[[str], None] = print) -> "StageContext":
        """A context for day ds (default: today, UTC) with the conf's tables and a new run id."""
        ds = check_ds(ds or default_ds())
        return cls(spark, cfg, tables or Tables(spark, cfg.tables), ds, run_id or new_run_id(ds), dq, progress, log)
