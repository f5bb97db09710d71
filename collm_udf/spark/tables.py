"""Where collm's Delta tables live and how they are written.

A conf names either a root directory (each table is a Delta path under it) or a catalog schema (managed
tables). Table names are fixed (README lists each with its columns) and may take a prefix. Names are checked
identifiers, so nothing from a conf is ever pasted into SQL as free text.
"""
from __future__ import annotations

import datetime as dt
import os
import re

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from collm_udf.config import TablesConfig, check_identifier

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:-]+$")

TABLES = (
    "interactions", "items", "pairs", "id_map", "als_runs", "user_factors", "item_factors",
    "collm_models", "gate", "candidates", "recommendations", "metrics", "data_quality",
)


def check_ds(ds: str) -> str:
    """A run date YYYY-MM-DD; parsing it is what makes it safe inside a replaceWhere predicate."""
    try:
        return dt.date.fromisoformat(ds).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"ds {ds!r} is not a date YYYY-MM-DD") from None


class Tables:
    def __init__(self, spark: SparkSession, cfg: TablesConfig):
        self.spark = spark
        self.cfg = cfg

    def _check(self, name: str) -> str:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
        return check_identifier(self.cfg.prefix + name, "table name")

    @property
    def by_path(self) -> bool:
        return self.cfg.root is not None

    def location(self, name: str) -> str:
        """The Delta path, or the qualified catalog name, of a table."""
        full = self._check(name)
        if self.by_path:
            return os.path.join(self.cfg.root, full)
        return ".".join(p for p in (self.cfg.catalog, self.cfg.schema, full) if p)

    def exists(self, name: str) -> bool:
        loc = self.location(name)
        if self.by_path:
            return os.path.isdir(os.path.join(loc, "_delta_log")) and DeltaTable.isDeltaTable(self.spark, loc)
        return self.spark.catalog.tableExists(loc)

    def read(self, name: str) -> DataFrame:
        loc = self.location(name)
        if not self.exists(name):
            raise FileNotFoundError(f"table {name} ({loc}) does not exist yet: run the stage that writes it")
        if self.by_path:
            return self.spark.read.format("delta").load(loc)
        return self.spark.read.table(loc)

    def _write(self, writer, name: str) -> None:
        loc = self.location(name)
        if self.by_path:
            writer.save(loc)
        else:
            writer.saveAsTable(loc)

    def overwrite(self, df: DataFrame, name: str, partition_by: list[str] | None = None) -> None:
        """Replace a whole table (an atomic new Delta version; readers see old or new, never a mix)."""
        w = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        if partition_by:
            w = w.partitionBy(*partition_by)
        self._write(w, name)

    def append(self, df: DataFrame, name: str, partition_by: list[str] | None = None) -> None:
        """Add rows; new columns are added to the table (a table written by an older version gains them)."""
        w = df.write.format("delta").mode("append").option("mergeSchema", "true")
        if partition_by:
            w = w.partitionBy(*partition_by)
        self._write(w, name)

    def replace_partition(self, df: DataFrame, name: str, column: str, value: str) -> None:
        """Atomically replace the rows where column == value (a rerun of a day replaces that day).

        Delta's replaceWhere also refuses rows of `df` outside the predicate, so a bug cannot spill into
        another day's partition. `column` is a fixed identifier and `value` a checked date or run id.
        """
        check_identifier(column, "partition column")
        if not _SAFE_VALUE.match(value):
            raise ValueError(f"table {name}: partition value {value!r} for {column} has unsafe characters")
        w = (df.write.format("delta").mode("overwrite").partitionBy(column)
             .option("replaceWhere", f"{column} = '{value}'").option("mergeSchema", "true"))
        self._write(w, name)
