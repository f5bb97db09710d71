"""Stage 1, ingest: read the interaction and item sources named in the conf into two normalised Delta tables.

interactions: user_id STRING, item_id STRING, ts TIMESTAMP, rating DOUBLE, label INT, split STRING
items:        item_id STRING, text STRING

Ids become strings whatever their source type, so string and long warehouse ids take one path ("42.0" and 42.0
become "42", counted); the id-map stage gives ALS its dense ints. Unusable rows (malformed CSV rows, null or
blank ids, unparseable, pre-1970 or future timestamps, null/NaN or out-of-range ratings, labels other than 0/1)
are dropped and counted in data_quality with an example raw value; more than interactions.max_bad_fraction of
them fails the stage before it writes. Item texts: duplicates merged, long texts truncated, control characters
removed; empty or undecodable texts, doubled quotes, malformed catalog rows and interaction items missing from
the catalog counted. The checks are in collm_udf/spark/ingest_checks.py.
"""
from __future__ import annotations

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from collm_udf.config import Config, SourceConfig, flag_name
from collm_udf.spark.context import StageContext
from collm_udf.datasets import DatasetError, resolve_uri
from collm_udf.spark import ingest_checks as chk
from collm_udf.spark.asof import AsOf, ts_from
from collm_udf.spark.data_quality import DataQuality, DataQualityError
from collm_udf.spark.ingest_checks import CORRUPT


class SourceError(ValueError):
    """A source table is missing, unreadable, or lacks a mapped column."""


def source_name(src: SourceConfig) -> str:
    return src.table if src.table else src.path


def read_source(spark: SparkSession, src: SourceConfig, key: str = "source") -> DataFrame:
    """The source of conf section `key` (interactions or items). A CSV source is read in PERMISSIVE mode with
    its raw line kept in CORRUPT for every row with a field too many or too few or a value that does not parse
    (columnPruning off: with it, Spark checks only the fields a query selects)."""
    if src.table:
        if not spark.catalog.tableExists(src.table):
            raise SourceError(f"source table {src.table} does not exist (conf key {key}.source.table)")
        return spark.read.table(src.table)
    try:
        path = resolve_uri(src.path)
    except DatasetError as e:
        raise SourceError(f"source {src.path} (conf key {key}.source.path): {e}") from None
    try:
        if src.format != "csv":
            reader = spark.read.format(src.format).options(**src.options)
            return (reader.schema(src.schema) if src.schema else reader).load(path)
        opts = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT, **src.options, "columnPruning": "false"}
        reader = spark.read.format("csv").options(**opts)
        corrupt = opts["columnNameOfCorruptRecord"]
        if src.schema:
            reader = reader.schema(f"{src.schema}, `{corrupt}` STRING")
        else:  # the header's (or inferred) columns, as Spark reads them without a schema
            inferred = spark.read.format("csv").options(**src.options).load(path).schema
            reader = reader.schema(inferred.add(corrupt, T.StringType()))
        df = reader.load(path)
        return df.withColumnRenamed(corrupt, CORRUPT) if corrupt != CORRUPT else df
    except AnalysisException as e:
        cond = getattr(e, "getCondition", getattr(e, "getErrorClass", lambda: None))()
        what = "not found" if cond == "PATH_NOT_FOUND" else f"cannot be read as {src.format}: {str(e).splitlines()[0]}"
        raise SourceError(f"source {path} {what} (conf key {key}.source.path)") from None


def require_columns(df: DataFrame, src: SourceConfig, mapping: dict[str, str | None]) -> None:
    have = set(df.columns) - {CORRUPT}
    for role, col in mapping.items():
        if col is not None and col not in have:
            raise SourceError(f"source {source_name(src)}: mapped column {role}={col!r} not found; "
                              f"columns are: {', '.join(c for c in df.columns if c != CORRUPT)}")


def _timestamp(df: DataFrame, col: str, unit: str):
    dtype = df.schema[col].dataType
    c = F.col(col)
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        return c.cast("timestamp")
    if isinstance(dtype, T.DateType):
        return c.cast("timestamp")
    if isinstance(dtype, T.NumericType):
        return {"s": F.timestamp_seconds, "ms": F.timestamp_millis, "us": F.timestamp_micros}[unit](
            c.try_cast("long"))
    return F.try_to_timestamp(c)  # try_: an unparseable value is null, counted with its raw text (ANSI casts throw)


def normalise_interactions(df: DataFrame, cfg: Config) -> DataFrame:
    """The canonical columns, plus the raw values and flags the checks show (ingest_checks)."""
    src, cols = cfg.interactions.source, cfg.interactions.columns
    roles = {"user": cols.user, "item": cols.item, "timestamp": cols.timestamp, "rating": cols.rating,
             "label": cols.label}
    require_columns(df, src, {**roles, "split": cols.split})
    user, user_dec = chk.canonical_id(df, cols.user)
    item, item_dec = chk.canonical_id(df, cols.item)
    return df.select(
        user.alias("user_id"),
        item.alias("item_id"),
        _timestamp(df, cols.timestamp, cfg.interactions.timestamp_unit).alias("ts"),
        (F.col(cols.rating).try_cast("double") if cols.rating else F.lit(None).cast("double")).alias("rating"),
        (F.col(cols.label).try_cast("int") if cols.label else F.lit(None).cast("int")).alias("label"),
        (F.lower(F.col(cols.split).cast("string")) if cols.split else F.lit(None).cast("string")).alias("split"),
        user_dec.alias("_user_decimal"), item_dec.alias("_item_decimal"), *chk.raw_columns(df, roles))


INTERACTION_COLUMNS = ["user_id", "item_id", "ts", "rating", "label", "split"]


def normalise_items(df: DataFrame, cfg: Config) -> DataFrame:
    src, cols = cfg.items.source, cfg.items.columns
    flags = {f"flag{i}": c for i, c in enumerate(cols.flags)}
    require_columns(df, src, {"item": cols.item, **{f"text[{i}]": c for i, c in enumerate(cols.text)},
                              **{f"flags[{i}]": c for i, c in enumerate(cols.flags)}})
    parts = [F.col(c).cast("string") for c in cols.text]
    if flags:  # the names of the flags set, as one more part (null, so left out, when none is)
        set_ = [F.when(F.trim(F.col(c).cast("string")) == "1", F.lit(flag_name(c, cols.flag_prefix)))
                for c in cols.flags]
        names = F.concat_ws(", ", *set_)
        parts.append(F.when(names != "", names))
    item, item_dec = chk.canonical_id(df, cols.item)
    return df.select(item.alias("item_id"), F.concat_ws(cfg.items.text_separator, *parts).alias("text"),
                     item_dec.alias("_item_decimal"), *chk.raw_columns(df, {"item": cols.item, **flags}))


def _report(dq: DataQuality, table: str, checks: list, got) -> None:
    for i, ch in enumerate(checks):
        dq.add("ingest", table, ch.column, ch.name, got[f"c{i}"], ch.action, example=got[f"e{i}"])


def run(ctx: StageContext) -> dict:
    """Copy the sources into `interactions` and `items`. The whole history is kept, also what lies after the
    cutoff of `ds` (a backfilled day's backtest needs it): daily mode counts those rows against the day's cutoff
    (not the wall clock) in data_quality, and no other stage of that day reads them (collm_udf/spark/asof.py)."""
    spark, cfg, tables, dq, ds = ctx.spark, ctx.cfg, ctx.tables, ctx.dq, ctx.ds
    dq = dq if dq is not None else DataQuality()
    src = source_name(cfg.interactions.source)
    table = f"interactions ({src})"
    raw_source = read_source(spark, cfg.interactions.source, "interactions")
    raw = normalise_interactions(raw_source, cfg)
    checks = chk.interaction_checks(cfg, CORRUPT in raw_source.columns)
    got = chk.count(raw, checks)
    n_raw = got["n"]
    _report(dq, table, checks, got)
    inter = raw.where(~chk.unusable(checks)).select(*INTERACTION_COLUMNS)
    n_inter = inter.count()
    if n_inter == 0:  # checked before writing: an empty day never replaces a good table
        raise SourceError(f"source {src}: no usable interactions ({n_raw} rows read)"
                          + "".join(f"; {f.describe()}" for f in dq.findings))
    if n_raw - n_inter > cfg.interactions.max_bad_fraction * n_raw:
        raise DataQualityError(f"source {src}: {n_raw - n_inter} of {n_raw} interaction rows are unusable (more "
                               f"than interactions.max_bad_fraction = {cfg.interactions.max_bad_fraction}); "
                               "nothing written. " + "; ".join(f.describe() for f in dq.findings))

    if ds is not None and cfg.asof.mode == "daily":
        cutoff = AsOf.of(cfg, ds).cutoff
        late = inter.where(ts_from(cutoff)).agg(
            F.count(F.lit(1)).alias("n"), F.min("ts").cast("string").alias("e")).first()
        dq.add("ingest", table, cfg.interactions.columns.timestamp, f"at or after the cutoff of ds={ds} "
               f"({cutoff:%Y-%m-%d %H:%M} UTC; kept for backtests, the day's stages do not read them)",
               late["n"], "kept", example=late["e"])

    isrc = source_name(cfg.items.source)
    itable = f"items ({isrc})"
    raw_items = read_source(spark, cfg.items.source, "items")
    items = normalise_items(raw_items, cfg)
    row_checks = chk.item_row_checks(cfg, CORRUPT in raw_items.columns)
    got = chk.count(items, row_checks)
    _report(dq, itable, row_checks, got)
    items = items.where(~chk.unusable(row_checks))
    # One row per item id: a catalog that lists an item twice keeps the first text in id order.
    items = items.groupBy("item_id").agg(F.min("text").alias("text"))
    text_checks = chk.item_text_checks(cfg)
    t = chk.count(items, text_checks)
    n_kept = got["n"] - sum(got[f"c{i}"] for i, ch in enumerate(row_checks) if ch.action == "dropped")
    dq.add("ingest", itable, cfg.items.columns.item, "duplicate item id", n_kept - t["n"], "merged")
    _report(dq, itable, text_checks, t)
    text = F.regexp_replace(F.coalesce("text", F.lit("")), chk.CONTROL_CHARS, "")
    items = items.withColumn("text", F.substring(text, 1, cfg.items.max_text_chars))
    missing = inter.select("item_id").distinct().join(items.select("item_id"), "item_id", "left_anti")
    m = missing.agg(F.count("*").alias("n"), F.min("item_id").alias("e")).first()
    dq.add("ingest", table, cfg.interactions.columns.item, "item ids missing from the item "
           "table (scored with empty text)", m["n"], "kept", example=m["e"])

    tables.overwrite(inter, "interactions")
    tables.overwrite(items, "items")
    return {"interactions": n_inter, "items": tables.read("items").count(), "dropped_rows": n_raw - n_inter}
