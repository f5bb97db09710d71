"""make bench-alignment: which ALS factors a daily CoLLM model should score with between its trainings.

A daily model's projector learned the factor space of the ALS fit that ends where its label window starts
(collm_udf/spark/asof.py); the day's own fit spans another basis. Three ways to feed the model on day --ds, each
scored by the project's Spark scorer and measured by the evaluate stage's pair metrics on the day's truth pairs
([cutoff, cutoff + --horizon days), histories as of the cutoff):
  stale       the label fit's own factors (users and items that arrived since have none)
  procrustes  the day's fit rotated into the label fit's space: what the score stage does; its relative residual
              is what score.max_alignment_residual bounds
  foldin      users (then items new since) solved against the label fit's item factors by ridge regression on
              every interaction before the cutoff (ALS-WR's own half-step with the same regParam): fresh factors
              in the label space itself, so no rotation is needed
For scale: the residual between two fits of the same data with different seeds. Also the ALS dot-product AUC of
each factor set. Writes benchmarks/results/alignment-<dataset>.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collm_udf.core.align import align  # noqa: E402
from collm_udf.config import load_config  # noqa: E402


def ridge(rows: pd.DataFrame, key: str, other: str, F: dict, reg: float) -> dict:
    """key -> argmin_x sum (r - x . F[other])^2 + reg * n * |x|^2 over the rows whose `other` has factors."""
    out = {}
    rows = rows[rows[other].isin(F.keys())]
    for k, g in rows.groupby(key):
        A = np.stack([F[o] for o in g[other]]).astype(np.float64)
        out[k] = np.linalg.solve(A.T @ A + reg * len(g) * np.eye(A.shape[1]), A.T @ g["target"].to_numpy(float)) \
            .astype(np.float32)
    return out


def factors(tables, run_id: str, entity: str) -> dict:
    from pyspark.sql import functions as F

    rows = tables.read(f"{entity}_factors").where(F.col("als_run_id") == run_id).select(f"{entity}_id", "features")
    return {r[0]: np.asarray(r[1], np.float32) for r in rows.collect()}


def write_factors(spark, tables, run_id: str, entity: str, f: dict) -> None:
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(run_id, k, -1, v.tolist()) for k, v in f.items()],
                               f"als_run_id string, {entity}_id string, {entity}_idx int, features array<float>")
    tables.replace_partition(df.withColumn("trained_at", F.current_timestamp()), f"{entity}_factors", "als_run_id",
                             run_id)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--conf", default=None, help="pipeline conf (default conf/local.yaml)")
    ap.add_argument("--ds", default="1998-03-25")
    ap.add_argument("--horizon", type=int, default=14, help="days of truth after the cutoff")
    args = ap.parse_args()
    from collm_udf.spark.stages import als, evaluate
    from collm_udf.spark import model_registry
    from collm_udf.spark import pipeline
    from collm_udf.spark.asof import AsOf
    from collm_udf.spark.scorers.collm import CoLLMScorer
    from collm_udf.spark.session import get_spark
    from collm_udf.spark.tables import Tables

    work = ROOT / "benchmarks" / ".work" / f"{args.dataset}-alignment"
    shutil.rmtree(work, ignore_errors=True)
    cfg = load_config(args.conf or str(ROOT / "conf" / "local.yaml"),
                      {"tables": {"root": str(work / "warehouse")}, "evaluate": {"horizon_days": args.horizon}})
    if cfg.als.implicit:
        raise SystemExit("bench-alignment: the fold-in here is explicit ALS-WR's; the conf has implicit ALS")
    spark = get_spark(cfg, "collm-bench-alignment")
    t0 = time.time()
    pipeline.run(spark, cfg, stages=["ingest", "prepare", "idmap", "als", "train"], ds=args.ds)
    tables = Tables(spark, cfg.tables)
    asof = AsOf.of(cfg, args.ds)
    model = model_registry.model_as_of(tables, asof)
    label, fresh = als.find_run(tables, model["als_run_id"]), als.run_as_of(tables, asof)
    V_label, V_fresh = factors(tables, label["als_run_id"], "item"), factors(tables, fresh["als_run_id"], "item")
    out: dict = {"dataset": args.dataset, "ds": args.ds, "asof": asof.describe(), "horizon_days": args.horizon,
                 "label_fit": label["als_run_id"], "fresh_fit": fresh["als_run_id"], "model": model["model_version"]}
    out["procrustes_residual"] = align(V_label, V_fresh, "label", "fresh", 1e9).residual
    reseeded = dataclasses.replace(cfg, als=dataclasses.replace(cfg.als, seed=cfg.als.seed + 1))
    other = als.fit_run(spark, reseeded, tables, args.ds, asof.fit(tables.read("pairs")), mode="daily",
                         cutoff=asof.cutoff)
    out["procrustes_residual_same_data_other_seed"] = align(factors(tables, other["als_run_id"], "item"), V_fresh,
                                                            "a", "b", 1e9).residual

    # fold-in: users against the label fit's items, then the items the label fit lacks against those users
    target = "rating" if cfg.als.target == "rating" else "label"
    known = asof.known(tables.read("pairs")).select("user_id", "item_id", target).toPandas() \
        .rename(columns={target: "target"})
    U_fold = ridge(known, "user_id", "item_id", V_label, cfg.als.reg)
    V_fold = {**ridge(known[~known.item_id.isin(V_label.keys())], "item_id", "user_id", U_fold, cfg.als.reg),
              **V_label}
    fold_id = f"{label['als_run_id']}_foldin"
    write_factors(spark, tables, fold_id, "user", U_fold)
    write_factors(spark, tables, fold_id, "item", V_fold)
    U_label = factors(tables, label["als_run_id"], "user")
    U_again = ridge(asof.label_fit(tables.read("pairs")).select("user_id", "item_id", target).toPandas()
                    .rename(columns={target: "target"}), "user_id", "item_id", V_label, cfg.als.reg)
    shared = sorted(set(U_again) & set(U_label))
    out["foldin_reproduces_label_users_residual"] = float(
        np.linalg.norm(np.stack([U_again[u] - U_label[u] for u in shared]))
        / np.linalg.norm(np.stack([U_label[u] for u in shared])))

    truth = evaluate.truth_pairs(cfg, tables, asof).cache()
    tp = truth.select("user_id", "item_id", "label", "warm").toPandas()
    out["truth_pairs"], out["warm_pairs"] = len(tp), int(tp.warm.sum())
    variants = {"stale": (label, U_label, V_label), "procrustes": (fresh, factors(tables, fresh["als_run_id"], "user"),
                                                                    V_fresh),
                "foldin": ({"als_run_id": fold_id}, U_fold, V_fold)}
    for name, (run, U, V) in variants.items():
        scorer = CoLLMScorer(spark, cfg, tables, asof, run=run)
        summary, _ = evaluate.pair_metrics(truth, scorer)
        dot = np.array([float(U[u] @ V[i]) if u in U and i in V else np.nan for u, i in zip(tp.user_id, tp.item_id)])
        dot = np.where(np.isnan(dot), np.nanmean(dot), dot)
        out[name] = {"collm_auc": summary["auc"], "collm_uauc": summary["uauc"],
                     "alignment_residual": scorer.alignment.residual,
                     "als_dot_auc": {"all": roc_auc_score(tp.label, dot),
                                     "warm": roc_auc_score(tp.label[tp.warm], dot[tp.warm.to_numpy()])},
                     "users_with_factors": float(np.mean([u in U for u in tp.user_id])),
                     "items_with_factors": float(np.mean([i in V for i in tp.item_id]))}
        print(name, json.dumps(out[name], default=float), flush=True)
    truth.unpersist()
    spark.stop()
    out["wall_s"] = round(time.time() - t0, 1)
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    path = res / f"alignment-{args.dataset}.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    f = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
    print(f"\n{'variant':12s} CoLLM AUC all / warm   UAUC all   ALS-dot AUC all / warm   residual")
    for name in variants:
        r = out[name]
        print(f"{name:12s} {f(r['collm_auc']['all'])} / {f(r['collm_auc']['warm'])}   {f(r['collm_uauc']['all'])}"
              f"     {f(r['als_dot_auc']['all'])} / {f(r['als_dot_auc']['warm'])}      {f(r['alignment_residual'])}")
    print(f"residual of a refit with another seed: {out['procrustes_residual_same_data_other_seed']:.3f}; "
          f"label fit vs the day's fit: {out['procrustes_residual']:.3f}; written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
