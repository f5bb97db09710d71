"""The ALS scorer: the day's ALS fit's predicted preference u . v."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from collm_udf.spark.scorers.base import Scorer
from collm_udf.spark.stages import als, idmap
from collm_udf.spark.tables import Tables


class ALSScorer(Scorer):
    """Predicted preference u . v from the ALS run; null where the user or the item has no factors, and for the
    text source's candidates (a frame with `source`): they are the items ALS candidates leave out as too rare for
    ALS to rank (explicit ALS gives an item with one or two ratings an extreme u . v)."""

    name = "als"

    def __init__(self, tables: Tables, run: dict):
        self.tables = tables
        self.run = run
        self.model = als.load_model(run)

    @property
    def model_version(self) -> str:
        return f"als:{self.run['als_run_id']}"

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        users = idmap.indices(self.tables, "user", "user")
        items = idmap.indices(self.tables, "item", "item")
        # Left joins keep pairs whose ids are unmapped; ALS (coldStartStrategy=nan) gives NaN for unknown ids.
        keyed = pairs.join(users, "user_id", "left").join(items, "item_id", "left")
        pred = self.model.transform(keyed.fillna(-1, ["user_idx", "item_idx"]))
        unknown = F.isnan("prediction") | (F.col("user_idx") < 0) | (F.col("item_idx") < 0)
        if "source" in pairs.columns:
            unknown = unknown | F.coalesce(F.col("source") == "text", F.lit(False))
        score = F.when(unknown, None).otherwise(F.col("prediction").cast("double"))
        return pred.withColumn("score", score).drop("prediction", "user_idx", "item_idx")

    def users_with_factors(self) -> DataFrame:
        """user_id of every user the fit has factors for."""
        return (idmap.indices(self.tables, "user", "user")
                .join(self.model.userFactors.select(F.col("id").alias("user_idx")), "user_idx").select("user_id"))

    def fallback_score(self) -> float:
        return float(self.run.get("target_mean") or 0.0)
