"""What the score and evaluate stages know of a model: a Scorer maps a frame of (user_id, item_id, ...) pairs to the
same frame plus a `score` column; rank keeps each user's best. Implementations: als.py (u . v of the day's ALS
fit) and collm.py (the CoLLM model in a pandas UDF)."""
from __future__ import annotations

import math
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
    """rank, with a floor for the cold sources' pairs (COLD_SOURCES; the frame's `source`): the i-th best-scored of
    them is listed where its score puts it, or at the i-th of slot_positions(slots, top_n) when that is earlier.
    The other pairs keep score order in the positions left. A floor, not a cap: cold pairs beyond the slots, and
    cold pairs that score above their slot, compete on score; a user with fewer cold pairs than slots gets other
    pairs in the free ones. slots 0: rank.

    It is the list a greedy merge makes - at each position the better of the next cold and the next other pair,
    unless the next cold pair's slot is due - in closed form (tests/test_text_source.py checks one against the
    other): with N_i the natural position of the i-th cold pair and p_i its slot, it goes to F_i = min(N_i, p_i);
    F_i - i other pairs come before it, so the r-th other pair goes to r + #{i: F_i - i < r}."""
    if slots <= 0:
        return rank(scored, top_n)
    cold = F.coalesce(F.col("source").isin(*COLD_SOURCES), F.lit(False))
    user = Window.partitionBy("user_id")
    each = (scored.withColumn("_cold", cold)
            .withColumn("_n", F.row_number().over(user.orderBy(*score_order(scored))))
            .withColumn("_r", F.row_number().over(Window.partitionBy("user_id", "_cold")
                                                  .orderBy(*score_order(scored)))))
    slot = F.try_element_at(F.array(*[F.lit(p) for p in slot_positions(slots, top_n)]), F.col("_r"))
    each = each.withColumn("_f", F.when(F.col("_cold"), F.least(F.col("_n"), F.coalesce(slot, F.col("_n")))))
    before = F.collect_list(F.col("_f") - F.col("_r")).over(user)  # per cold pair, the other pairs before it
    key = F.when(F.col("_cold"), F.col("_f")).otherwise(
        F.col("_r") + F.size(F.filter(before, lambda g: g < F.col("_r"))))
    return (each.withColumn("_key", key).where(F.col("_key") <= top_n)
            .withColumn("rank", F.row_number().over(user.orderBy("_key")))
            .drop("_cold", "_n", "_r", "_f", "_key"))
