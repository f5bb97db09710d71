"""Stage 1, ingest: read the interaction and item sources named in the conf into two normalised Delta tables.

interactions: user_id STRING, item_id STRING, ts TIMESTAMP, rating DOUBLE, label INT, split STRING
items:        item_id STRING, text STRING

Ids become strings whatever their source type, so string and long warehouse ids take one path; the id-map
stage gives ALS its dense ints. Unusable rows (null or blank ids, unparseable or future timestamps, null/NaN
or out-of-range ratings, labels other than 0/1) are dropped and counted in data_quality; more than
interactions.max_bad_fraction of them fails the stage before it writes. Item texts: duplicates merged, long
texts truncated, empty or undecodable texts and interaction items missing from the catalog counted.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from collm_udf.config import Config, SourceConfig
from collm_udf.datasets import resolve_uri
from collm_udf.spark.asof import AsOf, ts_from
from collm_udf.spark.data_quality import DataQuality, DataQualityError
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


def interaction_checks(df: DataFrame, cfg: Config) -> dict:
    """check name -> (column, condition that makes a row unusable, example value shown in the report)."""
    cols, ic = cfg.interactions.columns, cfg.interactions
    blank = lambda c: F.col(c).isNull() | (F.col(c) == "")  # noqa: E731
    checks = {
        "null or blank user id": (cols.user, blank("user_id"), F.lit(None)),
        "null or blank item id": (cols.item, blank("item_id"), F.lit(None)),
        "null or unparseable timestamp": (cols.timestamp, F.col("ts").isNull(), F.lit(None)),
        # more than a day ahead: a clock error, or a numeric column in a smaller unit than timestamp_unit says
        "timestamp in the future (mixed units?)": (cols.timestamp, F.col("ts") > F.current_timestamp()
                                                   + F.expr("INTERVAL 1 DAY"), F.col("ts").cast("string")),
    }
    if cols.label is None:
        r = F.col("rating")
        checks["rating null or NaN"] = (cols.rating, r.isNull() | F.isnan(r), F.lit(None))
        if ic.rating_min is not None:
            checks[f"rating below {ic.rating_min:g}"] = (cols.rating, r < ic.rating_min, r.cast("string"))
        if ic.rating_max is not None:
            checks[f"rating above {ic.rating_max:g}"] = (cols.rating, r > ic.rating_max, r.cast("string"))
    else:
        checks["label not 0 or 1"] = (cols.label, F.col("label").isNull() | ~F.col("label").isin(0, 1),
                                      F.col("label").cast("string"))
    return checks


def run(spark: SparkSession, cfg: Config, tables: Tables, dq: DataQuality | None = None,
        ds: str | None = None) -> dict:
    """Copy the sources into `interactions` and `items`. The whole history is kept, also what lies after the
    cutoff of `ds` (a backfilled day's backtest needs it); daily mode counts those rows in data_quality, and no
    other stage of that day reads them (collm_udf/spark/asof.py)."""
    dq = dq if dq is not None else DataQuality()
    src = source_name(cfg.interactions.source)
    raw = normalise_interactions(read_source(spark, cfg.interactions.source), cfg)
    checks = interaction_checks(raw, cfg)
    aggs = [F.count("*").alias("n")]
    for i, (_, cond, ex) in enumerate(checks.values()):
        aggs += [F.count(F.when(cond, 1)).alias(f"c{i}"), F.first(F.when(cond, ex), ignorenulls=True).alias(f"e{i}")]
    got = raw.agg(*aggs).first()
    n_raw = got["n"]
    bad = F.lit(False)
    for i, (name, (column, cond, _)) in enumerate(checks.items()):
        bad = bad | F.coalesce(cond, F.lit(True))
        dq.add("ingest", f"interactions ({src})", column, name, got[f"c{i}"], "dropped", got[f"e{i}"])
    inter = raw.where(~bad)
    n_inter = inter.count()
    if n_inter == 0:  # checked before writing: an empty day never replaces a good table
        raise SourceError(f"source {src}: no usable interactions ({n_raw} rows read)"
                          + "".join(f"; {f.describe()}" for f in dq.findings))
    if n_raw - n_inter > cfg.interactions.max_bad_fraction * n_raw:
        raise DataQualityError(f"source {src}: {n_raw - n_inter} of {n_raw} interaction rows are unusable (more "
                               f"than interactions.max_bad_fraction = {cfg.interactions.max_bad_fraction}); "
                               "nothing written. " + "; ".join(f.describe() for f in dq.findings))

    if ds is not None and cfg.asof.mode == "daily":
        late = inter.where(ts_from(AsOf.of(cfg, ds).cutoff)).agg(
            F.count(F.lit(1)).alias("n"), F.min("ts").cast("string").alias("e")).first()
        dq.add("ingest", f"interactions ({src})", cfg.interactions.columns.timestamp, f"at or after the cutoff of "
               f"ds={ds} (kept for backtests; the day's stages do not read them)", late["n"], "kept", late["e"])

    isrc = source_name(cfg.items.source)
    items = normalise_items(read_source(spark, cfg.items.source), cfg)
    n_items_raw = items.count()
    items = items.where(F.col("item_id").isNotNull() & (F.col("item_id") != ""))
    n_items_ok = items.count()
    dq.add("ingest", f"items ({isrc})", cfg.items.columns.item, "null or blank item id", n_items_raw - n_items_ok,
           "dropped")
    # One row per item id: a catalog that lists an item twice keeps the first text in id order.
    items = items.groupBy("item_id").agg(F.min("text").alias("text"))
    limit = cfg.items.max_text_chars
    text_col = "+".join(cfg.items.columns.text)
    t = items.agg(F.count("*").alias("n"),
                  F.count(F.when(F.length("text") > limit, 1)).alias("long"),
                  F.first(F.when(F.length("text") > limit, F.col("item_id")), ignorenulls=True).alias("long_e"),
                  F.count(F.when(F.coalesce(F.trim("text"), F.lit("")) == "", 1)).alias("empty"),
                  F.first(F.when(F.coalesce(F.trim("text"), F.lit("")) == "", F.col("item_id")),
                          ignorenulls=True).alias("empty_e"),
                  F.count(F.when(F.col("text").contains("\ufffd"), 1)).alias("bad"),
                  F.first(F.when(F.col("text").contains("\ufffd"), F.col("item_id")), ignorenulls=True).alias("bad_e")
                  ).first()
    dq.add("ingest", f"items ({isrc})", cfg.items.columns.item, "duplicate item id", n_items_ok - t["n"], "merged")
    dq.add("ingest", f"items ({isrc})", text_col, f"text longer than {limit} characters (item id)", t["long"],
           "truncated", t["long_e"])
    dq.add("ingest", f"items ({isrc})", text_col, "empty text (item id)", t["empty"], "kept", t["empty_e"])
    dq.add("ingest", f"items ({isrc})", text_col, "text with invalid bytes, decoded as U+FFFD (item id)", t["bad"],
           "kept", t["bad_e"])
    items = items.withColumn("text", F.substring(F.coalesce("text", F.lit("")), 1, limit))
    missing = inter.select("item_id").distinct().join(items.select("item_id"), "item_id", "left_anti")
    m = missing.agg(F.count("*").alias("n"), F.min("item_id").alias("e")).first()
    dq.add("ingest", f"interactions ({src})", cfg.interactions.columns.item, "item ids missing from the item "
           "table (scored with empty text)", m["n"], "kept", m["e"])

    tables.overwrite(inter, "interactions")
    tables.overwrite(items, "items")
    return {"interactions": n_inter, "items": tables.read("items").count(), "dropped_rows": n_raw - n_inter}
