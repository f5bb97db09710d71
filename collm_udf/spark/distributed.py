"""Training in several processes through pyspark's TorchDistributor (DistributedDataParallel in the core).

conf: model.train.distributed {num_processes, local_mode, use_gpu}; num_processes 0 or 1 keeps the
single-process trainer on the driver (collm_udf/spark/stages/train.py never comes here then).

  driver: the sampled pairs -> <work>/pairs/<set>.parquet (history titles, candidate text, factors, labels, user
          ids, the signals' statistics as stat.<name>), the features-only ranker -> <work>/pairs/ranker.json
  TorchDistributor(num_processes, local_mode, use_gpu).run(train_worker, conf dict, paths, ...)
     local_mode true:  torchrun starts num_processes workers on the driver (one per GPU, or CPU processes)
     local_mode false: one Spark barrier task per process on the executors, each running torchrun
  every rank: init_process_group (nccl on GPUs, gloo on CPUs) -> read the same pairs -> collm_udf.core.training.fit,
     whose train_stage shards each global batch by rank (see collm_udf/core/training.py)
  rank 0: checkpoint -> <work>/out/model; every rank returns rank 0's {checkpoint, report}

The work directory must be readable and writable by every process: on the driver's disk for local_mode, a
shared path (tables.models_dir on /Volumes/..., DBFS FUSE) otherwise. train_worker is a module-level function
with plain arguments, so cloudpickle sends it by reference and the workers import it from the installed package.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from collm_udf.config import Config, to_dict
from collm_udf.config.model_conf import DistributedConfig
from collm_udf.core.features import FeatureRanker
from collm_udf.core.pairs import PairSet

STAT = "stat."  # a statistic's column: stat.<signal name>
RANKER = "ranker.json"  # beside the sets: the features-only ranker that skip_init features stacks the model on


# ------------------------------------------------------------------------------------------ pairs on disk
def write_pairs(sets: Mapping[str, PairSet], directory: str | os.PathLike,
                base: Optional[FeatureRanker] = None) -> Path:
    """One Parquet file per set (factors as fixed-size float lists (N, d); user ids; each statistic a float column),
    and the features-only ranker `base` as JSON. Every rank reads back what a single process trains on."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, ps in sets.items():
        dim = ps.user_f.shape[1]
        table = pa.table({
            "history": pa.array([list(h) for h in ps.history], pa.list_(pa.string())),
            "candidate": pa.array(list(ps.candidate), pa.string()),
            "user_f": pa.FixedSizeListArray.from_arrays(pa.array(ps.user_f.astype(np.float32).ravel()), dim),
            "item_f": pa.FixedSizeListArray.from_arrays(pa.array(ps.item_f.astype(np.float32).ravel()), dim),
            "user_has": pa.array(ps.user_has.astype(bool)),
            "item_has": pa.array(ps.item_has.astype(bool)),
            "label": pa.array(ps.label.astype(np.int64)),
            "user": pa.nulls(len(ps), pa.string()) if ps.user is None else pa.array([str(u) for u in ps.user]),
            **{STAT + k: pa.array(np.asarray(v, np.float64)) for k, v in (ps.stats or {}).items()},
        })
        pq.write_table(table, d / f"{name}.parquet")
    (d / RANKER).unlink(missing_ok=True)
    if base is not None:
        (d / RANKER).write_text(base.to_json())
    return d


def _factors(col: pa.ChunkedArray) -> np.ndarray:
    """A fixed-size list column -> (N, d) float32 (also for N = 0)."""
    arr = col.combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(arr), arr.type.list_size)


def read_pairs(directory: str | os.PathLike) -> tuple[dict[str, PairSet], Optional[FeatureRanker]]:
    """write_pairs' sets and ranker (None when it wrote none)."""
    out = {}
    for f in sorted(Path(directory).glob("*.parquet")):
        t = pq.read_table(f)
        user = t.column("user")
        stats = {c[len(STAT):]: t.column(c).to_numpy() for c in t.column_names if c.startswith(STAT)}
        out[f.stem] = PairSet(
            history=t.column("history").to_pylist(), candidate=t.column("candidate").to_pylist(),
            user_f=_factors(t.column("user_f")), item_f=_factors(t.column("item_f")),
            user_has=t.column("user_has").to_numpy(zero_copy_only=False).astype(bool),
            item_has=t.column("item_has").to_numpy(zero_copy_only=False).astype(bool),
            label=t.column("label").to_numpy(zero_copy_only=False).astype(np.int64), stats=stats or None,
            user=None if user.null_count == len(user) else np.asarray(user.to_pylist(), dtype=object))
    ranker = Path(directory) / RANKER
    return out, FeatureRanker.from_json(ranker.read_text()) if ranker.is_file() else None


# ------------------------------------------------------------------------------------------ the workers
def train_worker(conf: dict, pairs_dir: str, factor_dim: int, als_run_id: str, out_dir: str,
                 use_gpu: bool) -> dict:
    """One rank (started by torchrun, which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT).

    Returns rank 0's {"checkpoint": dir, "report": fit's report} on every rank: in local mode every rank
    writes its return value to the same output file, so all of them return the same JSON-decoded object.
    """
    import torch
    import torch.distributed as dist

    from collm_udf.core import checkpoint
    from collm_udf.config import config_from_dict
    from collm_udf.core.training import fit

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_gpu:
        # torchrun (local mode) or the Spark task (cluster mode) narrowed CUDA_VISIBLE_DEVICES to this node's GPUs
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if use_gpu else "gloo")
    try:
        rank = dist.get_rank()
        cfg = config_from_dict(conf)
        sets, base = read_pairs(pairs_dir)
        model, _, report = fit(cfg.model.spec(factor_dim, als_run_id, cfg.candidates.min_item_interactions),
                               cfg.model.stages(), sets,
                               skip_init=cfg.model.train.skip_init, state_dir=os.path.join(out_dir, "state"),
                               log=lambda m: print(m, flush=True), device=device, base=base)
        box = [None]
        if rank == 0:
            path = checkpoint.save(model, os.path.join(out_dir, "model"))
            box = [json.dumps({"checkpoint": str(path), "report": report})]
        dist.broadcast_object_list(box, src=0)  # also: no rank returns before rank 0 has saved
        return json.loads(box[0])
    finally:
        dist.destroy_process_group()


def resolve_use_gpu(spark: SparkSession, dc: DistributedConfig) -> bool:
    """use_gpu unset: GPUs when Spark has them where the processes run (what TorchDistributor checks too)."""
    if dc.use_gpu is not None:
        return dc.use_gpu
    if dc.local_mode:
        try:
            return "gpu" in spark.sparkContext.resources
        except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext: set use_gpu explicitly there
            return False
    return int(spark.conf.get("spark.task.resource.gpu.amount", "0") or "0") >= 1


def fit_distributed(spark: SparkSession, cfg: Config, sets: Mapping[str, PairSet], factor_dim: int,
                    als_run_id: str, work_dir: str, *, log: Callable[[str], None] = print,
                    base: Optional[FeatureRanker] = None) -> tuple[str, dict]:
    """Train through TorchDistributor; (checkpoint dir written by rank 0, fit's report from rank 0). base: the
    features-only ranker that skip_init features stacks the model on, as the single-process trainer does."""
    from pyspark.ml.torch.distributor import TorchDistributor

    assert cfg.model is not None
    dc = cfg.model.train.distributed
    use_gpu = resolve_use_gpu(spark, dc)
    pairs_dir = str(write_pairs(sets, os.path.join(work_dir, "pairs"), base))
    log(f"[train] {dc.num_processes} processes through TorchDistributor (local_mode={dc.local_mode}, "
        f"{'GPUs, nccl' if use_gpu else 'CPUs, gloo'})")
    distributor = TorchDistributor(num_processes=dc.num_processes, local_mode=dc.local_mode, use_gpu=use_gpu)
    result = distributor.run(train_worker, to_dict(cfg), pairs_dir, factor_dim, als_run_id,
                             os.path.join(work_dir, "out"), use_gpu)
    if not isinstance(result, dict) or "checkpoint" not in result:
        raise RuntimeError(f"TorchDistributor returned {result!r}, not the training result of rank 0")
    return result["checkpoint"], result["report"]
