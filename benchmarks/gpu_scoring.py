"""GPU scoring throughput of the CoLLM causal path: packed one-pass-per-user vs a plain HF forward per pair.

Needs no Spark and no weights: random-init Qwen2-shaped models (~0.5B and ~1.5B parameters, the shapes of
Qwen2-0.5B / Qwen2-1.5B), bf16, a 128-token history prefix, 32-token candidates, 50 candidates per user.

  naive  : Hugging Face forward over each full prompt (160 tokens), SDPA causal, logits of the last token only.
  packed : one sequence per user, prefix then its 50 candidate parts (128 + 50 x 32 = 1,728 tokens instead
           of 8,000), position ids restarting after the prefix. A dense 1,728^2 mask would block the fastest
           attention kernels and spend most of its work on masked pairs, so attention is split in two exact
           pieces (a registered HF attention function, packed_attention below):
             prefix    : causal SDPA over the prefix alone (flash);
             candidate : each candidate's 32 queries over [its user's prefix K/V ; its own K/V] with a
                         lower-right causal mask (flash); the prefix K/V are computed once and copied
                         next to each candidate's (cheap: 2 KV heads).
           Every linear layer therefore runs on the packed tokens only and no attention score is wasted.
           No padding: every user has the same layout here (a real day pads candidates to one length).
  packed+compile : the same, each decoder layer under torch.compile (one graph shared by all layers), which
           fuses the memory-bound RMSNorm / rotary / SiLU*up kernels that eager mode runs one by one.

FLOP limit = 2 x non-embedding parameters x tokens processed (packed tokens) per second, against a bf16
matmul this script times itself on the same GPU. Prints pairs/s and the fraction of that limit, checks packed
scores against naive ones, and writes benchmarks/results/gpu-scoring-<gpu>.json (or --out) after every figure,
so a run cut short still leaves what it measured.

  python benchmarks/gpu_scoring.py                 # on a GPU machine: torch + transformers only
  python benchmarks/gpu_scoring.py --smoke         # tiny model on CPU in fp32: packed == naive (tests run it)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import (RESULTS, card, flop_limit_pairs_per_s, matmul_tflops, non_embedding_params, timed,  # noqa: E402
                        writer)

SIZES = {  # Qwen2-0.5B / Qwen2-1.5B shapes (vocab 151,936, tied embeddings)
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128),
}
LAYOUT: dict = {"pnc": (0, 0, 0), "gqa": "native"}  # packed layout being scored; read by packed_attention


def candidate_attention(q, k, v, scale):
    """q (M, H, C, D); k, v (M, KVH, P + C, D) -> (M, H, C, D): query i sees keys 0 .. P + i (lower right)."""
    from torch.nn.attention.bias import causal_lower_right

    M, H, C, _ = q.shape
    if H != k.shape[1] and LAYOUT["gqa"] == "expand":  # torch without GQA on the lower-right path
        k, v = (x.repeat_interleave(H // x.shape[1], dim=1) for x in (k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(C, k.shape[2]), scale=scale,
                                          enable_gqa=H != k.shape[1])


def packed_attention(module, query, key, value, attention_mask, *, scaling=None, dropout=0.0, **kwargs):
    """query (B, H, L, D), key/value (B, KVH, L, D), L = P + N*C -> (B, L, H, D), exact for the packed layout."""
    P, N, C = LAYOUT["pnc"]
    B, H, L, D = query.shape
    KVH = key.shape[1]
    out_p = F.scaled_dot_product_attention(query[:, :, :P], key[:, :, :P], value[:, :, :P], is_causal=True,
                                           scale=scaling, enable_gqa=H != KVH)  # (B, H, P, D)

    def per_cand(x, heads):  # (B, h, N*C, D) -> (B*N, h, C, D)
        return x[:, :, P:].reshape(B, heads, N, C, D).transpose(1, 2).reshape(B * N, heads, C, D)

    def with_prefix(x):  # candidate K/V preceded by the user's prefix K/V: (B*N, KVH, P + C, D)
        pre = x[:, :, :P].unsqueeze(1).expand(B, N, KVH, P, D).reshape(B * N, KVH, P, D)
        return torch.cat([pre, per_cand(x, KVH)], dim=2)

    out_c = candidate_attention(per_cand(query, H), with_prefix(key), with_prefix(value), scaling)
    # (B*N, H, C, D) -> (B, N*C, H, D); the kernels' outputs are (.., L, H, D) in memory, so these are views
    out_c = out_c.transpose(1, 2).reshape(B, N * C, H, D)
    return torch.cat([out_p.transpose(1, 2), out_c], dim=1), None


def probe_attention(device, dtype) -> dict:
    """Which kernel the candidate attention gets here, and whether GQA works on the lower-right path."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(6, 4, 8, 64, generator=g).to(device, dtype)
    k, v = (torch.randn(6, 2, 24, 64, generator=g).to(device, dtype) for _ in range(2))
    keep = torch.ones(8, 24, dtype=torch.bool).tril(diagonal=16).to(device)  # lower right: P = 16
    ref = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(2, 1),
                                         v.float().repeat_interleave(2, 1), attn_mask=keep)
    found = {}
    for gqa in ("native", "expand"):
        LAYOUT["gqa"] = gqa
        try:
            out = candidate_attention(q, k, v, None)
        except Exception as e:  # noqa: BLE001 - a probe: record why and try the next way
            found[gqa] = f"error: {type(e).__name__}: {str(e)[:200]}"
            continue
        err = float((out.float() - ref).abs().max())
        found[gqa] = f"max abs err {err:.1e}"
        if err < (1e-4 if dtype == torch.float32 else 3e-2):
            found["gqa"] = gqa
            break
    else:
        raise RuntimeError(f"no exact candidate attention here: {found}")
    if device.type == "cuda":
        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
            try:
                with sdpa_kernel([backend]):
                    candidate_attention(q, k, v, None)
                found["kernel"] = name
                break
            except Exception:  # noqa: BLE001 - not available for these inputs; try the next
                continue
        else:
            found["kernel"] = "math (materialized mask)"
    return found


def build(size: str, device, dtype):
    from transformers import AttentionInterface, Qwen2Config, Qwen2ForCausalLM

    AttentionInterface.register("collm_packed", packed_attention)
    cfg = Qwen2Config(vocab_size=151936 if size != "tiny" else 1000, max_position_embeddings=4096,
                      tie_word_embeddings=True, **SIZES[size])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype).eval()
    model.config._attn_implementation = "sdpa"
    return model, sum(p.numel() for p in model.parameters()), non_embedding_params(model)


@torch.no_grad()
def naive_scores(model, prefix, cands, answer_id):
    """prefix (U, P), cands (U, N, C) -> (U, N): full prompt per pair, logit of the answer at the last token."""
    model.config._attn_implementation = "sdpa"
    U, N, C = cands.shape
    ids = torch.cat([prefix.unsqueeze(1).expand(U, N, -1), cands], dim=2).reshape(U * N, -1)
    h = model.model(input_ids=ids, use_cache=False).last_hidden_state[:, -1]  # (U*N, hidden)
    return (h @ model.lm_head.weight[answer_id]).float().reshape(U, N)


@torch.no_grad()
def packed_scores(model, prefix, cands, answer_id):
    """Same scores, one packed sequence per user."""
    U, P = prefix.shape
    _, N, C = cands.shape
    model.config._attn_implementation = "collm_packed"
    LAYOUT["pnc"] = (P, N, C)
    ids = torch.cat([prefix, cands.reshape(U, N * C)], dim=1)  # (U, P + N*C)
    pos = torch.cat([torch.arange(P), (P + torch.arange(C)).repeat(N)]).to(ids.device).expand(U, -1)
    h = model.model(input_ids=ids, position_ids=pos, attention_mask={"full_attention": None},
                    use_cache=False).last_hidden_state
    last = P + torch.arange(N, device=ids.device) * C + C - 1  # (N,)
    model.config._attn_implementation = "sdpa"
    return (h[:, last] @ model.lm_head.weight[answer_id]).float()  # (U, N)


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / a.abs().max())  # relative to the scores' scale (some are near 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["0.5b", "1.5b"], choices=sorted(SIZES))
    ap.add_argument("--history", type=int, default=128, help="prefix tokens")
    ap.add_argument("--cand", type=int, default=32, help="tokens per candidate part")
    ap.add_argument("--n-cand", type=int, default=50, help="candidates per user")
    ap.add_argument("--users", type=int, nargs="+", default=[32, 96], help="users per packed forward (best wins)")
    ap.add_argument("--naive-pairs", type=int, default=400, help="pairs per naive forward")
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per figure")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--deadline", type=float, default=1e9, help="seconds after which no new model is started")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU in fp32: packed == naive, eager and "
                                                        "compiled")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.smoke:
        args.sizes, args.users, args.naive_pairs, args.seconds = ["tiny"], [3], 50, 0.2
        args.history, args.cand, args.n_cand = 24, 8, 7
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    peak = matmul_tflops(device, dtype, min(args.seconds, 3.0))
    import transformers

    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dtype": str(dtype),
              "torch": torch.__version__, "transformers": transformers.__version__, "matmul_tflops": round(peak, 1),
              "layout": {"history": args.history, "cand": args.cand, "n_cand": args.n_cand},
              "candidate_attention": probe_attention(device, dtype), "models": {}}
    LAYOUT["gqa"] = report["candidate_attention"]["gqa"]
    out = Path(args.out or RESULTS / f"gpu-scoring-{card(device)}.json")
    write = writer(out, report)

    def save():
        if not args.smoke or args.out:
            write()

    print(f"device {report['device']}, {dtype} matmul {peak:.1f} TFLOP/s, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, candidate attention {report['candidate_attention']}", flush=True)
    save()
    for size in args.sizes:
        if time.perf_counter() - t_start > args.deadline:
            print(f"{size}: skipped, past the {args.deadline:.0f} s deadline", flush=True)
            break
        model, total, non_emb = build(size, device, dtype)
        V, P, C, N = model.config.vocab_size, args.history, args.cand, args.n_cand
        g = torch.Generator(device="cpu").manual_seed(1)
        answer_id = 9454 % V
        flop_limit_pps = flop_limit_pairs_per_s(peak, non_emb, (P + N * C) / N)
        r = {"params": total, "non_embedding_params": non_emb, "flop_limit_pairs_per_s": round(flop_limit_pps)}
        report["models"][size] = r
        data = {u: (torch.randint(0, V, (u, P), generator=g).to(device),
                    torch.randint(0, V, (u, N, C), generator=g).to(device)) for u in args.users}
        # correctness on the first users of the largest batch: packed == naive (fp32: rel < 1e-4; bf16: a
        # bf16-sized tolerance). The compiled check reuses that batch, so compiling sees one shape only.
        pre, cand = data[max(args.users)]
        ref = naive_scores(model, pre[:2], cand[:2], answer_id)
        r["max_rel_err_packed_vs_naive"] = rel = rel_err(ref, packed_scores(model, pre, cand, answer_id)[:2])
        if rel > tol:
            print(f"{size}: packed scores differ from naive ones (max rel err {rel:.2e} > {tol})")
            save()
            return 1
        print(f"{size}: packed == naive (max rel err {rel:.1e})", flush=True)

        def measure(label, batches):
            by_batch = {}
            for users in batches:
                pre_u, cand_u = data[users]
                per, _ = timed(lambda: packed_scores(model, pre_u, cand_u, answer_id), device, args.seconds)
                by_batch[users] = users * N / per
            best = max(by_batch.values())
            r[f"{label}_pairs_per_s_by_users_per_batch"] = {k: round(v) for k, v in by_batch.items()}
            r[f"{label}_pairs_per_s"] = round(best)
            r[f"{label}_fraction_of_flop_limit"] = round(best / flop_limit_pps, 3)
            print(f"{size}: {label} {best:,.0f} pairs/s ({best / flop_limit_pps:.0%} of the FLOP limit, "
                  f"{flop_limit_pps:,.0f} pairs/s) by users/batch {r[label + '_pairs_per_s_by_users_per_batch']}",
                  flush=True)
            return best

        if not args.smoke:
            packed_pps = measure("packed_eager", args.users)
            up = max(1, args.naive_pairs // N)
            pre_n, cand_n = data[args.users[0]][0][:up], data[args.users[0]][1][:up]
            per_n, _ = timed(lambda: naive_scores(model, pre_n, cand_n, answer_id), device, args.seconds)
            r["naive_pairs_per_s"] = naive_pps = round(up * N / per_n)
            print(f"{size}: naive {naive_pps:,} pairs/s; packed eager x{packed_pps / naive_pps:.1f}", flush=True)
            save()
        if not args.no_compile:
            try:
                t0 = time.perf_counter()
                for layer in model.model.layers:  # one graph, shared by every layer (same code, same shapes)
                    layer.compile(dynamic=False)
                r["max_rel_err_packed_compiled_vs_naive"] = rel = rel_err(
                    ref, packed_scores(model, pre, cand, answer_id)[:2])
                if rel > tol:
                    raise RuntimeError(f"compiled packed scores differ from naive ones (max rel err {rel:.2e})")
                print(f"{size}: compiled packed == naive (max rel err {rel:.1e})", flush=True)
                if not args.smoke:
                    best = measure("packed_compiled", [max(args.users)])
                    r["packed_compiled_over_naive"] = round(best / r["naive_pairs_per_s"], 2)
                r["compile_and_measure_s"] = round(time.perf_counter() - t0, 1)
            except Exception as e:  # noqa: BLE001 - the eager figures stand; say why compile failed
                r["compile_error"] = f"{type(e).__name__}: {str(e)[:500]}"
                traceback.print_exc()
                if args.smoke:
                    return 1
        best = max(r.get("packed_eager_pairs_per_s", 0), r.get("packed_compiled_pairs_per_s", 0))
        if best:
            r["packed_pairs_per_s"] = best
            r["fraction_of_flop_limit"] = round(best / flop_limit_pps, 3)
            r["packed_over_naive"] = round(best / r["naive_pairs_per_s"], 2)
        if device.type == "cuda":
            r["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 1)
        save()
        del model, data
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    save()
    if not args.smoke or args.out:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
