"""What Spark gave the running task: its cores and its GPUs. pyspark is imported when asked, not at import, so
scorers outside Spark (the MLflow pyfunc, collm_udf/mlflow_model.py) can ask too and get the machine's defaults."""
from __future__ import annotations

import os


def task_cpus() -> int:
    """The cores Spark gave this task (spark.task.cpus); all of the machine's outside a task."""
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        return int(ctx.cpus()) if ctx is not None else (os.cpu_count() or 1)
    except Exception:  # noqa: BLE001
        return os.cpu_count() or 1


def task_gpu_addresses() -> list[str]:
    """The GPU addresses Spark assigned to this task (spark.task.resource.gpu.amount); none outside a task."""
    try:
        from pyspark import TaskContext
    except ImportError:  # a serving machine without Spark
        return []
    ctx = TaskContext.get()
    if ctx is None:
        return []
    res = ctx.resources().get("gpu")
    return list(res.addresses) if res is not None else []
