"""The features-only ranker on Spark (collm_udf/core/features.py): the model's signals, computed for each pair as
the CoLLM scorer computes them (u . v of the day's ALS fit, whether factors are missing, the statistics as of the
day's cutoff), and the ranker's linear expression over those columns. No UDF, no Python worker: it runs wherever
the pairs are."""
from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.core.features import FeatureRanker
from collm_udf.core.signals import STATISTICS, column
from collm_udf.spark.asof import AsOf
from collm_udf.spark.scorers.als import ALSScorer
from collm_udf.spark.scorers.base import Scorer
from collm_udf.spark.signal_stats import add_stats, end_of
from collm_udf.spark.tables import Tables


def signal_columns(pairs: DataFrame, *, tables: Tables, cfg: Config, asof: AsOf, run: dict,
                   names: tuple[str, ...]) -> DataFrame:
    """pairs + one `_sig_<name>` column per signal in `names`, as of the day's cutoff (split mode: its known
    part), the derived ones from the ALS run `run` (MLlib's prediction is u . v)."""
    out = pairs
    if {"als_dot", "als_missing"} & set(names):
        dot = ALSScorer(tables, run).score_pairs(pairs.select("user_id", "item_id").distinct())
        out = out.join(dot.withColumnRenamed("score", "_dot"), ["user_id", "item_id"], "left")
        out = out.withColumn(column("als_dot"), F.coalesce("_dot", F.lit(0.0))) \
            .withColumn(column("als_missing"), F.when(F.col("_dot").isNull(), 1.0).otherwise(0.0)).drop("_dot")
    if "user_missing" in names:
        has = ALSScorer(tables, run).users_with_factors().withColumn("_uf", F.lit(0.0))
        out = out.join(has, "user_id", "left").withColumn(column("user_missing"), F.coalesce("_uf", F.lit(1.0))) \
            .drop("_uf")
    stats = tuple(n for n in names if n in STATISTICS)
    if stats:
        known = asof.known(tables.read("pairs"))
        out = add_stats(out, known, end_of(known, asof.cutoff), stats, cfg.candidates.recent_days,
                        cfg.evaluate.horizon_days, rare_below=cfg.candidates.min_item_interactions)
    return out


def linear(ranker: FeatureRanker) -> Column:
    """The ranker's logit as a column expression over the `_sig_<name>` columns (nulls count as 0, as the core's
    signal matrix has them)."""
    terms = [F.lit(c / s) * (F.coalesce(F.col(column(n)).cast("double"), F.lit(0.0)) - F.lit(m))
             for n, m, s, c in zip(ranker.signals, ranker.mean, ranker.scale, ranker.coef)]
    return reduce(lambda a, b: a + b, terms, F.lit(ranker.intercept))


class FeaturesScorer(Scorer):
    """Scores pairs with a features-only ranker on the day's ALS fit and statistics."""

    name = "features"

    def __init__(self, cfg: Config, tables: Tables, asof: AsOf, *, ranker: FeatureRanker, run: dict, version: str):
        self.cfg, self.tables, self.asof, self.ranker, self.run, self.version = cfg, tables, asof, ranker, run, version

    @property
    def model_version(self) -> str:
        return f"features:{self.version}"

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        keep = pairs.columns
        sig = signal_columns(pairs, tables=self.tables, cfg=self.cfg, asof=self.asof, run=self.run,
                             names=self.ranker.signals)
        return sig.select(*keep, linear(self.ranker).alias("score"))

    def describe(self) -> dict:
        return {"features": self.version, "weights": self.ranker.weights(), "als_run_id": self.run["als_run_id"]}
