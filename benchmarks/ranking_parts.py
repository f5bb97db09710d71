"""make bench-ranking-parts: which part of the CoLLM logit ranks the table, on the replay of `make bench-ranking`.

A CoLLM model's logit is a sum: the LM's part (the prompt with its CF tokens through the backbone and head, times
the learned scale with model.lm_scale) plus the skip over the pair's signals. This rescores every candidate of
each replayed day with the day's model twice, as it is and with its skip zeroed (the LM's part alone); the skip's
part is the difference. Each part then ranks the day's candidates on its own and is judged as the table is (the
backtest's truth, users and metrics, collm_udf/spark/backtest.py), beside recent popularity.

Reads the replay's result file (benchmarks/results/ranking-<dataset><tag>.json: its conf, override and days) and
its warehouse; writes benchmarks/results/ranking-parts-<dataset><tag>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collm_udf.config import load_config  # noqa: E402

PARTS = ("total", "lm_part", "skip_part")


def lm_only(model: dict, work: Path) -> dict:
    """The model's row with its path at a copy of the checkpoint whose skip is zero: it scores the LM's part."""
    import torch

    from collm_udf.core import checkpoint

    dst = work / f"{Path(model['path']).name}-lm-part"
    if not dst.exists():
        m, _ = checkpoint.load(model["path"])
        with torch.no_grad():
            for p in m.skip.parameters():
                p.zero_()
        checkpoint.save(m, dst)
    return {**model, "path": str(dst)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--tag", default="", help="the replay's tag (its result file ranking-<dataset><tag>.json)")
    args = ap.parse_args()
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from collm_udf.spark import backtest
    from collm_udf.spark.asof import AsOf
    from collm_udf.spark.scorers.collm import CoLLMScorer
    from collm_udf.spark.session import get_spark
    from collm_udf.spark.tables import Tables
    from collm_udf.spark.model_registry import model_as_of, model_conf_json

    replay = json.loads((ROOT / "benchmarks" / "results" / f"ranking-{args.dataset}{args.tag}.json").read_text())
    cfg = load_config(replay["conf"], replay["override"])
    if cfg.score.scorer != "collm":
        raise SystemExit(f"the replay's scorer is {cfg.score.scorer}: nothing to take apart")
    spark = get_spark(cfg, "collm-bench-ranking-parts")
    tables = Tables(spark, cfg.tables)
    work = Path(cfg.tables.root).parent / "parts"
    work.mkdir(exist_ok=True)
    k, t0, days = replay["k"], time.time(), {}
    for ds in replay["days"]:
        asof = AsOf.of(cfg, ds)
        model = model_as_of(tables, asof, conf=model_conf_json(cfg))
        cands = tables.read("candidates").where(F.col("ds") == F.lit(ds).cast("date")).select("user_id", "item_id")
        scored = None
        for name, m in (("total", model), ("lm_part", lm_only(model, work))):
            s = CoLLMScorer(spark, cfg, tables, asof, model=m).score_pairs(cands) \
                .select("user_id", "item_id", F.col("score").alias(name))
            scored = s if scored is None else scored.join(s, ["user_id", "item_id"])
        scored = scored.withColumn("skip_part", F.col("total") - F.col("lm_part")).cache()
        lists = {}
        for name in PARTS:
            order = F.row_number().over(Window.partitionBy("user_id").orderBy(F.col(name).desc(), "item_id"))
            lists[name] = scored.withColumn("rank", order).where(F.col("rank") <= k).select("user_id", "item_id",
                                                                                              "rank")
        bt = backtest.prepare(cfg, tables, asof)
        lists["recent_popularity"] = backtest.baseline_lists(cfg, bt, asof, k)["recent_popularity"]
        got = backtest.evaluate_lists(bt, lists, k)
        bt.close()
        scored.unpersist()
        days[ds] = {n: {"ndcg": r[f"ndcg@{k}"], "recall": r[f"recall@{k}"], "overlap": r[f"overlap@{k}"],
                        "top_item_share": r["top_item_share"]} for n, r in got.items()}
        print(ds, json.dumps(days[ds]), file=sys.stderr)
    spark.stop()
    names = list(next(iter(days.values())))
    mean = {n: {f: sum(days[d][n][f] for d in days) / len(days) for f in ("ndcg", "recall", "overlap",
                                                                              "top_item_share")} for n in names}
    base = mean["recent_popularity"]
    ratios = {n: {f: mean[n][f] / base[f] for f in ("ndcg", "recall")} for n in PARTS}
    out = {"dataset": args.dataset, "replay": f"ranking-{args.dataset}{args.tag}.json", "k": k, "days": days,
           "mean": mean, "over_recent_popularity": ratios, "wall_s": round(time.time() - t0, 1)}
    path = ROOT / "benchmarks" / "results" / f"ranking-parts-{args.dataset}{args.tag}.json"
    path.write_text(json.dumps(out, indent=2))
    for n in names:
        print(f"{n:18s} NDCG@{k} {mean[n]['ndcg']:.4f}  Recall@{k} {mean[n]['recall']:.4f}  overlap "
              f"{mean[n]['overlap']:.3f}" + (f"  ({ratios[n]['ndcg']:.2f}x / {ratios[n]['recall']:.2f}x recent "
                                              "popularity)" if n in ratios else ""))
    print(f"written {path} in {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
