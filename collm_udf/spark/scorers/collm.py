"""The CoLLM scorer on Spark: a pandas UDF (mapInPandas) scoring each user's candidates in one packed pass.

Per pair the UDF gets the user's history titles (the pair's own `history` when the frame has one, as the split
mode's test pairs do; else the user's latest history_len positives before the day's cutoff), the candidate's
text, and the ALS factors of the day's fit, rotated into the model's reference run when they differ
(collm_udf/core/align.py). Model and fit are the newest ones not after the day's cutoff (collm_udf/spark/asof.py).
Rows are repartitioned by user and sorted, so a user's candidates arrive together and share one prefix.

On the executor: the checkpoint is loaded once per Python worker (collm_udf/spark/scorers/model_cache.py) on the
task's GPU when Spark assigned one, else CUDA_VISIBLE_DEVICES' first, else the CPU; torch gets as many threads
as the task has cores (spark.task.cpus). Arrow batches hold score.arrow_batch_rows rows.
"""
from __future__ import annotations

import json
from functools import partial
from typing import Callable, Optional

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from collm_udf.config import Config
from collm_udf.core.align import Alignment, AlignmentError, Moments, align_moments
from collm_udf.core.inference import load_predict_fn
from collm_udf.core.signals import STATISTICS, column
from collm_udf.spark import model_registry
from collm_udf.spark.asof import AsOf, history_as_of
from collm_udf.spark.scorers.base import Scorer
from collm_udf.spark.scorers.udf import COLUMNS, PARTS, score_udf
from collm_udf.spark.signal_stats import add_stats, end_of
from collm_udf.spark.stages import als
from collm_udf.spark.tables import Tables


def _titles(frame: DataFrame, key: str, items: DataFrame) -> DataFrame:
    """key, _history_text: the `history` ids of each key as item texts, in order (unknown ids are skipped)."""
    text = items.select(F.col("item_id").alias("_hid"), F.col("text").alias("_t"))
    return (frame.select(key, F.posexplode("history").alias("_pos", "_hid")).join(text, "_hid")
            .groupBy(key).agg(F.array_sort(F.collect_list(F.struct("_pos", "_t"))).alias("_s"))
            .select(key, F.col("_s._t").alias("_history_text")))


MOMENTS = T.StructType([T.StructField("shared", T.LongType()), T.StructField("d_new", T.IntegerType()),
                        T.StructField("d_ref", T.IntegerType()), T.StructField("cross", T.ArrayType(T.DoubleType())),
                        T.StructField("new_sq", T.DoubleType()), T.StructField("ref_sq", T.DoubleType())])


def factor_moments(tables: Tables, reference_run: str, new_run: str) -> Optional[Moments]:
    """The alignment's sums over the items both ALS runs know (collm_udf/core/align.py), each partition's in its
    own task and one d x d row per partition to the driver, whatever the catalog's size; None: no shared item."""
    f = tables.read("item_factors")
    both = (f.where(F.col("als_run_id") == new_run).select("item_id", F.col("features").alias("_a"))
            .join(f.where(F.col("als_run_id") == reference_run).select("item_id", F.col("features").alias("_b")),
                  "item_id"))

    def partial_sums(batches):
        total = None
        for b in batches:
            if len(b):
                m = Moments.of(np.stack(b["_a"].to_numpy()), np.stack(b["_b"].to_numpy()))
                total = m if total is None else total + m
        if total is not None:
            yield pd.DataFrame({"shared": [total.shared], "d_new": [total.cross.shape[0]],
                                "d_ref": [total.cross.shape[1]], "cross": [total.cross.ravel()],
                                "new_sq": [total.new_sq], "ref_sq": [total.ref_sq]})

    rows = both.select("_a", "_b").mapInPandas(partial_sums, MOMENTS).collect()
    parts = [Moments(r["shared"], np.asarray(r["cross"], np.float64).reshape(r["d_new"], r["d_ref"]), r["new_sq"],
                     r["ref_sq"]) for r in rows]
    return sum(parts[1:], parts[0]) if parts else None


class CoLLMScorer(Scorer):
    """Scores pairs with the day's CoLLM model (collm_models) on the day's ALS factors (both as of its cutoff)."""

    name = "collm"

    def __init__(self, spark: SparkSession, cfg: Config, tables: Tables, asof: AsOf, *, model: dict | None = None,
                 run: dict | None = None, make_predict_fn: Optional[Callable[[str], Callable]] = None):
        """model, run: the collm_models row and ALS run to use (default: the newest as of the day's cutoff).
        make_predict_fn(device) -> predict: what the UDF loads on each worker (default: load_predict_fn on
        the model's checkpoint with the conf's score settings)."""
        self.spark, self.cfg, self.tables, self.asof = spark, cfg, tables, asof
        # the newest model of this conf's model section: a warehouse may hold models of other confs (a replay
        # of another conf, a conf changed since), and those are not what this conf asks for
        self.model = model or model_registry.model_as_of(tables, asof, conf=model_registry.model_conf_json(cfg))
        self.run = run or als.run_as_of(tables, asof)
        self.alignment = self._align()
        s = cfg.score
        self.make_predict_fn = make_predict_fn or partial(
            load_predict_fn, self.model["path"], expect_factor_dim=self.alignment.rotation.shape[0],
            expect_als_run_id=self.model["als_run_id"], max_row_tokens=s.max_row_tokens,
            batch_tokens=s.batch_tokens, bf16=s.bf16)

    @property
    def model_version(self) -> str:
        return f"collm:{self.model['model_version']}"

    def _align(self) -> Alignment:
        """The day's factors rotated into the model's ALS run; when that rotation does not fit (factors drifted
        past score.max_alignment_residual, too few shared items) or score.align is off, the model's own run's
        factors instead: entities that run does not know get the no-CF vector. The day is never lost to drift;
        `drift` says why the reference factors scored it."""
        ref, new = self.model["als_run_id"], self.run["als_run_id"]
        d = int(json.loads(self.model["spec"])["factor_dim"])
        self.drift: Optional[dict] = None
        if ref == new:
            return Alignment.identity(ref, d)
        residual, shared = None, None
        if not self.cfg.score.align:
            why = "score.align is off"
        else:
            try:
                return align_moments(factor_moments(self.tables, ref, new), ref, new,
                                     self.cfg.score.max_alignment_residual)
            except AlignmentError as e:
                why, residual, shared = str(e), e.residual, e.shared_items
        reference = als.find_run(self.tables, ref)
        if reference is None:
            raise AlignmentError(f"CoLLM model {self.model['model_version']} cannot score ALS run {new} ({why}) and "
                                 f"its own ALS run {ref} is gone from table als_runs: retrain the model (stage train)")
        self.drift = {"day_als_run_id": new, "reason": why, "residual": residual, "shared_items": shared}
        self.run = reference
        return Alignment(ref, ref, np.eye(d, dtype=np.float32), 0.0 if residual is None else residual, shared or 0)

    def inputs(self, pairs: DataFrame) -> DataFrame:
        """pairs + _history_text, _candidate, _user_f, _item_f (factors null where the run has none)."""
        items = self.tables.read("items").select("item_id", "text")
        run_id = self.run["als_run_id"]
        if "history" in pairs.columns:
            # Titles per distinct history, joined back on the history itself (a natural key: no row ids).
            p = pairs.withColumn("_hkey", F.concat_ws("\u0001", "history"))
            hist = p.select("_hkey", "history").dropDuplicates(["_hkey"])
            p = p.join(_titles(hist, "_hkey", items), "_hkey", "left").drop("_hkey")
        else:
            hist = history_as_of(self.asof.known(self.tables.read("pairs")), self.cfg.prepare.history_len)
            p = pairs.join(_titles(hist, "user_id", items), "user_id", "left")
        uf = self.tables.read("user_factors").where(F.col("als_run_id") == run_id) \
            .select("user_id", F.col("features").alias("_user_f"))
        vf = self.tables.read("item_factors").where(F.col("als_run_id") == run_id) \
            .select("item_id", F.col("features").alias("_item_f"))
        p = (p.join(items.select("item_id", F.col("text").alias("_candidate")), "item_id", "left")
             .join(uf, "user_id", "left").join(vf, "item_id", "left"))
        if self.stats:  # the model's signals, as of the day's cutoff
            known = self.asof.known(self.tables.read("pairs"))
            p = add_stats(p, known, end_of(known, self.asof.cutoff), self.stats,
                          self.cfg.candidates.recent_days, self.cfg.evaluate.horizon_days,
                          rare_below=self.cfg.candidates.min_item_interactions)
        return p

    @property
    def stats(self) -> tuple:
        """The statistics among the model's signals, which the scorer computes for each pair."""
        return tuple(n for n in json.loads(self.model["spec"]).get("signals", []) if n in STATISTICS)

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        s = self.cfg.score
        keep = [c for c in pairs.columns if c != "history"]
        df = self.inputs(pairs.select(*pairs.columns))
        n = s.partitions or int(self.spark.conf.get("spark.sql.shuffle.partitions", "200"))
        # By a hash of the user, not the user column itself: the joins above already leave the rows hash-partitioned
        # by user_id into spark.sql.shuffle.partitions parts, so with that many a repartition on user_id would be
        # dropped as redundant and adaptive execution would coalesce the (small) joined rows into one task, scoring
        # the whole day on one core or GPU. A repartition that is not redundant keeps its n parts.
        df = df.repartition(n, F.xxhash64("user_id")).sortWithinPartitions("user_id", "item_id")
        schema = T.StructType([f for f in pairs.schema.fields if f.name in keep] +
                              [T.StructField(c, T.DoubleType()) for c in PARTS])
        fn = score_udf(make_predict_fn=self.make_predict_fn, key=self._cache_key(),
                       device=None if s.device == "auto" else s.device, factor_dim=self.alignment.rotation.shape[0],
                       rotation=self.alignment.rotation.tolist(), keep=keep, stats=self.stats)
        return df.select(*keep, *COLUMNS, *[column(n) for n in self.stats]).mapInPandas(fn, schema)

    def _cache_key(self) -> tuple:
        """What identifies the loaded predict function on a worker: the checkpoint, the settings it was loaded
        with, and the loader itself (another make_predict_fn must not get this one's cached model)."""
        f = self.make_predict_fn
        loader = getattr(getattr(f, "func", f), "__qualname__", repr(f))
        s = self.cfg.score
        return (self.model["path"], self.model["als_run_id"], s.max_row_tokens, s.batch_tokens, s.bf16, loader)

    def fallback_score(self) -> float:
        return 0.0

    def describe(self) -> dict:
        a = self.alignment
        out = {"model_version": self.model["model_version"], "model_als_run_id": a.reference_run,
               "scored_als_run_id": a.new_run, "alignment_residual": round(a.residual, 4),
               "aligned_items": a.shared_items, "factors": self.factors_used}
        if self.drift is not None:
            out["drift"] = self.drift
        return out

    @property
    def factors_used(self) -> str:
        """same_run (the day's fit is the model's), rotated (the day's fit, rotated), or reference (the model's
        own fit, because the day's did not align)."""
        if self.drift is not None:
            return "reference"
        return "same_run" if self.alignment.reference_run == self.alignment.new_run else "rotated"

    def metric_rows(self) -> list[tuple]:
        a = self.alignment
        return [("alignment_residual", self.factors_used, float(a.residual), a.shared_items or None, None, None)]
