"""make bench-quality: ALS alone vs text-only vs CoLLM on the same split and backbone.

Spark (real pipeline stages ingest/prepare/idmap/als) prepares pairs and factors; the torch core trains:
  text-only = stage 1 (backbone + head on prompts without CF), trained on sampled training-split pairs;
  CoLLM     = stage 2 on top (projector + no-CF vectors only), trained on validation-split pairs: ALS never saw
              their labels, so the projector cannot learn to trust factors fitted on its own targets.
Early stopping uses a held-out fifth of the validation split. Writes benchmarks/results/quality-<dataset>.json/.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collm_udf import checkpoint  # noqa: E402
from collm_udf.config import load_config  # noqa: E402
from collm_udf.metrics import auc_uauc  # noqa: E402
from collm_udf.model import ModelSpec, build  # noqa: E402
from collm_udf.prompt import TEMPLATES, PromptBuilder  # noqa: E402
from collm_udf.train import PairSet, TrainConfig, predict, train_stage  # noqa: E402


def prepare(conf: str, work: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict, dict]:
    from pyspark.sql import functions as F

    from collm_udf.spark import als, pipeline
    from collm_udf.spark.session import get_spark
    from collm_udf.spark.tables import Tables

    cfg = load_config(conf, {"tables": {"root": str(work / "warehouse")}})
    spark = get_spark(cfg, "collm-bench-quality")
    pipeline.run(spark, cfg, stages=["ingest", "prepare", "idmap", "als"], ds="2026-01-01")
    t = Tables(spark, cfg.tables)
    run = als.latest_run(t)
    pairs = t.read("pairs").select("user_id", "item_id", "label", "split", "warm", "cold_item", "history").toPandas()
    items = t.read("items").toPandas()
    U = {r["user_id"]: np.asarray(r["features"], np.float32) for r in
         t.read("user_factors").where(F.col("als_run_id") == run["als_run_id"]).collect()}
    V = {r["item_id"]: np.asarray(r["features"], np.float32) for r in
         t.read("item_factors").where(F.col("als_run_id") == run["als_run_id"]).collect()}
    spark.stop()
    return pairs, items, U, V, run


def pairset(df: pd.DataFrame, text: dict, U: dict, V: dict, d: int) -> PairSet:
    z = np.zeros(d, np.float32)
    return PairSet(
        history=[[text.get(i, "") for i in h] for h in df["history"]],
        candidate=[text.get(i, "") for i in df["item_id"]],
        user_f=np.stack([U.get(u, z) for u in df["user_id"]]), item_f=np.stack([V.get(i, z) for i in df["item_id"]]),
        user_has=np.array([u in U for u in df["user_id"]]), item_has=np.array([i in V for i in df["item_id"]]),
        label=df["label"].to_numpy(np.int64))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=os.environ.get("DATASET", "ml-100k"))
    ap.add_argument("--conf", default=None, help="pipeline conf (default conf/local.yaml for ml-100k)")
    ap.add_argument("--text-pairs", type=int, default=5000, help="training-split pairs for stage 1")
    ap.add_argument("--cf-pairs", type=int, default=8000, help="validation-split pairs for stage 2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--template", default="compact", choices=sorted(TEMPLATES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cf-train-share", type=float, default=0.0,
                    help="share of stage-2 pairs drawn from the training split (ALS saw their labels)")
    ap.add_argument("--test-pairs", type=int, default=0, help="score only this many test pairs (0 = all; smoke)")
    ap.add_argument("--tag", default="", help="suffix of the result files (ablations)")
    ap.add_argument("--resume", action="store_true", help="resume training state of an interrupted run")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    name = args.dataset + (f"-{args.tag}" if args.tag else "")
    work = ROOT / "benchmarks" / ".work" / name
    times, t0 = {}, time.time()

    pairs, items, U, V, run = prepare(args.conf or str(ROOT / "conf" / "local.yaml"), work)
    times["spark_prepare_s"] = round(time.time() - t0, 1)
    d = len(next(iter(U.values())))
    text = dict(zip(items["item_id"], items["text"]))
    rng = np.random.default_rng(args.seed)
    train_df = pairs[pairs.split == "train"]
    valid_df = pairs[pairs.split == "valid"].sample(frac=1.0, random_state=args.seed)
    test_df = pairs[pairs.split == "test"].reset_index(drop=True)
    if args.test_pairs:
        test_df = test_df.sample(n=args.test_pairs, random_state=args.seed).reset_index(drop=True)
    if not args.resume:
        shutil.rmtree(work / "state", ignore_errors=True)
    n_hold = min(2000, len(valid_df) // 5)
    perm = rng.permutation(len(train_df))
    text_df = train_df.iloc[perm[: args.text_pairs]]
    n_cf_train = int(round(args.cf_pairs * args.cf_train_share))
    hold_df = valid_df.iloc[:n_hold]
    cf_df = pd.concat([valid_df.iloc[n_hold:n_hold + args.cf_pairs - n_cf_train],
                       train_df.iloc[perm[args.text_pairs:args.text_pairs + n_cf_train]]])

    spec = ModelSpec(backbone="minilm", kind="encoder", factor_dim=d, tuning="full",
                     template=TEMPLATES[args.template], max_tokens=args.max_tokens, candidate_max_tokens=24,
                     als_run_id=run["als_run_id"])
    torch.manual_seed(args.seed)
    model, tok = build(spec)
    pb = PromptBuilder(tok, spec.template, spec.max_tokens, spec.candidate_max_tokens)
    t = time.time()
    sets = {k: pairset(df, text, U, V, d).encode(pb) for k, df in
            (("text", text_df), ("cf", cf_df), ("hold", hold_df), ("test", test_df))}
    times["tokenize_s"] = round(time.time() - t, 1)
    tc = TrainConfig(lr=5e-5, epochs=args.epochs, patience=1, seed=args.seed)

    t = time.time()
    h1 = train_stage(model, "text", sets["text"], sets["hold"], tc, tok.pad_token_id, str(work / "state"))
    times["train_text_s"] = round(time.time() - t, 1)
    t = time.time()
    test_df["text_only"] = predict(model, sets["test"], tok.pad_token_id, use_cf=False)
    times["score_text_s"] = round(time.time() - t, 1)
    t = time.time()
    h2 = train_stage(model, "cf", sets["cf"], sets["hold"], TrainConfig(lr=1e-3, epochs=args.epochs,
                     patience=1, seed=args.seed), tok.pad_token_id, str(work / "state"))
    times["train_cf_s"] = round(time.time() - t, 1)
    t = time.time()
    test_df["collm"] = predict(model, sets["test"], tok.pad_token_id, use_cf=True)
    times["score_collm_s"] = round(time.time() - t, 1)
    checkpoint.save(model, work / "checkpoint")

    fallback = float(run["target_mean"])
    test_df["als"] = [float(U[u] @ V[i]) if (u in U and i in V) else fallback
                      for u, i in zip(test_df.user_id, test_df.item_id)]
    results = {m: auc_uauc(test_df, m) for m in ("als", "text_only", "collm")}
    times["total_s"] = round(time.time() - t0, 1)
    a = {m: {s: results[m][s]["auc"] for s in results[m]} for m in results}
    target = {"all": a["collm"]["all"] >= max(a["als"]["all"], a["text_only"]["all"]) + 0.01,
              "warm": a["collm"]["warm"] >= a["als"]["warm"],
              "cold": a["collm"]["cold"] >= a["text_only"]["cold"]}
    out = {"dataset": args.dataset, "als_run_id": run["als_run_id"], "args": vars(args), "results": results,
           "target_met": target, "times": times, "train_history": {"text": h1["history"], "cf": h2["history"]},
           "pairs": {k: len(v) for k, v in sets.items()}, "threads": torch.get_num_threads()}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"quality-{name}.json").write_text(json.dumps(out, indent=2))
    lines = [f"# Quality on {name} (test split, {len(test_df)} pairs)", "",
             "| model | AUC all | AUC warm | AUC cold | AUC cold_item | UAUC all | UAUC warm | UAUC cold |",
             "|---|---|---|---|---|---|---|---|"]
    f = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    for m in ("als", "text_only", "collm"):
        r = results[m]
        lines.append(f"| {m} | {f(r['all']['auc'])} | {f(r['warm']['auc'])} | {f(r['cold']['auc'])} | "
                     f"{f(r['cold_item']['auc'])} | {f(r['all']['uauc'])} | {f(r['warm']['uauc'])} | "
                     f"{f(r['cold']['uauc'])} |")
    lines += ["", f"Target met: {target}", f"Times (s): {times}"]
    (res / f"quality-{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
