"""Stage 1, ingest: read the interaction and item sources named in the conf into two normalised Delta tables.

interactions: user_id STRING, item_id STRING, ts TIMESTAMP, rating DOUBLE, label INT, split STRING
items:        item_id STRING, text STRING

Ids become strings whatever their source type, so string and long warehouse ids take one path; the id-map
stage gives ALS its dense ints. Rows with a null or blank id or timestamp are dropped and counted.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from collm_udf.config import Config, SourceConfig
from collm_udf.datasets import resolve_uri
from collm_udf.spark.tables import Tables


class SourceError(ValueError):
    """A source table is missing, unreadable, or lacks a mapped column."""


def source_name(src: SourceConfig) -> str:
    return src.table if src.table else src.path


def read_source(spark: SparkSession, src: SourceConfig) -> DataFrame:
    if src.table:
        if not spark.catalog.tableExists(src.table):
            raise SourceError(f"source table {src.table} does not exist")
        return spark.read.table(src.table)
    path = resolve_uri(src.path)
    reader = spark.read.format(src.format).options(**src.options)
    if src.schema:
        reader = reader.schema(src.schema)
    return reader.load(path)


def require_columns(df: DataFrame, src: SourceConfig, mapping: dict[str, str | None]) -> None:
    have = set(df.columns)
    for role, col in mapping.items():
        if col is not None and col not in have:
            raise SourceError(f"source {source_name(src)}: mapped column {role}={col!r} not found; "
                              f"columns are: {', '.join(df.columns)}")


def _timestamp(df: DataFrame, col: str, unit: str):
    dtype = df.schema[col].dataType
    c = F.col(col)
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        return c.cast("timestamp")
    if isinstance(dtype, T.DateType):
        return c.cast("timestamp")
    if isinstance(dtype, T.NumericType):
        return {"s": F.timestamp_seconds, "ms": F.timestamp_millis, "us": F.timestamp_micros}[unit](
            c.cast("long"))
    return F.to_timestamp(c)


def _id(df: DataFrame, col: str):
    """Canonical string id. Fractional ids (a CSV inferred as double gives 42.0) go through long first so
    that the same id reads '42' from every source."""
    c = F.col(col)
    if isinstance(df.schema[col].dataType, T.FractionalType):
        c = c.cast("long")
    return F.trim(c.cast("string"))


def normalise_interactions(df: DataFrame, cfg: Config) -> DataFrame:
    src, cols = cfg.interactions.source, cfg.interactions.columns
    require_columns(df, src, {"user": cols.user, "item": cols.item, "timestamp": cols.timestamp,
                              "rating": cols.rating, "label": cols.label, "split": cols.split})
    return df.select(
        _id(df, cols.user).alias("user_id"),
        _id(df, cols.item).alias("item_id"),
        _timestamp(df, cols.timestamp, cfg.interactions.timestamp_unit).alias("ts"),
        (F.col(cols.rating).cast("double") if cols.rating else F.lit(None).cast("double")).alias("rating"),
        (F.col(cols.label).cast("int") if cols.label else F.lit(None).cast("int")).alias("label"),
        (F.lower(F.col(cols.split).cast("string")) if cols.split else F.lit(None).cast("string")).alias("split"),
    )


def normalise_items(df: DataFrame, cfg: Config) -> DataFrame:
    src, cols = cfg.items.source, cfg.items.columns
    require_columns(df, src, {"item": cols.item, **{f"text[{i}]": c for i, c in enumerate(cols.text)}})
    text = F.concat_ws(cfg.items.text_separator, *[F.col(c).cast("string") for c in cols.text])
    return df.select(_id(df, cols.item).alias("item_id"), text.alias("text"))


def run(spark: SparkSession, cfg: Config, tables: Tables) -> dict:
    raw = normalise_interactions(read_source(spark, cfg.interactions.source), cfg)
    valid = (F.col("user_id").isNotNull() & (F.col("user_id") != "") & F.col("item_id").isNotNull()
             & (F.col("item_id") != "") & F.col("ts").isNotNull())
    inter = raw.where(valid)
    items = normalise_items(read_source(spark, cfg.items.source), cfg)
    items = items.where(F.col("item_id").isNotNull() & (F.col("item_id") != ""))
    # One row per item id: a catalog that lists an item twice keeps the first text in id order.
    items = items.groupBy("item_id").agg(F.min("text").alias("text"))

    n_raw, n_inter = raw.count(), inter.count()
    if n_inter == 0:  # checked before writing: an empty day never replaces a good table
        raise SourceError(f"source {source_name(cfg.interactions.source)}: no usable interactions "
                          f"({n_raw} rows read)")
    tables.overwrite(inter, "interactions")
    tables.overwrite(items, "items")
    return {"interactions": n_inter, "items": tables.read("items").count(),
            "dropped_null_ids_or_ts": n_raw - n_inter}
