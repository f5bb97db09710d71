"""What the score stage does after it wrote a day: point consumers at the newest day, and bound the growth of the
daily tables.

Newest complete day: recommendations' newest ds. A day's partition is written in one Delta commit (replaceWhere),
so every ds in the table is complete; a rerun of an older day does not move it.
- catalog tables: the view <prefix>recommendations_latest selects that ds (a literal, so a consumer's query prunes
  to one partition and reads one stable day while the next is written); the score stage replaces it.
- path tables (no catalog to hold a view): `collm latest --conf CONF` prints the ds and the table's path.

Retention (tables.retention_days, off when unset): partitions of candidates and recommendations whose ds is more
than that many days before the newest ds are deleted (a metadata-only Delta delete: whole files), never the day
just written, and both tables are VACUUMed with the same horizon in hours. metrics, als_runs, collm_models, gate,
the factors, the saved fits and the checkpoints are never touched: they are keyed by run, not by day, and the
newest day's fit and model are among them.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

from pyspark.sql import functions as F

from collm_udf.spark.session import session_conf
from collm_udf.spark.tables import Tables, sql_string

DAILY = ("candidates", "recommendations")  # the tables retention bounds


def newest_ds(tables: Tables) -> Optional[str]:
    """The newest ds of recommendations (YYYY-MM-DD), or None when it has no day yet."""
    if not tables.exists("recommendations"):
        return None
    got = tables.read("recommendations").agg(F.max("ds")).first()[0]
    return None if got is None else got.isoformat()


def latest(tables: Tables) -> dict:
    """{ds, table, view}: the newest complete day, where its table lives, and the view on it (catalog tables)."""
    ds = newest_ds(tables)
    if ds is None:
        raise FileNotFoundError(f"table recommendations ({tables.location('recommendations')}) has no day yet: "
                                "run the score stage first")
    return {"ds": ds, "table": tables.location("recommendations"),
            "view": None if tables.by_path else tables.latest_view()}


def refresh_latest_view(tables: Tables) -> Optional[str]:
    """Catalog tables: (re)create the view on the newest day; returns its name (None with path tables)."""
    if tables.by_path:
        return None
    ds = latest(tables)["ds"]
    view = tables.latest_view()
    comment = (f"collm: the newest complete day of {tables.location('recommendations')} (ds {ds}); the score "
               "stage replaces this view after each day it writes")
    tables.spark.sql(f"CREATE OR REPLACE VIEW {view} COMMENT {sql_string(comment)} AS SELECT * FROM "
                     f"{tables.location('recommendations')} WHERE ds = DATE {sql_string(ds)}")
    return view


def apply_retention(tables: Tables, retention_days: Optional[int], written_ds: str) -> Optional[dict]:
    """Drop the daily partitions older than the horizon and VACUUM (see the module's doc); returns what was
    done for the run summary, or None when retention is off."""
    if retention_days is None:
        return None
    newest = max(dt.date.fromisoformat(newest_ds(tables) or written_ds), dt.date.fromisoformat(written_ds))
    horizon = newest - dt.timedelta(days=retention_days)
    old = (F.col("ds") < F.lit(horizon.isoformat()).cast("date")) & (F.col("ds") != F.lit(written_ds).cast("date"))
    done = {"retention_days": retention_days, "kept_from": horizon.isoformat(), "dropped": {}}
    for name in DAILY:
        if not tables.exists(name):
            continue
        days = sorted(r[0].isoformat() for r in tables.read(name).where(old).select("ds").distinct().collect())
        table = tables.delta(name)
        if days:
            table.delete(old)
        # files no version younger than the horizon needs. VACUUM lists the table's folders with Spark's partition
        # discovery parallelism (default 10,000 tasks: 24 s a table on 2 local cores); a daily table has a folder
        # a day, so the cluster's cores are plenty
        cores = str(max(2, tables.spark.sparkContext.defaultParallelism))
        with session_conf(tables.spark, "spark.sql.sources.parallelPartitionDiscovery.parallelism", cores):
            table.vacuum(retention_days * 24.0)
        done["dropped"][name] = days
    return done
