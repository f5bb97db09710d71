"""Scoring a day's candidates: one pass per user, the user's prefix encoded once. Pure torch (no pyspark).

Pairs that share a prefix (same history titles and same user factors: in a daily run, all of a user's
candidates) form a group; batching.pack puts a group's prefix once per row followed by as many candidate parts
as fit, and block attention makes every candidate see exactly its own prompt (on a GPU without a dense mask:
collm_udf/core/attention.py). So packed scores equal
one-prompt-per-pair scores (tests/test_model.py checks it on an encoder and a causal LM) at a fraction of the
tokens: with a 40-token prefix and 50 candidates of 20 tokens, 1,040 tokens instead of 3,000.

predict scores one prompt per pair (training's holdout; full attention). load_predict_fn follows
pyspark.ml.functions.predict_batch_udf: it loads the checkpoint once and returns a pure
function from column arrays to scores; the Spark wrapper (collm_udf/spark/scorers/udf.py) does the batching.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from collm_udf.core.batching import UserGroup, collate, pack, pad_to_buckets
from collm_udf.core.model import CoLLM
from collm_udf.core.pairs import PairSet
from collm_udf.core.prompt import PromptBuilder


def autocast_enabled(device: torch.device, mode: str) -> bool:
    if mode in ("on", "off"):
        return mode == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # Without native bf16 (e.g. AVX2-only AMD EPYC) CPU autocast is ~15x slower than fp32: measured here.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


def batch_inputs(model: CoLLM, ps: PairSet, idx, device, pad_id: int, use_cf: bool, *,
                 keep: Optional[tuple[np.ndarray, np.ndarray]] = None) -> dict:
    """Rows for pairs idx; keep = (user, item) bool masks (len(idx),) of CF slots that survive cf-dropout."""
    uh, ih = ps.user_has[idx], ps.item_has[idx]
    if not use_cf:
        uh, ih = np.zeros_like(uh), np.zeros_like(ih)
    elif keep is not None:
        uh, ih = uh & keep[0], ih & keep[1]
    x = ps.signals(model.spec.signals, idx, uh, ih) if use_cf and model.spec.signals else None
    b = collate([ps.encoded[i] for i in idx], ps.user_f[idx], ps.item_f[idx], uh, ih, pad_id, x=x)
    return {k: v.to(device) for k, v in b.items()}


@torch.no_grad()
def predict(model: CoLLM, ps: PairSet, pad_id: int, use_cf: bool, batch_size: int = 128,
            bf16: str = "auto", *, parts: bool = False) -> np.ndarray:
    """Scores, one prompt per pair, (n,); parts: (n, 2), as predict_packed's."""
    device = next(model.parameters()).device
    amp = autocast_enabled(device, bf16)
    model.eval()
    # Sorting by length keeps padding low; scores go back to the input order.
    order = np.argsort([len(e.input_ids) for e in ps.encoded], kind="stable")
    out = np.empty((len(ps), 2) if parts else len(ps), dtype=np.float64)
    for s in range(0, len(ps), batch_size):
        idx = order[s:s + batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            got = model(**batch_inputs(model, ps, idx, device, pad_id, use_cf), parts=parts)
            out[idx] = got.float().cpu().numpy()
    return out


def group_pairs(ps: PairSet) -> list[np.ndarray]:
    """Indices of pairs sharing a prefix (history titles, user factors, has-factors), in first-seen order."""
    groups: dict = {}
    for i in range(len(ps)):
        key = (tuple(ps.history[i]), bool(ps.user_has[i]), ps.user_f[i].tobytes() if ps.user_has[i] else b"")
        groups.setdefault(key, []).append(i)
    return [np.asarray(v) for v in groups.values()]


@torch.no_grad()
def predict_packed(model: CoLLM, pb: PromptBuilder, ps: PairSet, pad_id: int, use_cf: bool = True, *,
                   max_row_tokens: int = 512, batch_tokens: int = 8192, bf16: str = "auto",
                   buckets: bool = False, parts: bool = False) -> np.ndarray:
    """Scores of every pair of `ps`, in its order, computed one packed pass per prefix group, (n,); parts: the
    two addends of each score instead, (n, 2) [the LM's part ; the signals' part] (CoLLM.forward). buckets: pad
    each batch to a few fixed shapes (batching.pad_to_buckets; for compiled layers). A batch's scores are read
    back after the next batch is packed and launched, so on a GPU the CPU's packing overlaps the GPU's work."""
    if model.spec.kind == "encoder" and model.spec.attention == "full":
        # The prefix sees the candidate under full attention: packing would not be exact.
        return predict(model, ps.encode(pb), pad_id, use_cf, bf16=bf16, parts=parts)
    device = next(model.parameters()).device
    amp = autocast_enabled(device, bf16)
    model.eval()
    out = np.empty((len(ps), 2) if parts else len(ps), np.float64)
    uh = ps.user_has if use_cf else np.zeros(len(ps), bool)
    ih = ps.item_has if use_cf else np.zeros(len(ps), bool)
    encoded: dict[str, tuple] = {}  # each candidate text's encoding, once
    pending: list[tuple[UserGroup, np.ndarray]] = []
    pending_tokens = 0
    inflight: list = []  # (scores on the device, the out index of each score) of the batch launched last

    def read_back():
        if inflight:
            s, where = inflight.pop()
            out[where] = s.cpu().numpy()

    def flush():
        rows, order = pack([g for g, _ in pending], pad_id, max_row_tokens)
        if buckets:
            rows = pad_to_buckets(rows, pad_id)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            s = model(**{k: v.to(device) for k, v in rows.items()}, parts=parts).float()
        read_back()
        inflight.append((s, np.array([pending[g][1][c] for g, c in order], np.int64)))
        pending.clear()

    # Groups of similar size batch together: one long row among short ones would pad every row to its length
    # (measured: 10k test pairs in groups of ~3, first-seen order, ran 1.5x slower than one prompt per pair).
    groups = sorted(_bounded(group_pairs(ps), ps, pb, batch_tokens), key=len)
    for idx in groups:
        i0 = idx[0]
        prefix, user_pos = pb.encode_prefix(ps.history[i0])
        cand = []
        for i in idx:
            c = ps.candidate[i]
            if c not in encoded:
                encoded[c] = pb.encode_candidate(c)
            cand.append(encoded[c])
        x = ps.signals(model.spec.signals, idx, uh[idx], ih[idx]) if use_cf and model.spec.signals else None
        grp = UserGroup(prefix, user_pos, ps.user_f[i0], bool(uh[i0]), cand, ps.item_f[idx], ih[idx], x)
        tokens = len(prefix) * max(1, sum(len(p) for p, _ in cand) // max_row_tokens + 1) + \
            sum(len(p) for p, _ in cand)
        if pending and pending_tokens + tokens > batch_tokens:
            flush()
            pending_tokens = 0
        pending.append((grp, idx))
        pending_tokens += tokens
    if pending:
        flush()
    read_back()
    return out


def _bounded(groups: list[np.ndarray], ps: PairSet, pb: PromptBuilder, batch_tokens: int):
    """Split a group whose candidates alone exceed batch_tokens (a user with thousands of candidates), so that
    no forward pass is unbounded; each piece repeats the prefix."""
    for idx in groups:
        size = 0
        start = 0
        for j, i in enumerate(idx):
            n = len(pb._cached(ps.candidate[i])[: pb.candidate_max_tokens]) + 8
            if size + n > batch_tokens and j > start:
                yield idx[start:j]
                start, size = j, 0
            size += n
        yield idx[start:]


def pick_device(prefer: Optional[str] = None, gpu_addresses: Sequence[str] = ()) -> torch.device:
    """`prefer`, else the GPU whose address the caller gives (Spark's task resources: the Spark layer reads them,
    collm_udf/spark/scorers/udf.py), else CUDA_VISIBLE_DEVICES' first GPU, else the CPU.

    Spark (spark.task.resource.gpu.amount) lists the task's GPU addresses in TaskContext.resources()['gpu'];
    those are physical ordinals as seen by the executor, so they index torch's devices directly unless the
    executor itself was started with a narrowed CUDA_VISIBLE_DEVICES (YARN/K8s isolation), in which case the
    only visible device is 0.
    """
    if prefer:
        return torch.device(prefer)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if gpu_addresses:
        n = torch.cuda.device_count()
        ordinal = int(gpu_addresses[0])
        return torch.device(f"cuda:{ordinal if ordinal < n else 0}")
    return torch.device("cuda:0")


def load_predict_fn(checkpoint_dir: str, device: Optional[str] = None, *, expect_factor_dim: Optional[int] = None,
                    expect_als_run_id: Optional[str] = None, max_row_tokens: int = 512, batch_tokens: int = 8192,
                    bf16: str = "auto", compile: str = "auto") -> Callable[..., np.ndarray]:
    """Load a checkpoint once; return predict(history, candidate, user_f, item_f, user_has, item_has[, stats=,
    parts=]) -> scores (n,), or with parts=True their two addends (n, 2): [the LM's part ; the signals' part]. A
    model with signals refuses pairs without the statistics it was trained with.

    compile: "auto" (on a GPU only), "on" or "off": the backbone's layers under torch.compile (compile_layers),
    batches padded to a few shapes. On CPU auto leaves the model eager, as it always was."""
    from collm_udf.core import checkpoint

    if compile not in ("auto", "on", "off"):
        raise ValueError(f"compile: {compile!r} is not auto, on or off")
    model, tok = checkpoint.load(checkpoint_dir, expect_factor_dim, expect_als_run_id)
    dev = pick_device(device)
    model.to(dev)
    compiled = compile == "on" or (compile == "auto" and dev.type == "cuda")
    if compiled:
        compile_layers(model)
    spec = model.spec
    pb = PromptBuilder(tok, spec.template, spec.max_tokens, spec.candidate_max_tokens)

    def predict(history, candidate, user_f, item_f, user_has, item_has, *, stats=None, parts=False) -> np.ndarray:
        """stats: name -> (n,) values of the statistics among the model's signals (collm_udf/core/signals.py)."""
        n = len(candidate)
        ps = PairSet([list(h) if h is not None else [] for h in history], list(candidate),
                     np.asarray(user_f, np.float32).reshape(n, -1), np.asarray(item_f, np.float32).reshape(n, -1),
                     np.asarray(user_has, bool), np.asarray(item_has, bool), np.zeros(n, np.int64),
                     stats=None if stats is None else {k: np.asarray(v, np.float64) for k, v in stats.items()})
        return predict_packed(model, pb, ps, tok.pad_token_id, True, max_row_tokens=max_row_tokens,
                              batch_tokens=batch_tokens, bf16=bf16, buckets=compiled, parts=parts)

    predict.model, predict.tokenizer, predict.prompts, predict.device = model, tok, pb, dev  # type: ignore[attr-defined]
    predict.compiled = compiled  # type: ignore[attr-defined]
    return predict


def compile_layers(model: CoLLM, recompile_limit: int = 64) -> int:
    """torch.compile each layer of the backbone's stack (dynamic=False), as benchmarks/gpu_scoring.py measured
    (x1.5 over eager on a 0.5B causal LM): identical layers share one graph, and the compiler fuses the
    memory-bound norm / rotary / activation kernels that eager mode launches one by one. Block attention stays
    outside the graphs (collm_udf/core/attention.py). Each padded batch shape (batching.pad_to_buckets) compiles
    once; the limit on recompilations is raised to `recompile_limit` so that a day's few shapes all stay
    compiled. Returns how many layers were compiled (0: no layer stack found, the model stays eager)."""
    import torch._dynamo

    hf = model.backbone.get_base_model() if hasattr(model.backbone, "get_base_model") else model.backbone
    n = getattr(hf.config, "num_hidden_layers", None)
    stacks = [m for m in hf.modules() if isinstance(m, torch.nn.ModuleList) and n and len(m) == n
              and len({type(x) for x in m}) == 1]
    if not stacks:
        return 0
    for layer in stacks[0]:
        layer.compile(dynamic=False)
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the name since torch 2.6; the older one
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), recompile_limit))
            break
    return len(stacks[0])
