"""Popularity as a scorer: the lists a team ships without a model (the backtest's popularity and recent-popularity
baselines), served when no trained ranker exists as of the day or when the promotion gate finds none better.
Its pool is not the day's candidates but each user's first top_n unseen items of the popularity order, so the
table it writes is the baseline list itself (collm_udf/spark/backtest.py ranks the same lists)."""
from __future__ import annotations

from typing import Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.asof import AsOf, popular_unseen, popularity_order
from collm_udf.spark.scorers.base import Scorer
from collm_udf.spark.tables import Tables

KINDS = ("popularity", "recent_popularity")


class PopularityScorer(Scorer):
    """score = -(the item's place in the popularity order as of the day): all known interactions (popularity) or
    those of the last candidates.recent_days (recent_popularity); null for items never interacted with."""

    def __init__(self, cfg: Config, tables: Tables, asof: AsOf, kind: str, reason: Optional[str] = None):
        if kind not in KINDS:
            raise ValueError(f"popularity scorer: {kind!r} is not one of {', '.join(KINDS)}")
        self.cfg, self.tables, self.asof, self.name, self.reason = cfg, tables, asof, kind, reason
        self._known = asof.known(tables.read("pairs"))
        self._order = popularity_order(self._known, asof, cfg.candidates.recent_days if kind == KINDS[1] else None)

    @property
    def model_version(self) -> str:
        return f"{self.name}:{self.asof.ds}"

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        order = self._order.select("item_id", (-F.col("pop_rank")).cast("double").alias("score"))
        return pairs.join(order, "item_id", "left").select(*pairs.columns, "score")

    def pool(self, candidates: DataFrame, top_n: int) -> DataFrame:
        """Each candidate user's first top_n unseen items of the order (source 'popular'), with the columns of
        the day's candidates."""
        users = candidates.select("user_id").distinct()
        run = candidates.select("als_run_id").first()
        lists = popular_unseen(users, self._known, self._order, top_n, self.cfg.candidates.seen_buffer)
        return lists.select(F.lit(self.asof.ds).cast("date").alias("ds"), "user_id", "item_id",
                            F.lit("popular").alias("source"), F.lit(None).cast("int").alias("als_rank"), "pop_rank",
                            F.lit(None if run is None else run["als_run_id"]).cast("string").alias("als_run_id"))

    def describe(self) -> dict:
        return {"served": self.name, **({"reason": self.reason} if self.reason else {})}
