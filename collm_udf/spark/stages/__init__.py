"""The stage registry: every stage's name, its place in the run order, and its module, one per stage in this
folder, each with run(ctx: collm_udf.spark.context.StageContext) -> dict. Stage names and their order live here
and nowhere else (the default run date and the run id: collm_udf/spark/runs.py). No pyspark at import: the CLI
lists the stages without a JVM, and a stage's module is imported when it runs (stage(name)); no stage module
imports this one."""
from __future__ import annotations

import importlib
from typing import Callable, Iterable, Optional

STAGES = ("ingest", "prepare", "idmap", "als", "train", "candidates", "score", "evaluate")


def select(names: Optional[Iterable[str]] = None) -> list[str]:
    """`names` (default: every stage) in run order; an unknown name is an error listing the stages."""
    names = list(names or STAGES)
    for s in names:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}; stages: {', '.join(STAGES)}")
    return sorted(dict.fromkeys(names), key=STAGES.index)


def stage(name: str) -> Callable:
    """The run(ctx) -> dict of stage `name`."""
    (name,) = select([name])
    return importlib.import_module(f"{__name__}.{name}").run
