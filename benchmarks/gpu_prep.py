"""make gpu-prep: what the GPU machine needs and lacks (no collm wheel, no Spark, no internet), in one folder to
carry there (benchmarks/.work/gpu, git-ignored; the run tool carries at most 64 MiB with the working tree):

  tok/                 MiniLM's tokenizer files (gpu_core.py, gpu_train.py, pytest -m gpu build tiny backbones on it)
  minilm-fp16/         the embedded all-MiniLM-L6-v2 with its weights stored in fp16 (87 MiB in fp32 is more than
                       can be carried; 44 MiB in fp16). from_pretrained(dtype=float32) upcasts them on load; the
                       largest weight error this leaves is printed and recorded (fp16 keeps 11 bits of mantissa)
  ml-100k-full.npz     every pair of ML-100K's fixed split (asof.mode split, as bench-quality): the whole
                       training split for stage 1, the whole validation split for stage 2 and its early-stopping
                       holdout, the whole test split, their titles, ALS factors and signal statistics, prepared
                       by the real pipeline stages with Spark (benchmarks/quality.py's prepare), no sampling

  python benchmarks/gpu_prep.py [--out benchmarks/.work/gpu] [--skip-data]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from collm_udf.core.spec import default_backbone_dir  # noqa: E402
from gpu_core import TOKENIZER_FILES  # noqa: E402

LIMIT_MIB = 64  # the run tool's limit on the working tree plus carried paths


def copy_tokenizer(dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_FILES:
        shutil.copy(Path(default_backbone_dir(), f), dst / f)


def minilm_fp16(dst: Path) -> dict:
    """MiniLM's weights in fp16 beside its config and tokenizer; returns the rounding it costs."""
    src = Path(default_backbone_dir())
    dst.mkdir(parents=True, exist_ok=True)
    w = load_file(str(src / "model.safetensors"))
    big = max(float(t.abs().max()) for t in w.values() if t.is_floating_point())
    if big >= 65504:
        raise ValueError(f"a MiniLM weight ({big}) does not fit fp16")
    half = {k: t.half() if t.is_floating_point() else t for k, t in w.items()}
    save_file(half, str(dst / "model.safetensors"), metadata={"format": "pt"})
    err = max(float(((half[k].float() - t).abs() / t.abs().max().clamp(min=1e-12)).max())
              for k, t in w.items() if t.is_floating_point())
    for f in ("config.json", *TOKENIZER_FILES):
        shutil.copy(src / f, dst / f)
    return {"max_abs_weight": big, "max_rel_rounding": err}


def full_data(path: Path, work: Path, holdout: int, seed: int) -> dict:
    """Every pair of the fixed split through the pipeline's own stages -> an .npz (quality_core.save_npz)."""

    from quality import bench_conf, parse_args, prepare
    from quality_core import SPLITS, save_npz

    everything = str(10 ** 9)  # training_frames takes min(n, what the split has)
    cfg = bench_conf(parse_args(["--text-pairs", everything, "--cf-pairs", everything, "--holdout-pairs",
                                 str(holdout), "--seed", str(seed)]), work)  # bench-quality's conf, all pairs
    frames, text, U, V, run = prepare(cfg, work)
    d = len(next(iter(U.values())))
    spec = cfg.model.spec(d, run["als_run_id"]).to_dict()
    meta = {"splits": list(SPLITS), "factor_dim": d, "als_run_id": run["als_run_id"],
            "target_mean": float(run["target_mean"]), "signals": list(cfg.model.signals), "spec": spec,
            "train": {s: cfg.model.stages()[s].__dict__ for s in ("text", "cf")},
            "skip_init": cfg.model.train.skip_init,
            "pairs": {k: len(frames[k]) for k in SPLITS}, "warm_share_test": float(np.mean(frames["test"]["warm"]))}
    save_npz(path, {k: frames[k] for k in SPLITS}, text, U, V, meta)
    return meta


def tree_mib(paths) -> float:
    return sum(f.stat().st_size for p in paths for f in Path(p).rglob("*") if f.is_file()) / 2 ** 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / ".work" / "gpu"))
    ap.add_argument("--skip-data", action="store_true", help="tokenizer and weights only (no Spark)")
    ap.add_argument("--holdout-pairs", type=int, default=1000, help="validation pairs kept for early stopping")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.time()
    copy_tokenizer(out / "tok")
    report = {"minilm_fp16": minilm_fp16(out / "minilm-fp16")}
    if not args.skip_data:
        data = out / "ml-100k-full.npz"
        meta = full_data(data, ROOT / "benchmarks" / ".work" / "gpu-prep", args.holdout_pairs, args.seed)
        report["data"] = {"pairs": meta["pairs"], "als_run_id": meta["als_run_id"]}
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True).stdout.split(b"\0")
    repo = sum((ROOT / f.decode()).stat().st_size for f in tracked if f and (ROOT / f.decode()).is_file()) / 2 ** 20
    report["carried_mib"] = round(tree_mib([out]), 1)
    report["with_working_tree_mib"] = round(report["carried_mib"] + repo, 1)
    report["seconds"] = round(time.time() - t0, 1)
    (out / "prep.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if report["with_working_tree_mib"] > LIMIT_MIB * 0.95:
        print(f"{out}: {report['with_working_tree_mib']} MiB with the working tree, too close to the run tool's "
              f"{LIMIT_MIB} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
