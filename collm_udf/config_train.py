"""Conf sections model.train.distributed and model.train.mlflow (kept here so collm_udf/config.py stays small).

Same conventions as collm_udf/config.py: every field carries help text, __post_init__ validates, and the loader
there rejects unknown keys and wrong types with the key's dotted path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


def _error(msg: str) -> Exception:
    from collm_udf.config import ConfigError  # imported late: collm_udf.config imports this module

    return ConfigError(msg)


@dataclass
class DistributedConfig:
    """Training in several processes (DistributedDataParallel) started by pyspark's TorchDistributor."""

    num_processes: int = _help("training processes, one per GPU (or CPU process); 0 or 1 = the single-process "
                               "trainer on the driver", 0)
    local_mode: bool = _help("true: every process on the driver (one multi-GPU machine); false: one Spark "
                             "barrier task per process on the executors (multi-node; tables.models_dir must be "
                             "storage every node reads, e.g. /Volumes/...)", True)
    use_gpu: Optional[bool] = _help("one GPU per process with nccl (true) or CPU processes with gloo (false); "
                                    "unset = GPUs when Spark has them for the driver (local_mode) or the tasks "
                                    "(spark.task.resource.gpu.amount)", None)

    def __post_init__(self):
        if self.num_processes < 0:
            raise _error("num_processes must be >= 0 (0 or 1: one process)")


@dataclass
class MlflowConfig:
    """MLflow tracking of the train stage: params, per-epoch metrics and the scorer as a pyfunc model."""

    enabled: bool = _help("log each train-stage run to MLflow (needs the mlflow or mlflow-skinny package; "
                          "Databricks runtimes have it)", False)
    experiment: Optional[str] = _help("experiment name, e.g. /Users/me@example.com/collm on Databricks; unset = "
                                      "the active experiment (a Databricks notebook's own)", None)
    tracking_uri: Optional[str] = _help("tracking store, e.g. databricks, http://host:5000 or file:/path/mlruns; "
                                        "unset = MLFLOW_TRACKING_URI or the environment's default", None)
    registered_model: Optional[str] = _help("also register the logged scorer under this name (Unity Catalog: "
                                            "catalog.schema.model)", None)

    def __post_init__(self):
        if self.experiment is not None and not self.experiment.strip():
            raise _error("experiment: empty name (leave it unset for the active experiment)")
