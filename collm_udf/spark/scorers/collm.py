"""The CoLLM scorer on Spark: a pandas UDF (mapInPandas) scoring each user's candidates in one packed pass.

Per pair the UDF gets the user's history titles (the pair's own `history` when the frame has one, as the split
mode's test pairs do; else the user's latest history_len positives before the day's cutoff), the candidate's
text, and the ALS factors of the day's fit, rotated into the model's reference run when they differ
(collm_udf/core/align.py). Model and fit are the newest ones not after the day's cutoff (collm_udf/spark/asof.py). Rows are
repartitioned by user and sorted, so a user's candidates arrive together and share one prefix.

On the executor: the checkpoint is loaded once per Python worker (collm_udf/spark/scorers/model_cache.py) on the
task's GPU when Spark assigned one, else CUDA_VISIBLE_DEVICES' first, else the CPU; torch gets as many threads
as the task has cores (spark.task.cpus). Arrow batches hold score.arrow_batch_rows rows.
"""
from __future__ import annotations

import json
import os

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from collm_udf.core.align import Alignment, AlignmentError, align
from collm_udf.config import Config
from collm_udf.spark.stages import als, train
from collm_udf.core.signals import STATISTICS
from collm_udf.spark.asof import AsOf, history_as_of
from collm_udf.core.signals import column
from collm_udf.spark.signals import add_stats, end_of
from collm_udf.spark.stages.score import Scorer
from collm_udf.spark.tables import Tables

DROP = ("_history_text", "_candidate", "_user_f", "_item_f")


def _titles(frame: DataFrame, key: str, items: DataFrame) -> DataFrame:
    """key, _history_text: the `history` ids of each key as item texts, in order (unknown ids are skipped)."""
    text = items.select(F.col("item_id").alias("_hid"), F.col("text").alias("_t"))
    return (frame.select(key, F.posexplode("history").alias("_pos", "_hid")).join(text, "_hid")
            .groupBy(key).agg(F.array_sort(F.collect_list(F.struct("_pos", "_t"))).alias("_s"))
            .select(key, F.col("_s._t").alias("_history_text")))


def _score_fn(ckpt: str, device: str | None, factor_dim: int, model_run: str, rotation: list, keep: list,
              max_row_tokens: int, batch_tokens: int, bf16: str, fail_once: str | None = None, *,
              stats: tuple = ()):
    """The mapInPandas function. It captures only plain values; the model lives in model_cache."""

    def fn(batches):
        import torch

        from collm_udf.core.inference import load_predict_fn, pick_device
        from collm_udf.spark.scorers import model_cache

        try:
            from pyspark import TaskContext
            ctx = TaskContext.get()
            cpus = int(ctx.cpus()) if ctx is not None else (os.cpu_count() or 1)
        except Exception:  # noqa: BLE001
            cpus = os.cpu_count() or 1
        torch.set_num_threads(max(1, cpus))
        # Resolved per task: a reused worker may serve tasks that Spark gave different GPUs.
        dev = str(pick_device(device))
        predict = model_cache.get((ckpt, dev, model_run, max_row_tokens, batch_tokens, bf16), lambda: load_predict_fn(
            ckpt, dev, factor_dim, model_run, max_row_tokens, batch_tokens, bf16))
        R = np.asarray(rotation, np.float32)
        z = np.zeros(factor_dim, np.float32)
        for pdf in batches:
            if len(pdf) == 0:
                continue
            if fail_once and not os.path.exists(fail_once):  # fault injection (tests): the first task dies once
                open(fail_once, "w").close()
                raise RuntimeError(f"injected scoring failure ({fail_once})")
            uh = pdf["_user_f"].notna().to_numpy()
            ih = pdf["_item_f"].notna().to_numpy()
            uf = np.stack([np.asarray(f, np.float32) if ok else z for f, ok in zip(pdf["_user_f"], uh)]) @ R
            vf = np.stack([np.asarray(f, np.float32) if ok else z for f, ok in zip(pdf["_item_f"], ih)]) @ R
            hist = [list(h) if h is not None else [] for h in pdf["_history_text"]]
            cand = ["" if c is None else c for c in pdf["_candidate"]]
            out = pdf[keep].copy()
            sig = {name: pdf[column(name)].to_numpy(np.float64) for name in stats} if stats else None
            out["score"] = predict(hist, cand, uf, vf, uh, ih, sig)
            yield out

    return fn


class CoLLMScorer(Scorer):
    """Scores pairs with the day's CoLLM model (collm_models) on the day's ALS factors (both as of its cutoff)."""

    name = "collm"

    def __init__(self, spark: SparkSession, cfg: Config, tables: Tables, asof: AsOf, model: dict | None = None,
                 run: dict | None = None, fail_once: str | None = None):
        self.spark, self.cfg, self.tables, self.asof = spark, cfg, tables, asof
        self.fail_once = fail_once  # tests: a marker path; the first scoring task raises once
        # the newest model of this conf's model section: a warehouse may hold models of other confs (a replay
        # of another conf, a conf changed since), and those are not what this conf asks for
        self.model = model or train.model_as_of(tables, asof, conf=train.model_conf_json(cfg))
        self.run = run or als.run_as_of(tables, asof)
        self.alignment = self._align()

    @property
    def model_version(self) -> str:
        return f"collm:{self.model['model_version']}"

    def _factors(self, run_id: str) -> dict:
        rows = self.tables.read("item_factors").where(F.col("als_run_id") == run_id).select("item_id", "features")
        return {r["item_id"]: np.asarray(r["features"], np.float32) for r in rows.collect()}

    def _align(self) -> Alignment:
        ref, new = self.model["als_run_id"], self.run["als_run_id"]
        d = int(json.loads(self.model["spec"])["factor_dim"])
        if ref == new:
            return Alignment.identity(ref, d)
        if not self.cfg.score.align:
            raise AlignmentError(f"CoLLM model {self.model['model_version']} was trained on ALS run {ref}, the "
                                 f"latest ALS run is {new}, and score.align is off: retrain the model (stage "
                                 "train) or turn score.align on")
        return align(self._factors(ref), self._factors(new), ref, new, self.cfg.score.max_alignment_residual)

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
            p = add_stats(p, known, end_of(known, self.asof.cutoff), self.stats, self.cfg.candidates.recent_days)
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
        df = df.repartition(n, "user_id").sortWithinPartitions("user_id", "item_id")
        schema = T.StructType([f for f in pairs.schema.fields if f.name in keep] +
                              [T.StructField("score", T.DoubleType())])
        d = self.alignment.rotation.shape[0]
        fn = _score_fn(self.model["path"], None if s.device == "auto" else s.device, d, self.model["als_run_id"],
                       self.alignment.rotation.tolist(), keep, s.max_row_tokens, s.batch_tokens, s.bf16,
                       self.fail_once, stats=self.stats)
        return df.select(*keep, *DROP, *[column(n) for n in self.stats]).mapInPandas(fn, schema)

    def fallback_score(self) -> float:
        return 0.0

    def describe(self) -> dict:
        a = self.alignment
        return {"model_version": self.model["model_version"], "model_als_run_id": a.reference_run,
                "scored_als_run_id": a.new_run, "alignment_residual": round(a.residual, 4),
                "aligned_items": a.shared_items}
