"""make bench-ranking: the daily table ranked by the bench-quality CoLLM model vs ranked by ALS.

Takes the warehouse and checkpoint that `make bench-quality` leaves under benchmarks/.work/<dataset>/ (run it
first), registers the checkpoint as a model version and runs the real candidates, score and evaluate stages
for one day with the CoLLM scorer on Spark. evaluate scores the test pairs through the Spark scorer (so its AUC
must match bench-quality's) and ranks the same candidates by ALS too, so both Recall@k / NDCG@k come from one
run. --max-cold-items overrides the conf (the LM may rank never-rated items; ALS cannot score them).
Writes benchmarks/results/ranking-<dataset>.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collm_udf import checkpoint  # noqa: E402
from collm_udf.config import load_config  # noqa: E402

DS = "2026-01-02"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--conf", default=None, help="pipeline conf (default conf/local.yaml)")
    ap.add_argument("--max-cold-items", type=int, default=None)
    args = ap.parse_args()
    from collm_udf.spark import pipeline
    from collm_udf.spark.session import get_spark
    from collm_udf.spark.tables import Tables
    from collm_udf.spark.train import register

    work = ROOT / "benchmarks" / ".work" / args.dataset
    ckpt = work / "checkpoint"
    if not (ckpt / "model.safetensors").is_file():
        raise SystemExit(f"{ckpt}: no checkpoint; run `make bench-quality DATASET={args.dataset}` first")
    over: dict = {"tables": {"root": str(work / "warehouse")}, "score": {"scorer": "collm"}}
    if args.max_cold_items is not None:
        over["candidates"] = {"max_cold_items": args.max_cold_items}
    cfg = load_config(args.conf or str(ROOT / "conf" / "local.yaml"), over)
    spark = get_spark(cfg, "collm-bench-ranking")
    tables = Tables(spark, cfg.tables)
    model, _ = checkpoint.load(str(ckpt))
    digest = hashlib.sha1((ckpt / "model.safetensors").read_bytes()).hexdigest()[:10]
    register(spark, cfg, tables, model, f"collm_bench_{digest}", DS, {"pairs": {}})
    t0 = time.time()
    summary = pipeline.run(spark, cfg, stages=["candidates", "score", "evaluate"], ds=DS)
    wall = round(time.time() - t0, 1)
    spark.stop()
    m, k = summary["metrics"], cfg.evaluate.k
    out = {"dataset": args.dataset, "ds": DS, "model_version": summary["model_version"],
           "max_cold_items": cfg.candidates.max_cold_items, "k": k,
           "collm": {x: m.get(x) for x in (f"recall@{k}", f"ndcg@{k}", "ranking_users", "ranking_users_with_recs")},
           "als": {x: m["als"].get(x) for x in (f"recall@{k}", f"ndcg@{k}", "ranking_users")},
           "auc": {"collm": m["auc"], "als": m["als"]["auc"]}, "uauc": {"collm": m["uauc"], "als": m["als"]["uauc"]},
           "candidates": summary["stages"]["candidates"], "score": summary["stages"]["score"], "wall_s": wall}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.max_cold_items is None else f"-cold{args.max_cold_items}"
    (res / f"ranking-{args.dataset}{suffix}.json").write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps({"collm": out["collm"], "als": out["als"], "auc_all": {s: v["all"] for s, v in out["auc"].items()},
                      "wall_s": wall}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
