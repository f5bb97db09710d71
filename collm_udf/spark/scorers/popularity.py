"""Popularity as a scorer: the lists a team ships without a model (the backtest's popularity and recent-popularity
baselines), served when no trained ranker exists as of the day or when the promotion gate finds none better.
Its pool is not the day's candidates but each user's first top_n unseen items of the popularity order, so the
table it writes is the baseline list itself (collm_udf/spark/backtest.py ranks the same lists). With
score.cold_slots the day's cold-source candidates (text neighbours, cold catalog items) join that pool, so that the
table's floor for cold items holds whatever serves: a list never ranks a cold item by itself, and a gate that serves
one would otherwise drop the day's cold exposure to zero (ml-latest-small's validation days: lists served 3 of 8)."""
from __future__ import annotations

from typing import Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.asof import AsOf, popular_unseen, popularity_order
from collm_udf.spark.scorers.base import COLD_SOURCES, Scorer
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
        the day's candidates; with score.cold_slots also the user's candidates of the cold sources (each pair
        once), which score.cold_slots floors (they rank by the same order, never-seen items last)."""
        users = candidates.select("user_id").distinct()
        run = candidates.select("als_run_id").first()
        lists = popular_unseen(users, self._known, self._order, top_n, self.cfg.candidates.seen_buffer)
        out = lists.select(F.lit(self.asof.ds).cast("date").alias("ds"), "user_id", "item_id",
                           F.lit("popular").alias("source"), F.lit(None).cast("int").alias("als_rank"), "pop_rank",
                           F.lit(None if run is None else run["als_run_id"]).cast("string").alias("als_run_id"))
        if not self.cfg.score.cold_slots:
            return out
        cold = (candidates.where(F.col("source").isin(*COLD_SOURCES)).select(*out.columns)
                .join(out.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti"))
        return out.unionByName(cold)

    def describe(self) -> dict:
        return {"served": self.name, **({"reason": self.reason} if self.reason else {})}
