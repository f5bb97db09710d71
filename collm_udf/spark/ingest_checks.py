"""What the ingest stage checks in its sources, and the example value each finding shows.

A check is a condition on the rows of a normalised source frame, which keeps beside the canonical columns the raw
source values as strings (`_raw_*`) and, for CSV sources, the raw line of a malformed row (`_line`): a value
that a cast made null still shows in the example. Checks whose action is "dropped" make a row unusable; the
others count a repair (or a suspicious value that is kept) and leave the row in.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from collm_udf.config import Config

CORRUPT = "_collm_malformed_row"  # the CSV reader's columnNameOfCorruptRecord (ingest.read_source)
# "42.0", "+42.00", "-7.0": an integer written as a decimal (a spreadsheet or pandas float export). The same id
# as 42 from a numeric column, so it becomes "42".
INT_AS_DECIMAL = r"^\+?(-?[0-9]+)\.0+$"
# C0 control characters but tab, LF and CR, and DEL: never part of a title (NUL breaks tokenizers and HTML).
CONTROL_CHARS = "[\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F]"
MALFORMED = "malformed CSV row (a field too many or too few, or a value that does not parse as its schema type)"


@dataclass(frozen=True)
class Check:
    name: str
    column: str
    cond: Column
    example: Column
    action: str  # "dropped": the row is not used; otherwise what happened to the kept row


def canonical_id(df: DataFrame, col: str) -> tuple[Column, Column]:
    """(canonical string id, whether the raw value was an integer written as a decimal). Fractional columns (a
    CSV inferred as double gives 42.0) go through long, and string ids like "42.0" are rewritten the same way,
    so that the same id reads "42" from every source and every row."""
    dtype = df.schema[col].dataType
    c = F.col(col)
    if isinstance(dtype, T.FractionalType):
        return F.trim(c.try_cast("long").cast("string")), F.lit(False)
    s = F.trim(c.cast("string"))
    if isinstance(dtype, T.StringType):
        return F.regexp_replace(s, INT_AS_DECIMAL, "$1"), s.rlike(INT_AS_DECIMAL)
    return s, F.lit(False)


def raw_columns(df: DataFrame, roles: dict[str, str | None]) -> list[Column]:
    """_raw_<role>: the source value as a string (null when the role is not mapped), and _line: the raw line of
    a malformed CSV row (else null)."""
    out = [(F.col(c).cast("string") if c else F.lit(None).cast("string")).alias(f"_raw_{role}")
           for role, c in roles.items()]
    line = F.col(CORRUPT) if CORRUPT in df.columns else F.lit(None).cast("string")
    return out + [line.alias("_line")]


def shown(role: str) -> Column:
    """The example of a row: its raw value; when that is null, the malformed line it came from, else NULL."""
    return F.coalesce(F.col(f"_raw_{role}"), F.concat(F.lit("row "), F.col("_line")), F.lit("NULL"))


def _ts_shown() -> Column:
    raw, ts = F.col("_raw_timestamp"), F.col("ts").cast("string")
    return F.when(raw == ts, ts).otherwise(F.concat(shown("timestamp"), F.lit(" (read as "), ts, F.lit(")")))


def interaction_checks(cfg: Config, csv: bool) -> list[Check]:
    """The checks of the interactions source, in report order."""
    cols, ic = cfg.interactions.columns, cfg.interactions
    blank = lambda c: F.col(c).isNull() | (F.col(c) == "")  # noqa: E731
    checks = []
    if csv:
        checks.append(Check(MALFORMED, "(row)", F.col("_line").isNotNull(), F.col("_line"), "dropped"))
    checks += [
        Check("null or blank user id", cols.user, blank("user_id"), shown("user"), "dropped"),
        Check("null or blank item id", cols.item, blank("item_id"), shown("item"), "dropped"),
        Check("null or unparseable timestamp", cols.timestamp, F.col("ts").isNull(), shown("timestamp"), "dropped"),
        # zero or negative Unix time: a missing value written as 0 or a sign error, never an event
        Check("timestamp at or before 1970-01-01 00:00 UTC (zero or negative Unix time)", cols.timestamp,
              F.unix_micros("ts") <= 0, _ts_shown(), "dropped"),
        # more than a day ahead of the wall clock: a clock error, or a numeric column in a smaller unit than
        # timestamp_unit says. (Rows after the run's cutoff but not after the wall clock are real: they are kept
        # for backtests and counted against the cutoff in ingest.run.)
        Check("timestamp in the future (mixed units?)", cols.timestamp,
              F.col("ts") > F.current_timestamp() + F.expr("INTERVAL 1 DAY"), _ts_shown(), "dropped"),
    ]
    if cols.label is None:
        r = F.col("rating")
        checks.append(Check("rating null or NaN", cols.rating, r.isNull() | F.isnan(r), shown("rating"), "dropped"))
        if ic.rating_min is not None:
            checks.append(Check(f"rating below {ic.rating_min:g}", cols.rating, r < ic.rating_min, shown("rating"),
                                "dropped"))
        if ic.rating_max is not None:
            checks.append(Check(f"rating above {ic.rating_max:g}", cols.rating, r > ic.rating_max, shown("rating"),
                                "dropped"))
    else:
        checks.append(Check("label not 0 or 1", cols.label, F.col("label").isNull() | ~F.col("label").isin(0, 1),
                            shown("label"), "dropped"))
    checks += id_repairs(cols.user, "user") + id_repairs(cols.item, "item")
    return checks


def id_repairs(column: str, role: str) -> list[Check]:
    return [Check(f"{role} id written as a decimal, N.0 read as N", column, F.col(f"_{role}_decimal"),
                  shown(role), "canonicalised")]


def item_row_checks(cfg: Config, csv: bool) -> list[Check]:
    """Checks of the catalog's rows, before duplicates are merged."""
    item = cfg.items.columns.item
    checks = []
    if csv:  # the row is kept: its id and text may still be right, and dropping it would leave its item textless
        checks.append(Check(MALFORMED, "(row)", F.col("_line").isNotNull(), F.col("_line"), "kept"))
    checks.append(Check("null or blank item id", item, F.col("item_id").isNull() | (F.col("item_id") == ""),
                        shown("item"), "dropped"))
    for i, c in enumerate(cfg.items.columns.flags):  # a flag is 0 or 1; anything else is read as unset
        raw = F.trim(F.col(f"_raw_flag{i}"))
        checks.append(Check("flag neither 0 nor 1, read as unset (item id: value)", c,
                            raw.isNotNull() & ~raw.isin("0", "1"),
                            F.concat(F.col("item_id"), F.lit(": "), raw), "kept"))
    return checks + id_repairs(item, "item")


def item_text_checks(cfg: Config) -> list[Check]:
    """Checks of the merged catalog (one row per item id); examples name the item."""
    limit, text = cfg.items.max_text_chars, F.coalesce(F.col("text"), F.lit(""))
    column = "+".join(cfg.items.columns.text)
    iid = F.col("item_id")
    with_text = lambda t: F.concat(iid, F.lit(": "), F.substring(t, 1, 80))  # noqa: E731
    return [
        Check(f"text longer than {limit} characters (item id)", column, F.length(text) > limit, iid, "truncated"),
        Check("empty text (item id)", column, F.trim(text) == "", iid, "kept"),
        Check("text with invalid bytes, decoded as U+FFFD (item id)", column, text.contains("\ufffd"), iid, "kept"),
        Check("text with NUL or other control characters (item id: text, \\0 = NUL)", column,
              text.rlike(CONTROL_CHARS), with_text(F.regexp_replace(text, "\\x00", "\\\\0")), "removed"),
        Check('text with doubled quotes "" (a CSV that escapes quotes by doubling them: set the source option '
              "escape: '\"') (item id: text)", column, text.contains('""'), with_text(text), "kept"),
    ]


def count(df: DataFrame, checks: list[Check]):
    """One pass over `df`: its row count `n`, and per check i the rows `c<i>` it finds and an example `e<i>`."""
    aggs = [F.count(F.lit(1)).alias("n")]
    for i, ch in enumerate(checks):
        aggs += [F.count(F.when(ch.cond, 1)).alias(f"c{i}"),
                 F.first(F.when(ch.cond, ch.example), ignorenulls=True).alias(f"e{i}")]
    return df.agg(*aggs).first()


def unusable(checks: list[Check]) -> Column:
    """True for a row that a dropping check finds (a check that cannot decide counts as finding it)."""
    bad = F.lit(False)
    for ch in checks:
        if ch.action == "dropped":
            bad = bad | F.coalesce(ch.cond, F.lit(True))
    return bad
