"""make bench-quality: ALS alone vs text-only vs CoLLM on the same split and backbone.

The real pipeline stages (ingest/prepare/idmap/als) prepare pairs and factors, and the train stage's sampler
picks the training pairs, so the bench measures what `collm run` trains (conf: the `model` section; the flags
below override it). text-only = stage 1 (backbone + head on prompts without CF) on training-split pairs;
CoLLM = stage 2 on top (projector + no-CF vectors only) on validation-split pairs, early stopping on a held-out
part of the validation split. Ablations (--ablate, --projector-mult) change stage 2 and scoring only, except
no_history, which drops the history titles from every prompt of both stages. Stage 1 is cached under
benchmarks/.work/ keyed by everything it depends on, so a stage-2 ablation costs only stage 2.
Writes benchmarks/results/quality-<dataset>[-tag].json/.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collm_udf.core import checkpoint  # noqa: E402
from collm_udf.config import load_config  # noqa: E402
from collm_udf.core.model import build  # noqa: E402
from collm_udf.core.spec import stage2_only_fields  # noqa: E402
from collm_udf.core.prompt import PromptBuilder  # noqa: E402
from collm_udf.core.signals import STATISTICS  # noqa: E402
from collm_udf.core.signals import column  # noqa: E402
from collm_udf.core.training import train_cf, train_stage  # noqa: E402
from collm_udf.core.inference import predict  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from quality_core import als_scores, pair_sets, results_table  # noqa: E402

ABLATIONS = ("none", "no_history", "no_user", "no_item")
STAGE2_TENSORS = ("projector.", "skip.", "lm_scale")  # what stage 2 trains: never in the stage-1 cache
DS = "2026-01-01"  # split mode: the day does not matter


def prepare(cfg, work: Path):
    """Pipeline stages up to ALS, then the train stage's sample plus the whole test split, as pandas."""
    from collm_udf.spark.stages import als
    from collm_udf.spark import training_set
    from collm_udf.spark import pipeline
    from collm_udf.spark.asof import AsOf, segments
    from collm_udf.spark.signal_stats import add_stats, end_of
    from collm_udf.spark.session import get_spark
    from collm_udf.spark.tables import Tables

    spark = get_spark(cfg, "collm-bench-quality")
    pipeline.run(spark, cfg, stages=["ingest", "prepare", "idmap", "als"], ds=DS)
    t = Tables(spark, cfg.tables)
    asof = AsOf.of(cfg, DS)
    run = als.run_as_of(t, asof)
    frames = training_set.training_frames(cfg, t, asof)
    pairs = t.read("pairs")
    test = segments(asof.truth(pairs), asof.fit(pairs), cfg.prepare.warm_min_interactions)
    # Test pairs carry their statistics as of the test split's start (train + valid), like a served day; the
    # item like-rate among them is also the one-line prior the model must beat.
    known = asof.known(pairs)
    names = list(dict.fromkeys([*(n for n in cfg.model.signals if n in STATISTICS), "item_like_rate"]))
    test = add_stats(test, known, end_of(known, None), names, cfg.candidates.recent_days,
                     rare_below=cfg.candidates.min_item_interactions)
    frames["test"] = (test.orderBy("ts", "user_id", "item_id")
                      .select(*training_set.PAIR_COLUMNS, "warm", "cold_item", *[column(n) for n in names]).toPandas())
    frames["test"]["prior"] = frames["test"][column("item_like_rate")]
    text, U, V = training_set.lookups(spark, t, frames, run["als_run_id"])
    spark.stop()
    return frames, text, U, V, run


def bench_conf(args: argparse.Namespace, work: Path):
    """The conf this bench trains: the pipeline conf in the fixed-split mode, its model overridden by the flags."""
    model_conf = {"template": args.template, "max_tokens": args.max_tokens, "candidate_max_tokens": 16,
                  "tuning": "full", "projector_mult": args.projector_mult,
                  "train": {"text_pairs": args.text_pairs, "cf_pairs": args.cf_pairs, "holdout_pairs":
                            args.holdout_pairs, "cf_train_share": args.cf_train_share, "text_epochs": args.epochs,
                            "cf_epochs": args.cf_epochs, "text_lr": 5e-5, "cf_lr": 1e-3, "seed": args.seed,
                            "cf_negatives": 0, "text_negatives": 0}}  # a fixed split has no candidate pool
    if args.skip_hidden is not None:
        model_conf["skip_hidden"] = args.skip_hidden
    if args.skip_segments:
        model_conf["skip_segments"] = True
    if args.lm_scale:
        model_conf["lm_scale"] = True
    if args.signals is not None:
        model_conf["signals"] = [n for n in args.signals.split(",") if n]
    return load_config(args.conf or str(ROOT / "conf" / "local.yaml"),
                        {"tables": {"root": str(work / "warehouse")}, "model": model_conf,
                        "asof": {"mode": "split"}})  # the paper's protocol: one fixed split


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=os.environ.get("DATASET", "ml-100k"))
    ap.add_argument("--conf", default=None, help="pipeline conf (default conf/local.yaml for ml-100k)")
    ap.add_argument("--text-pairs", type=int, default=5000, help="training-split pairs for stage 1")
    ap.add_argument("--cf-pairs", type=int, default=8000, help="validation-split pairs for stage 2")
    ap.add_argument("--holdout-pairs", type=int, default=1000, help="validation-split pairs for early stopping")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of stage 1")
    ap.add_argument("--cf-epochs", type=int, default=2, help="epochs of stage 2")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--template", default="compact", help="collm, compact or a template string")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cf-train-share", type=float, default=0.0,
                    help="share of stage-2 pairs drawn from the training split (ALS saw their labels)")
    ap.add_argument("--ablate", default="none", choices=ABLATIONS,
                    help="no_history: prompts without history; no_user / no_item: that CF slot always no-CF")
    ap.add_argument("--projector-mult", type=int, default=10, help="projector width = mult x ALS rank")
    ap.add_argument("--signals", default=None, help="comma-separated signals of the skip (collm_udf/core/signals.py; "
                    "'' for none; default: the conf's model.signals)")
    ap.add_argument("--skip-segments", action="store_true", help="warm and cold pairs get their own skip weights")
    ap.add_argument("--lm-scale", action="store_true", help="stage 2 learns the LM logit's weight (model.lm_scale)")
    ap.add_argument("--skip-hidden", type=int, default=None, help="hidden width of the skip (default: the conf's)")
    ap.add_argument("--test-pairs", type=int, default=0, help="score only this many test pairs (0 = all; smoke)")
    ap.add_argument("--tag", default="", help="suffix of the result files (ablations)")
    ap.add_argument("--resume", action="store_true", help="resume training state of an interrupted run")
    return ap.parse_args(argv)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    name = args.dataset + (f"-{args.tag}" if args.tag else "")
    work = ROOT / "benchmarks" / ".work" / name
    times, t0 = {}, time.time()

    cfg = bench_conf(args, work)
    frames, text, U, V, run = prepare(cfg, work)
    times["spark_prepare_s"] = round(time.time() - t0, 1)
    d = len(next(iter(U.values())))
    test_df = frames["test"]
    if args.test_pairs:
        test_df = test_df.sample(n=args.test_pairs, random_state=args.seed).reset_index(drop=True)
    if not args.resume:
        shutil.rmtree(work / "state", ignore_errors=True)
    use_hist = args.ablate != "no_history"
    sets = pair_sets({"text": frames["text"], "cf": frames["cf"], "hold": frames["hold"], "test": test_df}, text,
                     U, V, d, use_history=use_hist, signals=cfg.model.signals)

    spec = cfg.model.spec(d, run["als_run_id"])
    torch.manual_seed(args.seed)
    model, tok = build(spec)
    pb = PromptBuilder(tok, spec.template, spec.max_tokens, spec.candidate_max_tokens)
    t = time.time()
    for ps in sets.values():
        ps.encode(pb)
    times["tokenize_s"] = round(time.time() - t, 1)

    # Stage 1 and the text-only test scores depend on neither the projector nor the CF-slot ablations: cache.
    model_key = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in stage2_only_fields()}
    model_key["train"] = {k: v for k, v in model_key["train"].items() if not k.startswith(("cf_", "skip_"))}
    stage1 = {"als_run_id": run["als_run_id"], "model": model_key,
              "history": use_hist, "test_pairs": args.test_pairs,
              "sample": hashlib.sha1(pd.concat([frames["text"], frames["hold"]])[["user_id", "item_id"]]
                                     .to_csv(index=False).encode()).hexdigest()}
    key = hashlib.sha1(json.dumps(stage1, sort_keys=True).encode()).hexdigest()[:12]
    cache = ROOT / "benchmarks" / ".work" / f"stage1-{args.dataset}-{key}"
    if (cache / "done.json").is_file():
        state = {n: t for n, t in load_file(str(cache / "text.safetensors")).items()
                 if not n.startswith(STAGE2_TENSORS)}  # stage 2's, whatever an older cache holds
        missing = model.load_state_dict(state, strict=False).missing_keys
        assert all(m.startswith(STAGE2_TENSORS) or m in state for m in missing) and "no_cf" in state
        h1 = json.loads((cache / "done.json").read_text())
        test_df["text_only"] = np.load(cache / "text_only.npy")
        times["stage1_cached"] = str(cache.relative_to(ROOT))
    else:
        t = time.time()
        h1 = train_stage(model, "text", sets["text"], sets["hold"], cfg.model.stages()["text"],
                         tok.pad_token_id, state_dir=str(work / "state"))
        times["train_text_s"] = round(time.time() - t, 1)
        t = time.time()
        test_df["text_only"] = predict(model, sets["test"], tok.pad_token_id, use_cf=False)
        times["score_text_s"] = round(time.time() - t, 1)
        cache.mkdir(parents=True, exist_ok=True)
        save_file({n: p.detach().contiguous() for n, p in model.state_dict().items()
                   if not n.startswith(STAGE2_TENSORS)}, str(cache / "text.safetensors"))
        np.save(cache / "text_only.npy", test_df["text_only"].to_numpy())
        (cache / "done.json").write_text(json.dumps(h1))
    for k in ("cf", "hold", "test"):
        if args.ablate == "no_user":
            sets[k].user_has[:] = False
        if args.ablate == "no_item":
            sets[k].item_has[:] = False
    t = time.time()
    h2 = train_cf(model, sets["cf"], sets["hold"], cfg.model.stages()["cf"], tok.pad_token_id,
                  skip_init=cfg.model.train.skip_init, state_dir=str(work / "state"))
    times["train_cf_s"] = round(time.time() - t, 1)
    t = time.time()
    test_df["collm"] = predict(model, sets["test"], tok.pad_token_id, use_cf=True)
    times["score_collm_s"] = round(time.time() - t, 1)
    checkpoint.save(model, work / "checkpoint")

    test_df["als"] = als_scores(test_df, U, V, float(run["target_mean"]))
    results, lines = results_table(test_df, f"Quality on {name} (test split, {len(test_df)} pairs)")
    times["total_s"] = round(time.time() - t0, 1)
    a = {m: {s: results[m][s]["auc"] for s in results[m]} for m in results}
    target = {"all": a["collm"]["all"] >= max(a["prior"]["all"], a["als"]["all"], a["text_only"]["all"]) + 0.01,
              "warm": a["collm"]["warm"] >= a["als"]["warm"],
              "cold": a["collm"]["cold"] >= a["text_only"]["cold"]}
    out = {"dataset": args.dataset, "als_run_id": run["als_run_id"], "args": vars(args), "results": results,
           "target_met": target, "times": times, "train_history": {"text": h1["history"], "cf": h2["history"]},
           "pairs": {k: len(v) for k, v in sets.items()}, "threads": torch.get_num_threads(),
           "warm_share": {"test": float(np.mean(frames["test"]["warm"]))}}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"quality-{name}.json").write_text(json.dumps(out, indent=2))
    lines += ["", f"Target met: {target}", f"Times (s): {times}"]
    (res / f"quality-{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
