"""Driver-side progress of a long Spark action (collm_udf/spark/progress.py) on the session's local Spark."""
from __future__ import annotations

import re
import time
from types import SimpleNamespace

from collm_udf.spark import progress as progress_mod
from collm_udf.spark.context import StageContext
from collm_udf.spark.progress import Snapshot, format_line, snapshot, spark_progress

LINE = re.compile(r"\[collm\] (?P<label>.+?): (?P<done>\d+)/(?P<total>\d+) tasks")
PARTITIONS = 8


def _slow_count(sc, n: int, partitions: int) -> int:
    """Count n numbers sleeping 0.4 s each. The function is defined here so that cloudpickle ships it by value
    (the workers cannot import this test module)."""
    def slow(x: int) -> int:
        time.sleep(0.4)
        return x

    return sc.parallelize(range(n), partitions).map(slow).count()


def test_a_long_action_reports_tasks_done_of_total(spark):
    sc = spark.sparkContext
    lines: list[str] = []
    # 8 tasks of 0.8 s on the fixture's 2 cores: ~3 s, polled every 0.3 s
    with spark_progress(spark, "slow count", lines.append, interval_s=0.3, rows=lambda: 16, unit="pairs"):
        n = _slow_count(sc, 16, PARTITIONS)
    assert n == 16
    parsed = [LINE.match(line) for line in lines]
    assert len(lines) >= 3 and all(parsed), lines
    done = [int(m["done"]) for m in parsed]
    total = [int(m["total"]) for m in parsed]
    assert all(m["label"] == "slow count" for m in parsed)
    assert set(total) == {PARTITIONS}, lines            # one stage of 8 tasks, nothing else counted
    assert all(0 <= d <= PARTITIONS for d in done) and done == sorted(done), lines
    assert done[0] < PARTITIONS                          # seen while running ...
    assert done[-1] == PARTITIONS and "(finished)" in lines[-1]    # ... and a final line with the rate
    assert re.search(r"; 16 pairs, [0-9.]+ pairs/s$", lines[-1]), lines[-1]
    assert sc.getLocalProperty("spark.jobGroup.id") is None  # the thread's job group is restored


def test_jobs_before_the_block_and_a_quick_action_print_nothing(spark):
    sc = spark.sparkContext
    sc.parallelize(range(4), 2).count()  # a job before the block is not the block's
    lines: list[str] = []
    with spark_progress(spark, "quick", lines.append, interval_s=5.0):
        assert sc.parallelize(range(4), 2).count() == 4
    assert lines == []


def test_an_existing_job_group_is_kept_and_its_earlier_jobs_ignored(spark):
    sc = spark.sparkContext
    sc.setJobGroup("notebook-cell-1", "a notebook's own group")
    try:
        sc.parallelize(range(4), 3).count()  # earlier job of the same group: not counted
        lines: list[str] = []
        with spark_progress(spark, "in a group", lines.append, interval_s=0.3):
            _slow_count(sc, 8, 4)
        assert lines and {int(LINE.match(x)["total"]) for x in lines} == {4}, lines
        assert sc.getLocalProperty("spark.jobGroup.id") == "notebook-cell-1"
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
        sc.setLocalProperty("spark.job.interruptOnCancel", None)


def test_the_score_stage_reports_through_the_pipeline_callback(spark, pipeline_run, monkeypatch):
    """score.run wires its scoring action to the helper: with a short interval its lines come through the
    callback the pipeline passes (`collm run` prints them to stderr), ending with the day's pairs."""
    from collm_udf.spark.stages import score
    from helpers import TEST_DS

    cfg, tables, _ = pipeline_run
    monkeypatch.setattr(progress_mod, "DEFAULT_INTERVAL_S", 0.2)
    lines: list[str] = []
    score.run(StageContext.of(spark, cfg, TEST_DS, tables=tables, progress=lines.append))
    assert lines and all(LINE.match(x)["label"] == f"score ds={TEST_DS}" for x in lines), lines
    pairs = tables.read("candidates").where(f"ds = '{TEST_DS}'").count()
    assert "(finished)" in lines[-1] and f"; {pairs} pairs, " in lines[-1], lines[-1]


def test_progress_off_starts_no_thread_and_touches_nothing():
    class NoSpark:  # spark_progress must not even look at the session when progress is off
        def __getattr__(self, name):
            raise AssertionError(f"touched spark.{name}")

    with spark_progress(NoSpark(), "off", None, interval_s=0.01):
        time.sleep(0.05)


def test_snapshot_counts_each_stage_once_and_skips_skipped_stages():
    stages = {1: (4, 0, 4, 0), 2: (8, 3, 2, 1), 3: (5, 0, 0, 0)}  # numTasks, active, completed, failed
    jobs = {9: SimpleNamespace(stageIds=[1], status="SUCCEEDED"),
            10: SimpleNamespace(stageIds=[1, 2], status="RUNNING"),
            11: SimpleNamespace(stageIds=[1, 3], status="SUCCEEDED")}
    tracker = SimpleNamespace(
        getJobIdsForGroup=lambda g: [9, 10, 11],
        getJobInfo=lambda j: jobs.get(j),
        getStageInfo=lambda s: SimpleNamespace(numTasks=stages[s][0], numActiveTasks=stages[s][1],
                                               numCompletedTasks=stages[s][2], numFailedTasks=stages[s][3]))
    s = snapshot(tracker, "g", frozenset({9}))
    # stage 1 once (shared by jobs 10 and 11), stage 3 skipped (job 11 succeeded without running it)
    assert s == Snapshot(jobs=2, done=6, total=12, failed=1, active=("stage 2: 2/8",))
    line = format_line("score ds=2026-11-27", s, 42.0)
    assert line.startswith("[collm] score ds=2026-11-27: 6/12 tasks (50%) in 2 job(s), 42s; running stage 2: 2/8")
    assert "1 task failure(s)" in line
