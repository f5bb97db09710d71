"""The whole conf (Config) and its loading from YAML: unknown keys and wrong types are errors naming the key's
dotted path; values are never evaluated."""
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

from collm_udf.config.base import ConfigError, help_field as _help
from collm_udf.config.model_conf import ModelConfig
from collm_udf.config.sections import (ALSConfig, AsOfConfig, CandidatesConfig, EvaluateConfig, GateConfig,
                                       PrepareConfig, ScoreConfig, SparkConfig, TablesConfig, TempoConfig)
from collm_udf.config.sources import InteractionsConfig, ItemsConfig


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
    tempo: TempoConfig = _help("settings derived from the data as of each day (daily mode)", factory=TempoConfig)
    gate: GateConfig = _help("the train stage's promotion gate (daily mode)", factory=GateConfig)
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
        if self.score.scorer in ("collm", "features") and self.model is None:
            raise ConfigError(f"score.scorer: {self.score.scorer!r} needs a model section (what the train stage "
                              "trains; the features-only ranker takes its signals and train settings)")
        if self.score.scorer == "features" and not self.model.signals:
            raise ConfigError("score.scorer: 'features' ranks by model.signals, and the conf lists none")

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
