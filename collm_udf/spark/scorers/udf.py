"""The CoLLM scorer's pandas UDF (mapInPandas), in the shape of pyspark.ml.functions.predict_batch_udf: the
caller gives make_predict_fn(device) -> predict, a pure function from column arrays to scores; this module
turns the Arrow batches into those arrays and keeps one predict function per Python worker (model_cache).

What crosses to the executors is plain values and make_predict_fn (a module-level function or a partial of
one, which cloudpickle sends by reference). The model is loaded on the executor, on the task's device.
"""
from __future__ import annotations

from typing import Callable, Hashable, Optional, Sequence

import numpy as np

from collm_udf.core.pairs import factor_matrix
from collm_udf.core.signals import column
from collm_udf.spark.task import task_cpus, task_gpu_addresses

COLUMNS = ("_history_text", "_candidate", "_user_f", "_item_f")  # what the UDF reads besides the statistics
PARTS = ("score", "lm_score", "signal_score")  # what it writes: the score and its two addends


def score_udf(*, make_predict_fn: Callable[[str], Callable], key: Hashable, device: Optional[str],
              factor_dim: int, rotation: Sequence[Sequence[float]], keep: Sequence[str],
              stats: Sequence[str] = ()) -> Callable:
    """The mapInPandas function: batches with `keep`, COLUMNS and the statistics' columns in, `keep` + PARTS out:
    score = lm_score + signal_score, the LM's part and the signals' part of each pair's score.

    make_predict_fn(device) loads the model and returns predict(history, candidate, user_f, item_f, user_has,
    item_has, *, stats, parts=True) -> (n, 2) parts (collm_udf.core.inference.load_predict_fn); it runs once per
    worker and device, cached under (key, device). device None: the task's GPU, else the CPU
    (core.inference.pick_device). The ALS factors are rotated by `rotation` (factor_dim x factor_dim) into the
    model's ALS run first."""
    keep, stats = list(keep), tuple(stats)

    def fn(batches):
        import torch

        from collm_udf.core.inference import pick_device
        from collm_udf.spark.scorers import model_cache

        torch.set_num_threads(max(1, task_cpus()))  # oversubscribed threads cost a third of the throughput
        # Resolved per task: a reused worker may serve tasks that Spark gave different GPUs.
        dev = str(pick_device(device, task_gpu_addresses()))
        predict = model_cache.get((key, dev), lambda: make_predict_fn(dev))
        R = np.asarray(rotation, np.float32)
        for pdf in batches:
            if len(pdf) == 0:
                continue
            uf, uh = factor_matrix(pdf["_user_f"], factor_dim, "user_factors.features")
            vf, ih = factor_matrix(pdf["_item_f"], factor_dim, "item_factors.features")
            hist = [list(h) if h is not None else [] for h in pdf["_history_text"]]
            cand = ["" if c is None else c for c in pdf["_candidate"]]
            out = pdf[keep].copy()
            sig = {name: pdf[column(name)].to_numpy(np.float64) for name in stats} if stats else None
            lm, signal = np.asarray(predict(hist, cand, uf @ R, vf @ R, uh, ih, stats=sig, parts=True),
                                    np.float64).T
            out["score"], out["lm_score"], out["signal_score"] = lm + signal, lm, signal
            yield out

    return fn
