"""Driver-side progress of long Spark actions: tasks done of total, every interval_s seconds.

A scheduled job's log otherwise shows nothing between "[collm] score ..." and "score done in 3400s". Around the
action, a daemon thread polls SparkContext.statusTracker() (the same status store the Spark UI reads; it exists
with spark.ui.enabled=false too) for the jobs the action started and reports one line per interval through the
caller's `report` callback (the pipeline's `progress`: stderr for `collm run`). An action that ends within the
first interval prints nothing. With `report=None`, or on Spark Connect (no SparkContext), it does nothing.

The action's jobs are found by job group: the block runs under a fresh group unless the thread already has one
(a Databricks notebook cell sets its own for cancellation; it is left alone and jobs known before the block are
ignored instead). The caller's group, description and interrupt setting are restored afterwards.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 15.0
# The local properties SparkContext.setJobGroup sets; restored to the caller's values afterwards.
_GROUP_PROPS = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")


@dataclass(frozen=True)
class Snapshot:
    """Tasks of the stages of the tracked jobs (each stage once; a reused, already finished stage counts done)."""

    jobs: int
    done: int
    total: int
    failed: int
    active: tuple[str, ...]  # "stage 12: 30/64" for each running stage


def snapshot(tracker: Any, group: Optional[str], ignore: frozenset[int]) -> Snapshot:
    """Tasks done/total over the jobs of `group` not in `ignore`. The status API is weakly consistent
    (a job's stage may have no info yet): what is missing is skipped, never an error."""
    jobs = [j for j in tracker.getJobIdsForGroup(group) if j not in ignore]
    seen: set[int] = set()
    done = total = failed = 0
    active: list[str] = []
    for job_id in sorted(jobs):
        info = tracker.getJobInfo(job_id)
        if info is None:
            continue
        for stage_id in info.stageIds:
            if stage_id in seen:
                continue
            seen.add(stage_id)
            st = tracker.getStageInfo(stage_id)
            if st is None:
                continue
            if info.status == "SUCCEEDED" and st.numCompletedTasks == 0 and st.numActiveTasks == 0:
                continue  # skipped: its shuffle output already existed (a running job's cannot be told yet)
            done += st.numCompletedTasks
            total += st.numTasks
            failed += st.numFailedTasks
            if st.numActiveTasks > 0:
                active.append(f"stage {stage_id}: {st.numCompletedTasks}/{st.numTasks}")
    return Snapshot(len(jobs), done, total, failed, tuple(active))


def format_line(label: str, s: Snapshot, elapsed_s: float) -> str:
    pct = f" ({100.0 * s.done / s.total:.0f}%)" if s.total else ""
    line = f"[collm] {label}: {s.done}/{s.total} tasks{pct} in {s.jobs} job(s), {elapsed_s:.0f}s"
    if s.active:
        line += "; running " + ", ".join(s.active)
    if s.failed:
        line += f"; {s.failed} task failure(s), retried by Spark"
    return line


@contextlib.contextmanager
def spark_progress(spark: SparkSession, label: str, report: Optional[Callable[[str], None]],
                   interval_s: Optional[float] = None, rows: Optional[Callable[[], int]] = None,
                   unit: str = "rows") -> Iterator[None]:
    """Report the progress of the Spark actions run inside the block every `interval_s` seconds (default
    DEFAULT_INTERVAL_S, read at call time).

    `rows`, when given, is called once at the end (only if progress was reported) for the number of `unit`
    the block processed, to print an average rate; it may run a cheap Spark count.
    """
    if report is None:
        yield
        return
    try:
        sc = spark.sparkContext
        tracker = sc.statusTracker()
    except Exception:  # noqa: BLE001 - Spark Connect sessions have no SparkContext: no progress
        yield
        return
    interval_s = DEFAULT_INTERVAL_S if interval_s is None else interval_s
    saved = {k: sc.getLocalProperty(k) for k in _GROUP_PROPS}
    group = saved["spark.jobGroup.id"]
    if group is None:
        group = f"collm-progress-{uuid.uuid4().hex[:12]}"
        sc.setJobGroup(group, f"collm {label}")
    ignore = frozenset(tracker.getJobIdsForGroup(group))
    stop = threading.Event()
    emitted = 0
    t0 = time.monotonic()

    def poll() -> None:
        nonlocal emitted
        while not stop.wait(interval_s):
            try:
                s = snapshot(tracker, group, ignore)
                if s.jobs and not stop.is_set():
                    report(format_line(label, s, time.monotonic() - t0))
                    emitted += 1
            except Exception as e:  # noqa: BLE001 - progress must never fail the job it watches
                log.debug("progress poll failed: %s", e)

    thread = threading.Thread(target=poll, name=f"collm-progress-{label}", daemon=True)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        thread.join(timeout=max(5.0, interval_s))
        if saved["spark.jobGroup.id"] is None:
            for k, v in saved.items():
                sc.setLocalProperty(k, v)  # None removes the property again
        if emitted and ok:
            _report_end(report, label, tracker, group, ignore=ignore, elapsed_s=time.monotonic() - t0, rows=rows,
                        unit=unit)


def _report_end(report: Callable[[str], None], label: str, tracker: Any, group: str, *, ignore: frozenset[int],
                elapsed_s: float, rows: Optional[Callable[[], int]], unit: str) -> None:
    try:
        line = format_line(label, snapshot(tracker, group, ignore), elapsed_s) + " (finished)"
        if rows is not None:
            n = int(rows())
            line += f"; {n} {unit}, {n / max(elapsed_s, 1e-9):.1f} {unit}/s"
    except Exception as e:  # noqa: BLE001
        log.debug("progress summary failed: %s", e)
        return
    report(line)
