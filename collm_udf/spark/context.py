"""What every stage's run(ctx) gets: the session, the conf, the tables, the day and the run it belongs to."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Optional

from pyspark.sql import SparkSession

from collm_udf.config import Config
from collm_udf.spark.data_quality import DataQuality
from collm_udf.spark.runs import default_ds, new_run_id
from collm_udf.spark.tables import Tables, check_ds
from collm_udf.spark.tempo import derive


@dataclass(frozen=True)
class StageContext:
    spark: SparkSession
    cfg: Config  # the day's conf: with conf section tempo, its windows and thresholds derived for ds
    tables: Tables
    ds: str  # the day the run is for (YYYY-MM-DD); daily mode: what is known before its cutoff
    run_id: str
    dq: Optional[DataQuality] = None  # ingest and prepare count the rows they drop here (data_quality table)
    progress: Optional[Callable[[str], None]] = None  # lines while a long stage runs (score)
    log: Callable[[str], None] = print  # the train stage's epoch lines
    base_cfg: Optional[Config] = None  # the conf as loaded (another day's conf is derived from it)
    tempo: dict = field(default_factory=dict)  # what collm_udf/spark/tempo.py derived for ds (empty: nothing)

    @classmethod
    def of(cls, spark: SparkSession, cfg: Config, ds: Optional[str] = None, *, tables: Optional[Tables] = None,
           run_id: Optional[str] = None, dq: Optional[DataQuality] = None,
           progress: Optional[Callable[[str], None]] = None, log: Callable[[str], None] = print) -> "StageContext":
        """A context for day ds (default: today, UTC) with the conf's tables and a new run id."""
        ds = check_ds(ds or default_ds())
        tables = tables or Tables(spark, cfg.tables)
        return cls(spark, cfg, tables, ds, run_id or new_run_id(ds), dq, progress, log, base_cfg=cfg).rederived()

    def rederived(self) -> "StageContext":
        """The context with the day's conf derived again from the conf as loaded (after ingest and prepare have
        rewritten the pairs it is measured on)."""
        base = self.base_cfg or self.cfg
        cfg, tempo = derive(base, self.tables, self.ds)
        return dataclasses.replace(self, cfg=cfg, base_cfg=base, tempo=tempo)
