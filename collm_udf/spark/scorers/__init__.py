"""Scorers: the day's model behind one interface (base.py). make_scorer picks what serves the day: the conf's ALS
scorer, or what the newest gate decision of the conf as of the day serves (collm_udf/spark/serving.py): the CoLLM
model it promoted, a features-only ranker, ALS or a popularity list; with no trained ranker as of the day (a
history too short to train), score.fallback, with the reason."""
from __future__ import annotations

from typing import Optional

from collm_udf.config import Config
from collm_udf.core.features import FeatureRanker
from collm_udf.spark import model_registry, serving
from collm_udf.spark.asof import AsOf, cold_share
from collm_udf.spark.scorers.als import ALSScorer
from collm_udf.spark.scorers.base import Scorer, rank, rank_with_cold_slots, slot_positions
from collm_udf.spark.scorers.collm import CoLLMScorer
from collm_udf.spark.scorers.features import FeaturesScorer
from collm_udf.spark.scorers.popularity import PopularityScorer
from collm_udf.spark.signal_stats import end_of
from collm_udf.spark.stages import als
from collm_udf.spark.tables import Tables

__all__ = ["ALSScorer", "CoLLMScorer", "FeaturesScorer", "PopularityScorer", "Scorer", "cold_slots", "make_scorer",
           "rank", "rank_with_cold_slots", "resolve", "slot_positions"]


def make_scorer(cfg: Config, tables: Tables, asof: AsOf) -> Scorer:
    """What ranks the day's table (see the module docstring)."""
    if cfg.score.scorer == "als":
        return ALSScorer(tables, als.run_as_of(tables, asof))
    found = serving.decision_as_of(tables, asof, cfg)
    if found is not None:
        return resolve(cfg, tables, asof, found["served"], why=found["reason"])
    if cfg.score.scorer == "collm":  # a warehouse whose models were trained before the gate existed
        model = model_registry.model_as_of(tables, asof, conf=model_registry.model_conf_json(cfg), required=False)
        if model is not None:
            return CoLLMScorer(tables.spark, cfg, tables, asof, model=model)
    when = f"ds={asof.ds}" + (f" (cutoff {asof.cutoff:%Y-%m-%d %H:%M} UTC)" if asof.daily else "")
    return resolve(cfg, tables, asof, cfg.score.fallback,
                   why=f"no trained {cfg.score.scorer} ranker of this conf as of {when}: score.fallback serves")


def resolve(cfg: Config, tables: Tables, asof: AsOf, served: str, *, why: Optional[str] = None,
            run: Optional[dict] = None) -> Scorer:
    """The scorer of a decision's `served` string, on the ALS fit `run` (default: the day's)."""
    kind, _, ref = served.partition(":")
    if kind in ("popularity", "recent_popularity"):
        return PopularityScorer(cfg, tables, asof, kind, reason=why)
    run = run or als.run_as_of(tables, asof)
    if kind == "als":
        return ALSScorer(tables, run)
    if kind == "collm":
        model = model_registry.find_model(tables, ref)
        return CoLLMScorer(tables.spark, cfg, tables, asof, model=model, run=run)
    if kind == "features":
        row = serving.decision(tables, ref)
        if row is None:
            raise FileNotFoundError(f"table gate: no row {ref!r} holds the features-only ranker {served!r}")
        return FeaturesScorer(cfg, tables, asof, ranker=FeatureRanker.from_json(row["features"]), run=run,
                              version=ref)
    raise ValueError(f"table gate: unknown served ranker {served!r}")


def cold_slots(cfg: Config, tables: Tables, asof: AsOf) -> Optional[dict]:
    """With score.cold_slots: the slots that floor cold items - round(the cold share of the recent likes x top_n) -
    and where they go (collm_udf/spark/scorers/base.py: rank_with_cold_slots); None without. The likes are those of
    the last evaluate.horizon_days, the span a day's table is judged on: one horizon back, the share the truth had
    (ML-100K validation days: 7-15% against the truth's 7-8%; over 28 days 9-23%, new releases liked in their first
    weeks counting as cold)."""
    if not cfg.score.cold_slots:
        return None
    known = asof.known(tables.read("pairs"))
    share, likes = cold_share(known, end_of(known, asof.cutoff), cfg.evaluate.horizon_days,
                              cfg.candidates.min_item_interactions)
    n = min(round(share * cfg.score.top_n), cfg.score.top_n)
    return {"share": round(share, 4), "likes": likes, "slots": n, "positions": slot_positions(n, cfg.score.top_n)}
