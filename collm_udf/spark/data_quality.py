"""Every repair a run makes to its input is counted here and lands in the data_quality table and the summary.

data_quality: run_id, ds DATE, stage, table_name, column_name, check_name, rows LONG, action
              (dropped | canonicalised | merged | truncated | removed | kept), example (one offending raw
              value), checked_at TIMESTAMP
              (appended: one row per check that found something)

A repair that touches more than interactions.max_bad_fraction of the rows is not a repair but a broken
source: the stage raises DataQualityError before it writes, naming the table, column, count and an example.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


class DataQualityError(ValueError):
    pass


@dataclass
class Finding:
    stage: str
    table: str
    column: str
    check: str
    rows: int
    action: str
    example: str | None = None

    def describe(self) -> str:
        ex = f" (e.g. {self.example})" if self.example is not None else ""
        return f"table {self.table}, column {self.column}: {self.rows} rows {self.check}{ex} -> {self.action}"


@dataclass
class DataQuality:
    findings: list[Finding] = field(default_factory=list)

    def add(self, stage: str, table: str, column: str, check: str, rows: int, action: str, *,
            example=None) -> None:
        if rows:
            self.findings.append(Finding(stage, table, column, check, int(rows), action,
                                         None if example is None else str(example)[:200]))

    def summary(self) -> list[dict]:
        return [f.__dict__.copy() for f in self.findings]

    def write(self, spark: SparkSession, tables, run_id: str, ds: str) -> None:
        if not self.findings:
            return
        df = spark.createDataFrame(
            [(run_id, ds, f.stage, f.table, f.column, f.check, f.rows, f.action, f.example) for f in self.findings],
            "run_id string, ds string, stage string, table_name string, column_name string, check_name string, "
            "rows long, action string, example string")
        tables.append(df.withColumn("ds", F.col("ds").cast("date")).withColumn("checked_at", F.current_timestamp()),
                      "data_quality")
