"""A real Spark standalone cluster on this machine: a master and two workers started from the installed pyspark's
own scripts, so that executors are JVMs of their own with their own Python workers (local[*] shares one JVM).

One daily day of the ML-100K slice, run up to its candidates in local mode (conftest's `gated`), is then scored
twice: in local mode (in this process) and through `collm run --master spark://...`, each on a copy.
The two tables must be the same, and each executor Python worker must have loaded the model once (the executors'
own logs say so: collm_udf/spark/scorers/model_cache.py)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from pyspark.sql import functions as F

from collm_udf.config.load import to_dict
from helpers import GATE_DAY as DAY, gate_conf

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
WORKERS, PARTITIONS = 2, 4  # more score tasks than executors: the workers' Python processes are reused
LOADED = re.compile(r"\[collm\] model_cache: loaded (.*) in pid (\d+) ")


def java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    found = Path(home, "bin", "java") if home else None
    return str(found) if found is not None and found.is_file() else shutil.which("java")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ok, timeout: float, logs: list[Path]):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError, ValueError):
            got = ok()
            if got:
                return got
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.is_file())
    raise TimeoutError(f"the standalone cluster: {what} within {timeout:.0f}s\n{tails}")


@contextlib.contextmanager
def standalone(tmp: Path, workers: int = WORKERS):
    """(spark://127.0.0.1:<port>, the workers' work dirs, ready) of a master with `workers` workers (1 core, 1 GiB
    each) in `tmp`, booting meanwhile (ready() waits for them); every process, and the executors the workers
    start in their process groups, is stopped on the way out."""
    import pyspark

    home = Path(pyspark.__file__).parent
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(tmp / "logs"),
           "PYSPARK_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1"}
    port, ui = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    procs, logs = [], []

    def start(name: str, *args: str) -> None:
        log = tmp / f"{name}.log"
        logs.append(log)
        with open(log, "wb") as out:
            procs.append(subprocess.Popen([str(home / "bin" / "spark-class"), *args], stdout=out,
                                          stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True))

    def alive() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
            return json.load(r).get("aliveworkers", 0) >= workers

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(ui))
        for i in range(workers):
            (tmp / f"worker{i}").mkdir()
            start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
                  "--memory", "1g", "--work-dir", str(tmp / f"worker{i}"), "--port", str(free_port()),
                  "--webui-port", str(free_port()))
        yield url, [tmp / f"worker{i}" for i in range(workers)], \
            lambda: wait_for(f"{workers} workers registered", alive, 120, logs)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def day_conf(slice_dir: Path, root: Path, tiny_encoder: str):
    """The gated day's conf (tests/helpers.py: gate_conf) serving its newest model, with score tasks to spare."""
    import dataclasses

    cfg = gate_conf(slice_dir, root, tiny_encoder)
    return dataclasses.replace(cfg, gate=dataclasses.replace(cfg.gate, enabled=False),
                               score=dataclasses.replace(cfg.score, partitions=PARTITIONS, arrow_batch_rows=100))


def recommendations(spark, root: Path):
    day = spark.read.format("delta").load(str(root / "recommendations")).where(F.col("ds") == F.lit(DAY).cast("date"))
    return day.toPandas().sort_values(["user_id", "rank"]).reset_index(drop=True)


def test_a_day_on_a_standalone_cluster_equals_local_mode(spark, gated, slice_dir, tiny_encoder, tmp_path):
    """The score stage (the LM in executors' Python workers, the alignment's partial sums, Delta writes from
    executors) through `collm run --master spark://...` on a copy of the gated day's warehouse (conftest: its
    stages ran in local mode); the reference is the same stage in local mode on another copy."""
    from collm_udf.spark import pipeline

    if java() is None:
        pytest.skip("no Java: the standalone master and workers are JVMs (install a JDK or set JAVA_HOME)")
    local, remote = tmp_path / "local", tmp_path / "cluster"
    for copy in (local, remote):
        shutil.copytree(gated[0].tables.root, copy)
        shutil.rmtree(copy / "gate")  # no gate decision: the newest model serves (the LM on the executors)
    # the same conf as a scheduler would pass it: a YAML file, the warehouse as --root, the cluster as --master
    cfg = day_conf(slice_dir, Path("/not-used"), tiny_encoder)
    conf = {k: v for k, v in to_dict(cfg).items() if k != "source_path"}
    # spark.locality.wait 0: tasks go to whichever executor is free, so both workers score
    conf["spark"]["conf"] = {"spark.executor.memory": "1g", "spark.cores.max": str(WORKERS),
                             "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "1g",
                             "spark.locality.wait": "0"}
    (tmp_path / "day.yaml").write_text(yaml.safe_dump(conf))
    with standalone(tmp_path / "spark") as (url, work_dirs, ready):
        # the reference while the cluster boots: the same stage in local mode, in this process
        pipeline.run(spark, day_conf(slice_dir, local, tiny_encoder), stages=["score"], ds=DAY, run_id="run_local")
        ready()
        t0 = time.monotonic()
        done = subprocess.run([str(Path(sys.executable).parent / "collm"), "run", "--conf", str(tmp_path / "day.yaml"),
                               "--root", str(remote), "--master", url, "--ds", DAY, "--stage", "score",
                               "--run-id", "run_cluster"],
                              capture_output=True, text=True, timeout=900,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "PYSPARK_PYTHON": sys.executable})
        took = time.monotonic() - t0
        assert done.returncode == 0, done.stderr[-4000:]
        executor_logs = sorted(p for d in work_dirs for p in d.glob("app-*/*/stderr"))
        loads = Counter((str(p.parent), m.group(1), m.group(2)) for p in executor_logs
                        for m in LOADED.finditer(p.read_text(errors="replace")))
    print(f"cluster score stage ({WORKERS} workers): {took:.1f}s")
    summary = json.loads(done.stdout.strip().splitlines()[-1])["stages"]["score"]
    # the day's ALS fit was aligned to the model's (Spark-side sums), the CoLLM model ranked
    assert summary["model_version"].startswith("collm:") and summary["scorer"]["factors"] in ("rotated", "reference")

    want, got = recommendations(spark, local), recommendations(spark, remote)
    assert len(want) > 100 and (got["model_version"] == want["model_version"]).all()
    assert got[["user_id", "rank", "item_id", "source"]].equals(want[["user_id", "rank", "item_id", "source"]])
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5, atol=1e-6)

    # the executors scored it (their logs hold the loads), each Python worker loading the model once and serving
    # several of the PARTITIONS tasks
    assert len({d for d, _, _ in loads}) == WORKERS, executor_logs
    assert all(n == 1 for n in loads.values()), loads
    assert len(loads) < PARTITIONS
