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
from collm_udf.spark.replay import BASELINES  # noqa: E402  (the replay's: popularity, recent, ALS, features-only)

NO_MODEL = ("popularity", "recent_popularity", "als")  # the lists a team ships without any trained ranker


def ratios(mean: list[dict], scorer: str, baselines: tuple = BASELINES) -> dict:
    """The table's mean figure over the best baseline's, per figure (what the ranking targets are stated in)."""
    by = {r["ranker"]: r for r in mean}
    out = {}
    for f in ("ndcg", "recall"):
        best = max((by[b][f], b) for b in baselines if b in by and by[b][f] is not None and b != scorer)
        out[f] = {"scorer": by[scorer][f], "best_baseline": best[1], "best_baseline_value": best[0],
                  "ratio": by[scorer][f] / best[0] if best[0] else None}
    return out


def relative(path) -> str:
    """A path as the project names it (results travel: no machine's absolute paths in them)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--conf", default=None, help="pipeline conf (default conf/local.yaml)")
    ap.add_argument("--start", default=None, help="first replayed day (default: --days days ending at the newest "
                    "day whose backtest horizon the data covers)")
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
    end = None
    if args.start:  # --days days from --start
        import datetime as dt

        end = (dt.date.fromisoformat(args.start) + dt.timedelta(days=args.every * (args.days - 1))).isoformat()
    summary = replay.run(spark, cfg, start=args.start, end=end, days=None if args.start else args.days,
                         every=args.every, skip_ingest=bool(args.reuse),
                         progress=lambda m: print(m, file=sys.stderr))
    wall = round(time.time() - t0, 1)
    spark.stop()
    rep = summary["replay"]
    over["tables"]["root"] = relative(over["tables"]["root"])
    (work / "per_user.json").write_text(json.dumps(rep["per_user"]))  # each truth user's figures, for re-analysis
    out = {"dataset": args.dataset, "conf": relative(cfg.source_path), "override": over,
           "reused_warehouse": args.reuse, "scorer": cfg.score.scorer,
           "days": rep["days"], "k": rep["k"], "horizon_days": rep["horizon_days"], "table": rep["table"],
           "mean": rep["mean"], "scorer_over_best_baseline": ratios(rep["mean"], cfg.score.scorer),
           "scorer_over_best_no_model_list": ratios(rep["mean"], cfg.score.scorer, NO_MODEL),
           "ci": rep["ci"], "runs": summary["runs"], "wall_s": wall}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    path = res / f"ranking-{args.dataset}{args.tag}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps({"mean": rep["mean"], "scorer_over_best_baseline": out["scorer_over_best_baseline"],
                      "ci_ratios": rep["ci"].get("ratios"), "wall_s": wall, "written": relative(path)},
                     indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
