"""What the score and evaluate stages know of a model: a Scorer maps a frame of (user_id, item_id, ...) pairs to the
same frame plus a `score` column; rank keeps each user's best. Implementations: als.py (u . v of the day's ALS
fit) and collm.py (the CoLLM model in a pandas UDF)."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import reduce

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


class Scorer(ABC):
    """Scores (user_id, item_id) pairs: higher = more likely to be liked. Null = cannot score this pair."""

    name: str

    @property
    @abstractmethod
    def model_version(self) -> str: ...

    @abstractmethod
    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        """`pairs` plus a DOUBLE column `score` (one output row per input row)."""

    def fallback_score(self) -> float:
        """Score used in evaluation for pairs this scorer returns null for (the uninformed prior)."""
        return 0.0

    def pool(self, candidates: DataFrame, top_n: int) -> DataFrame:
        """The pairs this scorer ranks for the day's table: the day's candidates (a popularity list brings its own)."""
        return candidates

    def metric_rows(self) -> list[tuple]:
        """Extra (metric, segment, value, n_pairs, n_users, k) rows the evaluate stage records for this scorer."""
        return []


def rank(scored: DataFrame, top_n: int) -> DataFrame:
    """Keep each user's top_n by score, then (unscored pairs) by pop_rank when the frame has it, then item_id,
    with rank 1..n."""
    w = Window.partitionBy("user_id").orderBy(*score_order(scored))
    return scored.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= top_n)


def score_order(scored: DataFrame) -> list:
    """Best first: score, then (unscored pairs) pop_rank when the frame has it, then item_id."""
    order = [F.col("score").desc_nulls_last()]
    if "pop_rank" in scored.columns:
        order.append(F.col("pop_rank").asc_nulls_last())
    return order + [F.col("item_id")]


COLD_SOURCES = ("text", "cold")  # the candidates' sources of cold items (collm_udf/spark/stages/candidates.py)


def slot_positions(slots: int, top_n: int) -> list[int]:
    """The 1-based list positions of `slots` reserved rows spread evenly over top_n: ceil((i + 1/2) top_n / slots)
    (2 of 20: 5 and 15; 1 of 20: 10)."""
    return [math.ceil((i + 0.5) * top_n / slots) for i in range(min(slots, top_n))]


def rank_with_cold_slots(scored: DataFrame, top_n: int, slots: int) -> DataFrame:
    """rank, with `slots` positions of each user's top_n (slot_positions) held for the best-scored pairs of the
    cold sources (COLD_SOURCES; the frame's `source`), and the other pairs in score order around them. A user
    with fewer cold pairs than slots gets the other pairs in the free ones; cold pairs beyond the slots are left
    out. slots 0: rank."""
    if slots <= 0:
        return rank(scored, top_n)
    cold = F.coalesce(F.col("source").isin(*COLD_SOURCES), F.lit(False))
    each = scored.withColumn("_cold", cold).withColumn(
        "_r", F.row_number().over(Window.partitionBy("user_id", "_cold").orderBy(*score_order(scored))))
    pos = slot_positions(slots, top_n)
    # the r-th other pair takes the r-th free position: r plus the slots that come before it (p_i - i <= r)
    other = reduce(lambda a, b: a + b, [F.when(F.col("_r") >= p - i, 1).otherwise(0) for i, p in enumerate(pos)],
                   F.col("_r"))
    key = F.when(F.col("_cold"), F.try_element_at(F.array(*[F.lit(p) for p in pos]), F.col("_r"))).otherwise(other)
    w = Window.partitionBy("user_id").orderBy("_key")
    return (each.withColumn("_key", key).where(F.col("_key").isNotNull())
            .withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= top_n).drop("_cold", "_r", "_key"))
