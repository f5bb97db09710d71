"""make bench-ranking: the daily job replayed over the last weeks of a dataset, and its backtest table.

Runs `collm replay` (collm_udf/spark/replay.py) on its own warehouse under benchmarks/.work/<dataset>-ranking/:
ingest and prepare once, then for each of --days days, --every days apart and ending at the newest day whose
backtest horizon the data covers, the daily stages as of that day (ALS, CoLLM training per its schedule,
candidates, scoring, evaluation). Every day's table is judged by the following week's interactions beside
popularity, recent popularity and the ALS-ranked candidates, on the same users and truth.
Writes benchmarks/results/ranking-<dataset>.json: per day and the mean, Recall@k, NDCG@k and coverage per ranker,
the ratio of CoLLM's mean to the best baseline's, and the wall time.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collm_udf.config import load_config  # noqa: E402

BASELINES = ("popularity", "recent_popularity", "als")


def ratios(mean: list[dict], scorer: str) -> dict:
    """CoLLM's mean figure over the best baseline's, per figure (what the ranking targets are stated in)."""
    by = {r["ranker"]: r for r in mean}
    out = {}
    for f in ("ndcg", "recall"):
        best = max((by[b][f], b) for b in BASELINES if b in by and by[b][f] is not None)
        out[f] = {"scorer": by[scorer][f], "best_baseline": best[1], "best_baseline_value": best[0],
                  "ratio": by[scorer][f] / best[0] if best[0] else None}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--conf", default=None, help="pipeline conf (default conf/local.yaml)")
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--every", type=int, default=7)
    ap.add_argument("--override", default="{}", help="JSON merged into the conf")
    ap.add_argument("--tag", default="", help="suffix of the result file")
    ap.add_argument("--reuse", default=None, help="replay in this earlier run's warehouse (its interactions, ALS "
                    "fits and id map are the same; a model of another conf is trained anew), e.g. ml-100k-ranking")
    args = ap.parse_args()
    from collm_udf.spark import replay
    from collm_udf.spark.session import get_spark

    work = ROOT / "benchmarks" / ".work" / (args.reuse or f"{args.dataset}-ranking{args.tag}")
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)  # a fresh warehouse: every fit and model is made by this run
    over = json.loads(args.override)
    over.setdefault("tables", {})["root"] = str(work / "warehouse")
    cfg = load_config(args.conf or str(ROOT / "conf" / "local.yaml"), over)
    spark = get_spark(cfg, "collm-bench-ranking")
    t0 = time.time()
    summary = replay.run(spark, cfg, days=args.days, every=args.every, skip_ingest=bool(args.reuse),
                         progress=lambda m: print(m, file=sys.stderr))
    wall = round(time.time() - t0, 1)
    spark.stop()
    rep = summary["replay"]
    out = {"dataset": args.dataset, "conf": cfg.source_path, "override": over, "reused_warehouse": args.reuse,
           "scorer": cfg.score.scorer,
           "days": rep["days"], "k": rep["k"], "horizon_days": rep["horizon_days"], "table": rep["table"],
           "mean": rep["mean"], "scorer_over_best_baseline": ratios(rep["mean"], cfg.score.scorer),
           "runs": summary["runs"], "wall_s": wall}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    path = res / f"ranking-{args.dataset}{args.tag}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps({"mean": rep["mean"], "scorer_over_best_baseline": out["scorer_over_best_baseline"],
                      "wall_s": wall, "written": str(path)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
