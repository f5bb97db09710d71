"""Conf sections `interactions` and `items`: where the warehouse's tables are read from and which columns mean
what. Conventions: collm_udf/config/__init__.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from collm_udf.config.base import ConfigError, check_table_name, help_field as _help


@dataclass
class SourceConfig:
    """Where a table is read from: a catalog table, or a Delta/Parquet/CSV path."""

    table: Optional[str] = _help("catalog table, e.g. main.shop.interactions (exclusive with path)", None)
    path: Optional[str] = _help("file path or URI; dataset://ml-100k/u.data resolves a built-in dataset", None)
    format: str = _help("format of path: delta, parquet or csv", "delta")
    options: dict[str, str] = _help("reader options, e.g. {sep: '\\t', header: 'false'}", factory=dict)
    schema: Optional[str] = _help("DDL schema for headerless CSV, e.g. 'user STRING, item STRING'", None)

    def __post_init__(self):
        if (self.table is None) == (self.path is None):
            raise ConfigError("source: set exactly one of 'table' or 'path'")
        if self.table is not None:
            check_table_name(self.table, "source.table")
        if self.format not in ("delta", "parquet", "csv"):
            raise ConfigError(f"source.format: {self.format!r} is not one of delta, parquet, csv")
        mode = {k.lower(): v for k, v in self.options.items()}.get("mode", "PERMISSIVE").upper()
        if self.format == "csv" and mode not in ("PERMISSIVE", "FAILFAST"):
            raise ConfigError(f"source.options.mode: {mode} drops malformed CSV rows without counting them; leave "
                              "it unset (ingest counts and drops them in data_quality) or use FAILFAST")


@dataclass
class InteractionColumns:
    """Names of the interaction table's columns; rating or label must be given."""

    user: str = _help("user id column (string or integer ids)")
    item: str = _help("item id column (string or integer ids)")
    timestamp: str = _help("event time column: a timestamp, or a number in timestamp_unit")
    rating: Optional[str] = _help("explicit rating column; label = rating >= prepare.like_threshold", None)
    label: Optional[str] = _help("given 0/1 label column (used instead of the rating rule)", None)
    split: Optional[str] = _help("given split column with values train/valid/test", None)

    def __post_init__(self):
        if self.rating is None and self.label is None:
            raise ConfigError("interactions.columns: set 'rating' or 'label'")


@dataclass
class InteractionsConfig:
    source: SourceConfig = _help("where interactions are read from")
    columns: InteractionColumns = _help("column mapping")
    timestamp_unit: str = _help("unit of a numeric timestamp column: s, ms or us", "s")
    rating_min: Optional[float] = _help("ratings below are dropped and counted (NaN and null always are)", 0.0)
    rating_max: Optional[float] = _help("ratings above are dropped and counted", None)
    max_bad_fraction: float = _help("ingest fails, writing nothing, when it would drop more than this share of "
                                    "the rows (null ids, bad ratings or labels, future timestamps)", 0.01)

    def __post_init__(self):
        if self.timestamp_unit not in ("s", "ms", "us"):
            raise ConfigError(f"interactions.timestamp_unit: {self.timestamp_unit!r} is not s, ms or us")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ConfigError("interactions.max_bad_fraction must be in [0, 1]")


@dataclass
class ItemColumns:
    item: str = _help("item id column")
    text: list[str] = _help("one or more text columns, joined into the item's text")
    flags: list[str] = _help("0/1 columns (one-hot attributes, e.g. genres): the item's text ends with the names of "
                             "those set to 1, comma-separated, as one more text part ('Toy Story (1995) | animation, "
                             "comedy'); a value other than 0, 1 or null counts as unset and is reported in "
                             "data_quality", factory=list)
    flag_prefix: str = _help("stripped from each flag column's name, '_' read as a space (genre_sci_fi: 'sci fi')",
                             "")

    def __post_init__(self):
        if not self.text:
            raise ConfigError("items.columns.text: give at least one text column")
        names = [flag_name(c, self.flag_prefix) for c in self.flags]
        if len(set(names)) < len(names) or "" in names:
            raise ConfigError(f"items.columns.flags: {self.flags} give names {names} (after flag_prefix "
                              f"{self.flag_prefix!r}) that are empty or repeated")


def flag_name(column: str, prefix: str) -> str:
    """The word a set flag adds to an item's text: the column's name without `prefix`, '_' read as a space."""
    return (column[len(prefix):] if prefix and column.startswith(prefix) else column).replace("_", " ").strip()


@dataclass
class ItemsConfig:
    source: SourceConfig = _help("where the item catalog is read from")
    columns: ItemColumns = _help("column mapping")
    text_separator: str = _help("separator placed between text columns", " | ")
    max_text_chars: int = _help("item texts are truncated to this many characters (counted)", 2000)
