"""Typed run configuration, loaded from YAML.

Every section is a dataclass whose fields carry help text and are validated in __post_init__ (the peft
pattern). Loading goes further than peft: an unknown key anywhere is an error that names its dotted path and
the keys that are allowed, and every value is type-checked, so a typo in a scheduled job's conf fails at load
time instead of silently running with a default.

No value from a conf is ever evaluated or pasted into SQL: table names are checked against an identifier
pattern and stage filters are not offered at all.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from collm_udf.config.base import ConfigError, check_identifier, check_table_name, help_field as _help  # noqa: F401
from collm_udf.config.model import DistributedConfig, MlflowConfig, ModelConfig, TrainingConfig  # noqa: F401


# --------------------------------------------------------------------------------------------- sources
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

    def __post_init__(self):
        if not self.text:
            raise ConfigError("items.columns.text: give at least one text column")


@dataclass
class ItemsConfig:
    source: SourceConfig = _help("where the item catalog is read from")
    columns: ItemColumns = _help("column mapping")
    text_separator: str = _help("separator placed between text columns", " | ")
    max_text_chars: int = _help("item texts are truncated to this many characters (counted)", 2000)


# --------------------------------------------------------------------------------------------- stages
@dataclass
class SplitConfig:
    train: float = _help("fraction of interactions, oldest first, in the training part", 0.8)
    valid: float = _help("next fraction, the validation part", 0.1)
    test: float = _help("newest fraction, the test part", 0.1)

    def __post_init__(self):
        for name in ("train", "valid", "test"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"prepare.split.{name}: {v} is not in [0, 1]")
        if abs(self.train + self.valid + self.test - 1.0) > 1e-9 or self.train <= 0:
            raise ConfigError(f"prepare.split: fractions must sum to 1 with train > 0, got "
                              f"{self.train}/{self.valid}/{self.test}")


@dataclass
class PrepareConfig:
    like_threshold: float = _help("label = 1 when rating >= this (CoLLM uses 4 on MovieLens)", 4.0)
    split: SplitConfig = _help("time-ordered split fractions (ignored with a given split column)",
                               factory=SplitConfig)
    warm_min_interactions: int = _help("a pair is warm when user and item each have this many training "
                                       "interactions", 3)
    history_len: int = _help("most recent positive items kept as a pair's history", 10)

    def __post_init__(self):
        if self.warm_min_interactions < 1 or self.history_len < 0:
            raise ConfigError("prepare: warm_min_interactions must be >= 1 and history_len >= 0")


@dataclass
class AsOfConfig:
    """What a run for day ds may see: the daily mode (production) or the paper's fixed split (benchmark)."""

    mode: str = _help("daily: every stage uses only interactions before ds's cutoff, and the evaluate stage "
                      "backtests the day against the interactions of [cutoff, cutoff + evaluate.horizon_days); "
                      "split: the paper's offline protocol, one fixed train/valid/test split (prepare.split or "
                      "a given split column) whatever ds is", "daily")
    cutoff_shift_hours: int = _help("cutoff = ds 00:00 UTC shifted by this many hours (e.g. -2: data up to "
                                    "22:00 of the day before)", 0)
    label_window_days: int = _help("daily: the CoLLM CF stage learns from the labels of [cutoff - this, cutoff), "
                                   "with factors of an ALS fit that ends where the window starts", 28)

    def __post_init__(self):
        if self.mode not in ("daily", "split"):
            raise ConfigError(f"asof.mode: {self.mode!r} is not daily or split")
        if self.label_window_days < 1 or abs(self.cutoff_shift_hours) > 24 * 7:
            raise ConfigError("asof: label_window_days must be >= 1 and |cutoff_shift_hours| <= 168")


@dataclass
class ALSConfig:
    implicit: bool = _help("implicit-feedback ALS (models 'interacted', weighted by the target as confidence "
                           "1 + alpha * target); explicit fits the target", False)
    target: Optional[str] = _help(
        "label (the 0/1 like) or rating (the mapped rating column: explicit ALS fits it, implicit ALS weighs each "
        "interaction by it, e.g. a listen count). Unset: rating for implicit ALS when a rating column is mapped, "
        "else label", None)
    rank: int = _help("factor dimension", 16)
    reg: float = _help("L2 regularisation (regParam)", 0.1)
    alpha: float = _help("implicit confidence scale", 1.0)
    max_iter: int = _help("ALS iterations", 15)
    nonnegative: bool = _help("non-negative factors", False)
    seed: int = _help("random seed (with deterministic input, a rerun gives the same factors)", 42)
    checkpoint_interval: int = _help("checkpoint every N iterations (cuts long lineage)", 5)
    retrain_every_days: int = _help("daily mode: the als stage refits when its newest fit with these params is "
                                    "this many days older than the cutoff (1: every day); in between, the "
                                    "candidates and the scorer use that fit", 1)

    def __post_init__(self):
        if self.retrain_every_days < 1:
            raise ConfigError("als.retrain_every_days must be >= 1")
        if self.target not in (None, "label", "rating"):
            raise ConfigError(f"als.target: {self.target!r} is not label or rating")
        if self.rank < 1 or self.max_iter < 1 or self.reg < 0 or self.alpha < 0:
            raise ConfigError("als: rank and max_iter must be >= 1, reg and alpha >= 0")


@dataclass
class CandidatesConfig:
    top_k: int = _help("ALS top-K unseen items per user", 50)
    max_cold_items: int = _help("cold catalog items (no training interactions) added for every user", 200)
    seen_buffer: int = _help("most extra items fetched from ALS per user to cover the seen and ineligible "
                             "items it filters out", 2000)
    min_item_interactions: int = _help(
        "ALS candidates need this many training interactions: explicit ALS gives items with one or two "
        "ratings extreme scores, and they would fill every top-K (ML-100K: Recall@10 0.000 without it)", 10)

    active_within_days: Optional[int] = _help(
        "the day's audience: users with an interaction in the last N days before the cutoff (split mode: before "
        "the test part); each gets score.top_n rows. Unset = every user with an interaction before it", None)
    popular_k: int = _help("recent-popularity candidates per user: the most interacted items of the last "
                           "recent_days that the user has not interacted with (they also fill users without "
                           "ALS factors)", 30)
    recent_days: int = _help("window of recent popularity (candidates and the recent-popularity baseline)", 30)

    def __post_init__(self):
        if self.popular_k < 0 or self.recent_days < 1:
            raise ConfigError("candidates: popular_k must be >= 0 and recent_days >= 1")
        if self.active_within_days is not None and self.active_within_days < 1:
            raise ConfigError("candidates.active_within_days must be >= 1 (or unset)")
        if self.top_k < 1 or self.max_cold_items < 0 or self.seen_buffer < 0 or self.min_item_interactions < 0:
            raise ConfigError("candidates: top_k >= 1; max_cold_items, seen_buffer, min_item_interactions >= 0")


@dataclass
class ScoreConfig:
    scorer: str = _help("scorer that ranks candidates: als, or collm (the newest trained CoLLM model)", "als")
    top_n: int = _help("rows per user in the daily recommendation table", 20)
    device: str = _help("collm: auto (the task's Spark-assigned GPU, else CUDA_VISIBLE_DEVICES, else CPU), "
                        "cpu, or cuda:N", "auto")
    bf16: str = _help("collm: bf16 autocast: auto (GPU or CPUs with native bf16), on, off", "auto")
    arrow_batch_rows: int = _help("collm: rows per Arrow batch into the UDF "
                                  "(spark.sql.execution.arrow.maxRecordsPerBatch)", 4096)
    max_row_tokens: int = _help("collm: tokens per packed row (a user's prefix once + candidates)", 512)
    batch_tokens: int = _help("collm: tokens per forward pass", 8192)
    partitions: int = _help("collm: partitions the pairs are spread over by user (0 = "
                            "spark.sql.shuffle.partitions); use at least the number of task slots", 0)
    align: bool = _help("collm: when the latest ALS run is not the model's, rotate its factors into the "
                        "model's run (orthogonal Procrustes on shared items) instead of refusing", True)
    max_alignment_residual: float = _help(
        "collm: refuse when the rotation leaves more than this relative residual on the shared items' factors "
        "(ML-100K: two explicit ALS fits of the same data with other seeds differ by 0.35, a fit 28 days older "
        "by 0.40, at no measured AUC cost; see README)", 0.5)
    min_rows_fraction: float = _help("output guard: fail before writing when the day's rows fall below this "
                                     "fraction of the latest earlier day's (0 = off; an empty output always fails)", 0.5)
    min_users_fraction: float = _help("output guard: the same for the number of users covered", 0.5)

    def __post_init__(self):
        if self.scorer not in ("als", "collm"):
            raise ConfigError(f"score.scorer: {self.scorer!r} is not one of: als, collm")
        if self.top_n < 1:
            raise ConfigError("score.top_n must be >= 1")
        if not (0 <= self.min_rows_fraction <= 1 and 0 <= self.min_users_fraction <= 1):
            raise ConfigError("score: min_rows_fraction and min_users_fraction must be in [0, 1]")
        if min(self.arrow_batch_rows, self.max_row_tokens, self.batch_tokens) < 1 or self.partitions < 0:
            raise ConfigError("score: arrow_batch_rows, max_row_tokens, batch_tokens >= 1; partitions >= 0")
        if self.bf16 not in ("auto", "on", "off"):
            raise ConfigError(f"score.bf16: {self.bf16!r} is not auto, on or off")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError(f"score.device: {self.device!r} is not auto, cpu, cuda or cuda:N")


@dataclass
class EvaluateConfig:
    k: int = _help("cut-off of Recall@k and NDCG@k", 10)
    horizon_days: int = _help("daily mode: the day's table is judged by the interactions of [cutoff, cutoff + "
                              "horizon_days), once the interactions table reaches the end of that window", 7)
    catch_up_days: int = _help("daily mode: the evaluate stage also backtests the earlier days of the last N "
                               "days whose horizon has completed since and that have no backtest yet (0: off)",
                               14)
    report_dir: Optional[str] = _help("where the evaluate stage (and `collm report`) writes the HTML report, one "
                                      "folder ds=<ds> per day; a local or mounted path (e.g. /Volumes/...); "
                                      "default <tables.root>/reports, or <tables.models_dir>/reports", None)

    def __post_init__(self):
        if self.k < 1 or self.horizon_days < 1 or self.catch_up_days < 0:
            raise ConfigError("evaluate: k and horizon_days must be >= 1, catch_up_days >= 0")
        if self.report_dir is not None and "://" in self.report_dir and not self.report_dir.startswith("file:"):
            raise ConfigError(f"evaluate.report_dir: {self.report_dir!r} must be a local or mounted path "
                              "(e.g. /Volumes/...): the report is written with local file APIs")


@dataclass
class TablesConfig:
    root: Optional[str] = _help("directory holding path-based Delta tables (local runs)", None)
    catalog: Optional[str] = _help("catalog of managed tables (exclusive with root)", None)
    schema: Optional[str] = _help("schema (database) of managed tables", None)
    prefix: str = _help("prefix of every table name", "")
    models_dir: Optional[str] = _help("directory for saved models (ALS); default <root>/_models; required "
                                      "with catalog tables, e.g. a /Volumes/... path", None)

    def __post_init__(self):
        if (self.root is None) == (self.schema is None):
            raise ConfigError("tables: set either 'root' (paths) or 'schema' (catalog tables)")
        if self.schema is not None and self.models_dir is None:
            raise ConfigError("tables.models_dir: required with catalog tables (where saved models go)")
        if self.catalog is not None:
            check_identifier(self.catalog, "tables.catalog")
        if self.schema is not None:
            check_identifier(self.schema, "tables.schema")
        if self.prefix:
            check_identifier(self.prefix, "tables.prefix")


@dataclass
class SparkConfig:
    master: str = _help("master used only when collm creates the session itself (never under "
                        "spark-submit or in a notebook)", "local[*]")
    conf: dict[str, str] = _help("extra settings for a session collm creates", factory=dict)
    checkpoint_dir: Optional[str] = _help("checkpoint dir for ALS; default <tables.root>/_checkpoints", None)


@dataclass
class Config:
    name: str = _help("run name, shown in the run summary")
    tables: TablesConfig = _help("where output tables live")
    interactions: InteractionsConfig = _help("interaction source")
    items: ItemsConfig = _help("item catalog source")
    spark: SparkConfig = _help("session settings for local runs", factory=SparkConfig)
    asof: AsOfConfig = _help("daily mode (as of each ds) or the fixed split (benchmark mode)",
                             factory=AsOfConfig)
    prepare: PrepareConfig = _help("labels, split (split mode), warm/cold, history", factory=PrepareConfig)
    als: ALSConfig = _help("MLlib ALS", factory=ALSConfig)
    candidates: CandidatesConfig = _help("candidate generation", factory=CandidatesConfig)
    model: Optional[ModelConfig] = _help("the CoLLM scorer; without it the train stage is skipped", None)
    score: ScoreConfig = _help("scoring and the daily table", factory=ScoreConfig)
    evaluate: EvaluateConfig = _help("evaluation", factory=EvaluateConfig)
    source_path: Optional[str] = _help("file the conf was loaded from (set by load_config)", None)

    def __post_init__(self):
        self._check_als_target()
        if self.asof.mode == "daily" and self.interactions.columns.split is not None:
            raise ConfigError("interactions.columns.split: a given split column is the benchmark mode's (set "
                              "asof.mode: split); the daily mode splits by each day's cutoff")
        for key in ("cf_negatives", "text_negatives"):
            n = 0 if self.model is None else getattr(self.model.train, key)
            if self.asof.mode == "split" and n:
                raise ConfigError(f"model.train.{key}: {n} candidate-pool negatives need the daily mode's "
                                  "candidate pool (asof.mode: daily); set 0 for the fixed split")
        if self.score.scorer == "collm" and self.model is None:
            raise ConfigError("score.scorer: 'collm' needs a model section (the scorer to train)")

    def _check_als_target(self) -> None:
        """Resolve als.target and refuse what ALS could not honour (the params of a fit record the resolved one)."""
        a, ic = self.als, self.interactions
        if a.target is None:
            a.target = "rating" if a.implicit and ic.columns.rating is not None else "label"
        if a.target == "rating" and ic.columns.rating is None:
            raise ConfigError("als.target: 'rating' needs interactions.columns.rating (or use target: label)")
        if a.implicit and a.target == "rating":
            if a.alpha <= 0:
                raise ConfigError("als.alpha: implicit ALS with target rating weighs each interaction by 1 + alpha * "
                                  "rating; alpha = 0 would ignore the rating (set alpha > 0, or target: label)")
            if ic.rating_min is None or ic.rating_min < 0:
                raise ConfigError("interactions.rating_min: implicit ALS with target rating uses the rating as a "
                                  "confidence weight, which must be >= 0; set rating_min: 0 (or higher)")


# --------------------------------------------------------------------------------------------- loading
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path)
    if origin is typing.Literal:  # the choices are checked by the section's __post_init__ (core.spec.check_choices)
        return _convert(value, type(typing.get_args(tp)[0]), path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        # Spark/reader settings are strings; YAML may give numbers or booleans for them.
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value):
            value = float(value)  # YAML 1.1 reads 5e-5 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown key {where}{unknown[0]!s}; allowed under {path or 'the top level'}: "
                          f"{', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{path}.{name}" if path else name)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{path or 'conf'}: missing required key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path and not str(e).startswith(path) else str(e)) from None


def config_from_dict(data: dict, source_path: Optional[str] = None) -> Config:
    """Build a validated Config from a plain mapping (as parsed from YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"conf {source_path or ''}: top level must be a mapping")
    data = dict(data)
    data.pop("source_path", None)
    cfg = _build(Config, data, "")
    cfg.source_path = source_path
    if cfg.tables.root is not None:
        # Relative paths in a conf are relative to the working directory the job runs in.
        cfg.tables.root = local_abspath(cfg.tables.root)
    if cfg.tables.models_dir is not None:
        cfg.tables.models_dir = local_abspath(cfg.tables.models_dir)
    return cfg


def local_abspath(p: str) -> str:
    """Absolute path for a local path; URIs (s3://, dbfs:/, abfss://...) are returned unchanged."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", p):
        return p
    return os.path.abspath(os.path.expanduser(p))


def load_config(path: str | os.PathLike, overrides: Optional[dict] = None) -> Config:
    """Load a YAML conf; `overrides` (a nested mapping) is merged on top, e.g. {'tables': {'root': ...}}."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"conf file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if overrides:
        data = merge(data, overrides)
    try:
        return config_from_dict(data, str(p))
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def merge(base: dict, top: dict) -> dict:
    """Recursive dict merge: values in `top` win; neither input is modified."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
