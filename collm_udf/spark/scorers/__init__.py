"""Scorers: the day's model behind one interface (base.py). make_scorer picks the conf's (score.scorer)."""
from __future__ import annotations

from collm_udf.config import Config
from collm_udf.spark.asof import AsOf
from collm_udf.spark.scorers.als import ALSScorer
from collm_udf.spark.scorers.base import Scorer, rank
from collm_udf.spark.scorers.collm import CoLLMScorer
from collm_udf.spark.stages import als
from collm_udf.spark.tables import Tables

__all__ = ["ALSScorer", "CoLLMScorer", "Scorer", "make_scorer", "rank"]


def make_scorer(cfg: Config, tables: Tables, asof: AsOf) -> Scorer:
    if cfg.score.scorer == "als":
        return ALSScorer(tables, als.run_as_of(tables, asof))
    if cfg.score.scorer == "collm":
        return CoLLMScorer(tables.spark, cfg, tables, asof)
    raise ValueError(f"score.scorer: unknown scorer {cfg.score.scorer!r}")
