"""make bench-cold-order: what orders a user's cold items, their text or their recent interactions? On a replay.

Issue 28 asks the language model to carry the cold items (fewer than candidates.min_item_interactions interactions
before the cutoff). Before any training, the question is whether the backbone's text holds the signal at all. For
each replayed day this ranks every served user's unseen cold items (the text source's pool,
collm_udf/spark/text_neighbours.py) three ways, with the source itself:
  text            the cosine of the item's text embedding to the user's history profile (text_recency 0)
  text+recency    the shipped order: the standardised cosine plus text_recency x log1p(recent interactions)
  recency         the item's interactions in the last recent_days (the cosine only breaks ties)
and judges each top-k on the cold items the day's truth users then liked, as the backtest judges the table
(collm_udf/spark/backtest.py, segment cold_item), at k = candidates.text_k (the depth the source offers: what
reaches the scorer) and at evaluate.k (the table's depth). Beside them, `oracle`: the day's candidates (the replay's
`candidates` table, every source) with the user's liked cold items first, the most any ranker of those candidates
can find. Each day's windows and thresholds are tempo's, as in the replay.

Reads the replay's result file (benchmarks/results/ranking-<dataset><tag>.json: its conf, override and days) and
its warehouse; writes benchmarks/results/cold-order-<dataset><tag>.json: per day and pooled over the days' user-days,
Recall@k and NDCG@k of each order, and the ratios to recency with paired-bootstrap 95% CIs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collm_udf.config import load_config  # noqa: E402
from collm_udf.core.metrics import paired_bootstrap  # noqa: E402

RECENCY_ONLY = 1e4  # a recency weight beside which a standardised cosine (|z| < ~5) only breaks ties


def orders(shipped: float) -> dict[str, float]:
    """{order: candidates.text_recency that gives it}."""
    return {"text": 0.0, "text+recency": shipped, "recency": RECENCY_ONLY}


def day_lists(cfg, tables, ds: str, depths: tuple, per_user: dict) -> tuple[dict, dict]:
    """({k: evaluate_lists' figures per order}, the tempo values) of one day; per_user[k] gets each order's
    frame."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from collm_udf.spark import backtest, tempo
    from collm_udf.spark.asof import AsOf, served_users
    from collm_udf.spark.stages.candidates import rare_items
    from collm_udf.spark.text_neighbours import text_candidates

    day, info = tempo.derive(cfg, tables, ds)
    asof = AsOf.of(day, ds)
    known = asof.known(tables.read("pairs")).cache()
    users = served_users(day, asof, known).cache()
    rare = rare_items(day, tables, known, asof).cache()
    lists = {}
    for name, w in orders(cfg.candidates.text_recency).items():
        c = dataclasses.replace(day, candidates=dataclasses.replace(day.candidates, text_recency=w))
        lists[name] = (text_candidates(c, tables.read("items"), known, users, rare, max(depths))
                       .select("user_id", "item_id", F.col("text_rank").alias("rank")).cache())
    bt = backtest.prepare(day, tables, asof)
    seg = backtest.Segments.of(bt, day.candidates.min_item_interactions)
    liked = (seg.truth(bt).where(F.col("segment") == "cold_item")
             .select("user_id", F.explode("truth").alias("item_id"), F.lit(0).alias("_miss")))
    offered = tables.read("candidates").where(F.col("ds") == F.lit(ds).cast("date")).select("user_id", "item_id")
    first = Window.partitionBy("user_id").orderBy(F.coalesce("_miss", F.lit(1)), "item_id")
    lists["oracle"] = (offered.join(liked, ["user_id", "item_id"], "left")
                       .select("user_id", "item_id", F.row_number().over(first).alias("rank")))
    got = {}
    for k in depths:
        per_user[k] = {}
        got[k] = backtest.evaluate_lists(bt, lists, k, per_user=per_user[k], segments=seg)
    bt.close()
    for df in (known, users, rare, *lists.values()):
        df.unpersist()
    return got, info


def ratio_of_means(a, b, axis=-1):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def pooled(frames: list[pd.DataFrame], names: list[str]) -> dict:
    """Over every day's cold-item truth users (user-days): each order's mean Recall/NDCG and its ratio to recency's,
    with paired-bootstrap 95% CIs ([estimate, low, high]; a ratio over a zero mean is None)."""
    df = pd.concat(frames, ignore_index=True)
    df = df[df["segment"] == "cold_item"]
    wide = {f: df.pivot_table(index=["ds", "user_id"], columns="ranker", values=f) for f in ("recall", "ndcg")}
    out = {"user_days": int(len(wide["recall"]))}
    for f, w in wide.items():
        for n in names:
            out[f"{n} {f}"] = paired_bootstrap(lambda a, axis=-1: np.mean(a, axis=axis), (w[n].to_numpy(),))
        for n in names:
            if n not in ("recency", "oracle"):
                est = paired_bootstrap(ratio_of_means, (w[n].to_numpy(), w["recency"].to_numpy()))
                out[f"{n} / recency {f}"] = est if np.isfinite(est[0]) else (None, None, None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--tag", default="", help="the replay's tag (its result file ranking-<dataset><tag>.json)")
    ap.add_argument("--days", type=int, default=None, help="only the replay's first N days")
    args = ap.parse_args()
    from collm_udf.spark.session import get_spark
    from collm_udf.spark.tables import Tables

    replay = json.loads((ROOT / "benchmarks" / "results" / f"ranking-{args.dataset}{args.tag}.json").read_text())
    over = replay["override"]
    over["tables"]["root"] = str(ROOT / over["tables"]["root"])  # the replay's paths are the project's
    cfg = load_config(str(ROOT / replay["conf"]), over)
    k = cfg.candidates.text_k
    if not k:
        raise SystemExit("the replay's conf has no text source (candidates.text_k 0): nothing to order")
    spark = get_spark(cfg, "collm-bench-cold-order")
    tables = Tables(spark, cfg.tables)
    depths = tuple(sorted({cfg.evaluate.k, k}))
    t0, days, frames = time.time(), {}, {d: [] for d in depths}
    for ds in replay["days"][:args.days]:
        per_user = {}
        got, info = day_lists(cfg, tables, ds, depths, per_user)
        days[ds] = {"tempo": info}
        for d in depths:
            frames[d] += [f.assign(ranker=n, ds=ds) for n, f in per_user[d].items()]
            days[ds][f"@{d}"] = {n: {"cold_item": r["segments"]["cold_item"], "users_with_list": r["users_with_list"]}
                                 for n, r in got[d].items()}
        print(ds, json.dumps(days[ds]), file=sys.stderr)
    spark.stop()
    names = [*orders(0.0), "oracle"]
    out = {"dataset": args.dataset, "replay": f"ranking-{args.dataset}{args.tag}.json", "depths": depths,
           "text_recency": cfg.candidates.text_recency, "days": days,
           "pooled": {f"@{d}": pooled(frames[d], names) for d in depths}, "wall_s": round(time.time() - t0, 1)}
    path = ROOT / "benchmarks" / "results" / f"cold-order-{args.dataset}{args.tag}.json"
    path.write_text(json.dumps(out, indent=2))
    for d in depths:
        p = out["pooled"][f"@{d}"]
        print(f"{p['user_days']} user-days with cold truth; Recall@{d} / NDCG@{d} of their cold items, 95% CI:")
        for key, (est, lo, hi) in ((key, v) for key, v in p.items() if key != "user_days"):
            print(f"  {key:32s} " + ("-" if est is None else f"{est:.4f}")
                  + (f" [{lo:.4f}, {hi:.4f}]" if lo is not None else ""))
    print(f"written {path.relative_to(ROOT)} in {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
