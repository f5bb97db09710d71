"""What the score and evaluate stages know of a model: a Scorer maps a frame of (user_id, item_id, ...) pairs to the
same frame plus a `score` column; rank keeps each user's best. Implementations: als.py (u . v of the day's ALS
fit) and collm.py (the CoLLM model in a pandas UDF)."""
from __future__ import annotations

from abc import ABC, abstractmethod

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
    order = [F.col("score").desc_nulls_last()]
    if "pop_rank" in scored.columns:
        order.append(F.col("pop_rank").asc_nulls_last())
    w = Window.partitionBy("user_id").orderBy(*order, F.col("item_id"))
    return scored.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= top_n)
