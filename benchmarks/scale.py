"""make bench-scale: one daily day of a synthetic warehouse (benchmarks/synth.py) at growing sizes, timed per stage.

For each size (1M, 5M and 20M interactions by default; users and items grow with them, 200k users and 50k items
at 20M) a fresh process generates the warehouse once (cached under benchmarks/.work/synth-<size>/), then runs
every stage of one day, as of the data's end minus the evaluation horizon, with conf/local.yaml's settings and
the synthetic sources. The day is ranked by the features-only ranker (score.scorer: features): the LM's cost is
measured apart, because on 2 CPU cores it would score a large audience for hours.
- per stage: wall seconds; the driver's peak memory: the Python process's and the JVM's peak resident set
  (VmHWM; in local mode the JVM holds the executors too);
- the LM (--lm-size only, 1M by default): a CoLLM model of the conf's settings is trained for the day (gate off)
  and scores the candidates of --lm-users users; its pairs/s times each size's candidate pairs is that size's
  full-audience cost in CPU core-hours, and in GPU hours at the newest device rate in benchmarks/results
  (gpu-scoring-*.json, the 0.5B causal backbone: a production backbone, not the embedded MiniLM).
With --event-log, Spark's event log of each size is kept and its slowest actions (collm stage and call site,
summed job seconds) go into the size's `hot_jobs`: where a stage's time goes, without a profiler.
Then each stage's time is fitted as a * interactions^b (least squares in log-log); b is the stage's exponent.
Writes benchmarks/results/scale.json and scale.png (time against interactions per stage, log-log).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SIZES = {"1m": (10_000, 2_500, 1_000_000), "5m": (50_000, 12_500, 5_000_000), "20m": (200_000, 50_000, 20_000_000)}
STAGES = ("ingest", "prepare", "idmap", "als", "train", "candidates", "score", "evaluate")
CORES = os.cpu_count() or 2


def vm_hwm(pid: int) -> float | None:
    """Peak resident set of a process in MiB (Linux), None where /proc has no such figure."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def data_dir(size: str) -> Path:
    return ROOT / "benchmarks" / ".work" / f"synth-{size}"


def hot_jobs(log_dir: Path, walls: dict, top: int = 15) -> list[dict]:
    """The `top` (collm stage, action) pairs of the Spark event logs under log_dir by summed job seconds. The
    action is the SQL execution's description (its call site: a Python line for collect/first/toPandas, the JVM's
    for count and Delta writes); the stage is found by time, from the first job on, in `walls` (stage -> wall
    seconds, in run order), so a job near a stage's edge may be counted in its neighbour. Jobs of one execution
    run side by side under adaptive execution: their seconds can add up to more than the stage's wall."""
    described, root, start, jobs = {}, {}, {}, []
    for f in sorted(p for p in log_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        for line in f.open():
            ev = json.loads(line)
            kind = ev.get("Event", "")
            if kind.endswith("SparkListenerSQLExecutionStart"):
                described[ev["executionId"]] = ev.get("description", "")
                root[ev["executionId"]] = ev.get("rootExecutionId", ev["executionId"])
            elif kind == "SparkListenerJobStart":
                props = ev.get("Properties") or {}
                eid = props.get("spark.sql.execution.id")
                what = props.get("callSite.short") or ""
                if eid is not None:
                    what = described.get(root.get(int(eid), int(eid))) or described.get(int(eid)) or what
                start[ev["Job ID"]] = (ev["Submission Time"] / 1000, what)
            elif kind == "SparkListenerJobEnd" and ev["Job ID"] in start:
                t, what = start.pop(ev["Job ID"])
                jobs.append((t, ev["Completion Time"] / 1000 - t, what))
    if not jobs:
        return []
    edges, at = [], min(t for t, _, _ in jobs)
    for stage, wall in walls.items():
        edges.append((at + wall, stage))
        at += wall
    total: dict = {}
    for t, secs, what in jobs:
        key = (next((s for end, s in edges if t < end), "after"), what)
        n, x = total.get(key, (0, 0.0))
        total[key] = (n + 1, x + secs)
    ranked = sorted(total.items(), key=lambda kv: -kv[1][1])[:top]
    return [{"stage": k[0], "action": k[1], "jobs": n, "job_seconds": round(x, 1)} for k, (n, x) in ranked]


def day_conf(data: Path, lm: bool) -> tuple[dict, str]:
    """The conf dict of the day of the synthetic warehouse at `data` (conf/local.yaml with its sources; the
    features-only ranker serves, or with `lm` CoLLM without a gate) and its ds."""
    import datetime as dt

    import yaml

    from synth import conf_for

    meta = json.loads((data / "meta.json").read_text())
    conf = yaml.safe_load((ROOT / "conf" / "local.yaml").read_text())
    conf.update(conf_for(data, data / ("warehouse-lm" if lm else "warehouse")))
    conf["score"] = {**conf["score"], "scorer": "collm" if lm else "features"}
    conf["gate"] = {"enabled": not lm}
    end = dt.datetime.fromisoformat(meta["end"]).date()
    return conf, (end - dt.timedelta(days=conf["evaluate"]["horizon_days"] + 1)).isoformat()


def one(size: str, lm_users: int, lm: bool, event_log: Path | None = None) -> dict:
    """Generate (once) and run one size's day in this process; the LM's pairs/s when `lm`."""
    import shutil

    from synth import generate

    users, items, n = SIZES[size]
    data = data_dir(size)
    if not (data / "meta.json").is_file():
        t = time.time()
        generate(data, users, items, n)
        print(f"[scale] {size}: generated in {time.time() - t:.0f}s", file=sys.stderr)
    meta = json.loads((data / "meta.json").read_text())
    from collm_udf.config import config_from_dict
    from collm_udf.spark import pipeline
    from collm_udf.spark.session import get_spark

    conf, ds = day_conf(data, lm=False)
    shutil.rmtree(conf["tables"]["root"], ignore_errors=True)
    if event_log is not None:
        logs = event_log.resolve() / size  # a file URI needs an absolute path (make passes a relative one)
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        conf["spark"] = {"conf": {"spark.eventLog.enabled": "true", "spark.eventLog.dir": logs.as_uri(),
                                  "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false"}}
    cfg = config_from_dict(conf)
    spark = get_spark(cfg, f"collm-bench-scale-{size}")
    jvm_pid = int(spark.sparkContext._jvm.ProcessHandle.current().pid())
    t0 = time.time()
    peaks: dict = {}  # the driver's Python peak after each stage: which stage raised it

    def progress(m: str) -> None:
        print(m, file=sys.stderr)
        if m.startswith("[collm] ") and " done in " in m:
            peaks[m.split()[1]] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    summary = pipeline.run(spark, cfg, ds=ds, run_id=f"scale_{size}", progress=progress)
    out = {"size": size, "users": meta["users"], "items": meta["items"], "interactions": meta["interactions"],
           "ds": ds, "wall_s": round(time.time() - t0, 1),
           "stages": {s: summary["stages"][s]["wall_s"] for s in STAGES if s in summary["stages"]},
           "train_gate_s": summary["stages"].get("train", {}).get("gate", {}).get("wall_s"),
           "candidate_pairs": summary["tables"]["candidates"]["rows"] if "candidates" in summary["tables"] else None,
           "audience": summary["stages"].get("candidates", {}).get("users"),
           "driver_python_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "driver_python_peak_after_stage_mib": peaks,
           "driver_jvm_peak_mib": vm_hwm(jvm_pid), "spark_driver_memory": spark.conf.get("spark.driver.memory")}
    if lm:
        out["lm"] = lm_rate(spark, size, ds, lm_users)
    spark.stop()
    if event_log is not None:
        out["hot_jobs"] = hot_jobs(event_log / size, out["stages"])
    return out


def lm_rate(spark, size: str, ds: str, n_users: int) -> dict:
    """Train the conf's CoLLM model for the day (gate off) on a copy of the day's warehouse, then score the
    day's candidates of n_users users (a seeded hash sample); pairs/s of that scoring alone."""
    import shutil

    from pyspark.sql import functions as F

    from collm_udf.config import config_from_dict
    from collm_udf.spark import pipeline
    from collm_udf.spark.asof import AsOf
    from collm_udf.spark.scorers.collm import CoLLMScorer
    from collm_udf.spark.tables import Tables

    conf, _ = day_conf(data_dir(size), lm=True)
    base, _ = day_conf(data_dir(size), lm=False)
    shutil.rmtree(conf["tables"]["root"], ignore_errors=True)
    shutil.copytree(base["tables"]["root"], conf["tables"]["root"])
    cfg = config_from_dict(conf)
    t = time.time()
    pipeline.run(spark, cfg, stages=["train"], ds=ds, run_id=f"scale_{size}_lm")
    train_s = time.time() - t
    tables = Tables(spark, cfg.tables)
    day = tables.read("candidates").where(F.col("ds") == F.lit(ds).cast("date"))
    who = (day.select("user_id").distinct().orderBy(F.xxhash64(F.lit(7), "user_id"), "user_id").limit(n_users))
    pairs = day.join(who, "user_id").cache()
    n = pairs.count()
    scorer = CoLLMScorer(spark, cfg, tables, AsOf.of(cfg, ds))
    t = time.time()
    scored = scorer.score_pairs(pairs).select(F.sum("score")).first()[0]
    score_s = time.time() - t
    pairs.unpersist()
    assert scored is not None
    return {"users": n_users, "pairs": n, "train_s": round(train_s, 1), "score_s": round(score_s, 1),
            "pairs_per_s": round(n / score_s, 1), "cores": CORES, "backbone": cfg.model.backbone}


def gpu_rate() -> dict | None:
    """The newest measured device scoring rate (pairs/s of the 0.5B causal backbone, packed)."""
    found = sorted((ROOT / "benchmarks" / "results").glob("gpu-scoring-*.json"), key=lambda p: p.stat().st_mtime)
    for p in reversed(found):
        d = json.loads(p.read_text())
        rate = d.get("models", {}).get("0.5b", {}).get("packed_pairs_per_s")
        if rate:
            return {"file": p.name, "device": d.get("device"), "backbone": "0.5b causal", "pairs_per_s": rate}
    return None


def fit(rows: list[dict]) -> dict:
    """Each stage's exponent b of time = a * interactions^b (log-log least squares; needs two sizes)."""
    import numpy as np

    x = np.log([r["interactions"] for r in rows])
    out = {}
    for s in STAGES + ("wall_s",):
        y = [r["stages"].get(s) if s != "wall_s" else r["wall_s"] for r in rows]
        if len(rows) >= 2 and all(v and v > 0 for v in y):
            out[s] = round(float(np.polyfit(x, np.log(y), 1)[0]), 3)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = [r["interactions"] for r in rows]
    for s in STAGES:
        ax.plot(n, [r["stages"].get(s) for r in rows], marker="o", label=s)
    ax.plot(n, [r["wall_s"] for r in rows], marker="s", color="black", label="day")
    ax.set(xscale="log", yscale="log", xlabel="interactions", ylabel="seconds (2 cores)",
           title="One daily day per stage against warehouse size")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1m,5m,20m", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--lm-size", default="1m", help="the size whose day also measures the LM's rate ('' for none)")
    ap.add_argument("--lm-users", type=int, default=2000)
    ap.add_argument("--lm-rate-from", type=Path, help="with --lm-size '': an earlier scale JSON whose measured LM "
                    "rate prices the full audiences (recorded with its file name)")
    ap.add_argument("--event-log", type=Path, help="keep Spark's event log of each size under this folder and "
                    "record each size's slowest jobs (hot_jobs)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one size in this process, print its JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.lm_users, args.one == args.lm_size, args.event_log)))
        return 0
    rows = []
    for size in args.sizes.split(","):
        t = time.time()
        cmd = [sys.executable, __file__, "--one", size, "--lm-size", args.lm_size, "--lm-users", str(args.lm_users)]
        cmd += ["--event-log", str(args.event_log)] if args.event_log else []
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"[scale] {size}: {time.time() - t:.0f}s {json.dumps(rows[-1])}", file=sys.stderr)
    lm = next((r["lm"] for r in rows if "lm" in r), None)
    if lm is None and args.lm_rate_from:
        lm = {**json.loads(args.lm_rate_from.read_text())["lm_rate"], "from": args.lm_rate_from.name}
    gpu = gpu_rate()
    for r in rows:  # the full audience's LM cost at the measured rates
        if lm and r["candidate_pairs"]:
            r["lm_full_audience"] = {"cpu_core_hours": round(r["candidate_pairs"] / lm["pairs_per_s"] / 3600 * CORES,
                                                             2),
                                     "gpu_hours": round(r["candidate_pairs"] / gpu["pairs_per_s"] / 3600, 4)
                                     if gpu else None}
    first = rows[0]
    out = {"sizes": rows, "exponents": fit(rows), "lm_rate": lm, "gpu_rate": gpu, "cores": CORES,
           "driver_peak_over_smallest": {r["size"]: {
               "python": round(r["driver_python_peak_mib"] / first["driver_python_peak_mib"], 2),
               "jvm": round(r["driver_jvm_peak_mib"] / first["driver_jvm_peak_mib"], 2)
               if r["driver_jvm_peak_mib"] and first["driver_jvm_peak_mib"] else None} for r in rows}}
    res = ROOT / "benchmarks" / "results"
    (res / "scale.json").write_text(json.dumps(out, indent=2))
    plot(rows, res / "scale.png")
    print(f"{'stage':12s}" + "".join(f"{r['size']:>10s}" for r in rows) + "  exponent")
    for s in STAGES + ("wall_s",):
        print(f"{s:12s}" + "".join(f"{(r['stages'].get(s) if s != 'wall_s' else r['wall_s']) or 0:10.1f}"
                                   for r in rows) + f"  {out['exponents'].get(s, '')}")
    print(json.dumps({k: out[k] for k in ("driver_peak_over_smallest", "lm_rate")}, indent=1))
    print("written benchmarks/results/scale.json, scale.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
