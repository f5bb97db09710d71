"""One scorer per Python worker, reused across Arrow batches and tasks (the pyspark.ml.model_cache pattern).

This must be a module, not a closure: a dict captured in a UDF's closure is pickled, empty, into every task,
so each task would load the model again. Spark reuses Python workers (spark.python.worker.reuse, on by
default), so the model is loaded once per worker process. LOADS counts loads per key for tests and logs.
"""
from __future__ import annotations

import threading
from typing import Callable

_CACHE: dict = {}
_LOCK = threading.Lock()
LOADS: dict = {}


def get(key, loader: Callable[[], Callable]) -> Callable:
    with _LOCK:
        fn = _CACHE.get(key)
        if fn is None:
            fn = _CACHE[key] = loader()
            LOADS[key] = LOADS.get(key, 0) + 1
        return fn


def clear() -> None:
    with _LOCK:
        _CACHE.clear()
