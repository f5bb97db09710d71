"""Where collm's Delta tables live and how they are written.

A conf names either a root directory (each table is a Delta path under it) or a catalog schema (managed
tables). Table names are fixed (collm_udf/spark/contract.py describes each, with its columns) and may take a
prefix. Names are checked identifiers, so nothing from a conf is ever pasted into SQL as free text.

Every write carries the contract: its columns' comments ride in the written schema, and the first write of a
table in a process sets the table comment and `collm.schema_version` (and the comment of any column an older
version wrote without one), so a catalog shows what each table and column means.
"""
from __future__ import annotations

import datetime as dt
import os
import re

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from collm_udf.config import TablesConfig, check_identifier
from collm_udf.spark.contract import CONTRACT, SCHEMA_VERSION, VERSION_PROPERTY

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:-]+$")

TABLES = tuple(CONTRACT)
LATEST_VIEW = "recommendations_latest"  # catalog tables: the newest complete day of recommendations


def sql_string(text: str) -> str:
    """A SQL string literal of `text` (ours: comments and dates)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
        self._described: set[str] = set()  # tables whose comments and version this process has checked

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

    def sql_name(self, name: str) -> str:
        """The table as SQL names it: delta.`path`, or the catalog name (checked identifiers)."""
        loc = self.location(name)
        return "delta.`" + loc.replace("`", "``") + "`" if self.by_path else loc

    def delta(self, name: str) -> DeltaTable:
        loc = self.location(name)
        return DeltaTable.forPath(self.spark, loc) if self.by_path else DeltaTable.forName(self.spark, loc)

    def latest_view(self) -> str:
        """The catalog name of the view on the newest complete day of recommendations (catalog tables only)."""
        if self.by_path:
            raise ValueError("path tables have no catalog views: `collm latest --conf CONF` names the newest day")
        full = check_identifier(self.cfg.prefix + LATEST_VIEW, "view name")
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
        self.describe(name)

    @staticmethod
    def _with_comments(df: DataFrame, name: str) -> DataFrame:
        """`df` with the contract's column comments in its schema (a new or overwritten table keeps them)."""
        comments = CONTRACT[name].columns
        return df.select(*[F.col(f"`{f.name}`").alias(f.name, metadata={**f.metadata, "comment": comments[f.name]})
                           if f.name in comments else F.col(f"`{f.name}`") for f in df.schema])

    def describe(self, name: str, force: bool = False) -> None:
        """Give table `name` its contract's table comment, schema version and column comments where it lacks
        them (once per process: later writes keep what Delta stored)."""
        if name in self._described and not force:
            return
        spec, target = CONTRACT[name], self.sql_name(name)
        for f in self.read(name).schema:
            want = spec.columns.get(f.name)
            if want is not None and f.metadata.get("comment") != want:
                self.spark.sql(f"ALTER TABLE {target} ALTER COLUMN `{f.name}` COMMENT {sql_string(want)}")
        detail = self.delta(name).detail().select("description", "properties").first()
        if detail["description"] != spec.comment or detail["properties"].get(VERSION_PROPERTY) != str(SCHEMA_VERSION):
            self.spark.sql(f"ALTER TABLE {target} SET TBLPROPERTIES ('comment' = {sql_string(spec.comment)}, "
                           f"'{VERSION_PROPERTY}' = '{SCHEMA_VERSION}')")
        self._described.add(name)

    def overwrite(self, df: DataFrame, name: str, partition_by: list[str] | None = None) -> None:
        """Replace a whole table (an atomic new Delta version; readers see old or new, never a mix)."""
        w = self._with_comments(df, name).write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        if partition_by:
            w = w.partitionBy(*partition_by)
        self._write(w, name)

    def append(self, df: DataFrame, name: str, partition_by: list[str] | None = None) -> None:
        """Add rows; new columns are added to the table (a table written by an older version gains them)."""
        w = self._with_comments(df, name).write.format("delta").mode("append").option("mergeSchema", "true")
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
        df = self._with_comments(df, name)
        if not self.by_path and self.exists(name):
            # An existing catalog table: the v2 writer's overwrite-by-condition (Delta's replaceWhere, with the same
            # refusal of rows outside it). saveAsTable with replaceWhere fails from the third write on with Spark's
            # session catalog ("partition column names in the table schema do not match": tests/test_contract.py).
            cond = F.col(column) == F.lit(value).cast(df.schema[column].dataType)
            df.writeTo(self.location(name)).option("mergeSchema", "true").overwrite(cond)
            self.describe(name)
            return
        w = (df.write.format("delta").mode("overwrite").partitionBy(column)
             .option("replaceWhere", f"{column} = '{value}'").option("mergeSchema", "true"))
        self._write(w, name)
