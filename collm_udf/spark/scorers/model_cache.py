"""Scorers per Python worker, reused across Arrow batches and tasks (the pyspark.ml.model_cache pattern).

This must be a module, not a closure: a dict captured in a UDF's closure is pickled, empty, into every task,
so each task would load the model again. Spark reuses Python workers (spark.python.worker.reuse, on by
default), so a model is loaded once per worker process. Like pyspark's cache it holds at most MAX_MODELS
models, the least recently used going first (a long-lived worker that scores several models or devices would
otherwise keep every one in memory). LOADS counts loads per key for tests and logs, and each load writes one
line to the worker's stderr (on a cluster: the executor's log), `[collm] model_cache: loaded <key> in pid <pid>`.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable

MAX_MODELS = 3  # pyspark.ml.model_cache.ModelCache._CACHE_SIZE

_CACHE: "OrderedDict[Hashable, Callable]" = OrderedDict()
_LOCK = threading.Lock()
LOADS: dict = {}


def get(key: Hashable, loader: Callable[[], Callable]) -> Callable:
    """The cached predict function of `key`, loading it with loader() on a miss (and evicting the oldest)."""
    with _LOCK:
        fn = _CACHE.get(key)
        if fn is None:
            t0 = time.perf_counter()
            fn = _CACHE[key] = loader()
            LOADS[key] = LOADS.get(key, 0) + 1
            print(f"[collm] model_cache: loaded {key!r} in pid {os.getpid()} ({time.perf_counter() - t0:.1f}s)",
                  file=sys.stderr, flush=True)
            while len(_CACHE) > MAX_MODELS:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
        return fn


def clear() -> None:
    with _LOCK:
        _CACHE.clear()
