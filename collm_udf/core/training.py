"""Training in CoLLM's stages, on CPU, a GPU or several processes. Pure torch; the caller brings pairs as arrays.

Stage "text": prompts without CF (both slots hold the no-CF vectors); the backbone (full or LoRA) and the head
learn. This model alone is the text-only baseline.
Stage "cf": backbone and head frozen; only the projector and the no-CF vectors learn. During training each CF
slot is dropped to its no-CF vector with probability cf_dropout, so the model also learns to score without
factors (most users of a new day have none).
Early stopping on validation AUC restores the best epoch. After every epoch the trainable tensors and the
optimizer state go to <state_dir>/<stage>.safetensors (+ .json): a rerun resumes from there.

Several processes (DistributedDataParallel): when the caller has initialised torch.distributed with a world
size W > 1 (collm_udf/spark/distributed.py does, under pyspark's TorchDistributor), every rank walks the same
seeded permutation in the same global batches of batch_size pairs and trains on its strided share of each
(about batch_size / W pairs), with the cf-dropout masks drawn for the whole global batch. Each rank's loss is
its share's summed loss x W / batch size, and DDP averages gradients over the ranks, so an update equals the
single-process update on the same global batch (up to float summation order and backbone dropout masks).
Holdout scores are computed on strided shares and gathered, so every rank gets the same AUC and early stopping
decides identically; only rank 0 logs and writes the state, which therefore must sit on storage every rank
reads (a resume is refused when the ranks disagree on it). Without an initialised group nothing changes.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from collm_udf.core.features import FeatureRanker, within_groups
from collm_udf.core.groups import pair_batches, split_users
from collm_udf.core.inference import autocast_enabled, batch_inputs, predict
from collm_udf.core.metrics import auc
from collm_udf.core.model import SEGMENTS, CoLLM, build
from collm_udf.core.pairs import PairSet
from collm_udf.core.prompt import PromptBuilder
from collm_udf.core.spec import ModelSpec, StageSettings


def _trainable(model: CoLLM) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_state(path: Path, model: CoLLM, opt: torch.optim.Optimizer, meta: dict, best: dict) -> None:
    tensors = {f"param.{n}": p.detach().cpu().contiguous().clone() for n, p in _trainable(model).items()}
    tensors.update({f"best.{n}": t for n, t in best.items()})
    names = list(_trainable(model))
    for i, p in enumerate(_trainable(model).values()):
        for k, v in opt.state.get(p, {}).items():
            if torch.is_tensor(v):
                tensors[f"opt.{names[i]}.{k}"] = v.detach().cpu().contiguous().clone()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path.with_suffix(".safetensors"))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def _load_state(path: Path, model: CoLLM, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    meta = json.loads(path.with_suffix(".json").read_text())
    t = load_file(str(path.with_suffix(".safetensors")))
    params = _trainable(model)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(t[f"param.{n}"])
    for n, p in params.items():
        st = {k.rsplit(".", 1)[1]: v for k, v in t.items() if k.startswith(f"opt.{n}.")}
        if st:
            opt.state[p] = st
    best = {k[len("best."):]: v for k, v in t.items() if k.startswith("best.")}
    return meta, best


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group; (0, 1) in a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _cf_keep(rng: np.random.Generator, n: int, drop: float) -> tuple[np.ndarray, np.ndarray]:
    """cf-dropout survivors (user, item) for a global batch of n pairs: (n,) bool each, users drawn first."""
    return rng.random(n) >= drop, rng.random(n) >= drop


def _share(n: int, rank: int, size: int) -> tuple[np.ndarray, float]:
    """This rank's positions in a global batch of n pairs and its loss scale (sum x size / n; see the module
    docstring). A last batch with fewer pairs than ranks leaves some rank empty: it runs one pair with scale 0,
    because every rank must take part in each backward's gradient all-reduce."""
    mine = np.arange(rank, n, size)
    return (mine, size / n) if len(mine) else (np.arange(1), 0.0)


def _gather_scores(model: CoLLM, valid: PairSet, pad_id: int, use_cf: bool, tc: StageSettings, *, rank: int,
                   size: int) -> np.ndarray:
    """Holdout scores (N,): each rank scores a strided share and all ranks receive all of them."""
    if size == 1:
        return predict(model, valid, pad_id, use_cf, tc.eval_batch_size, tc.bf16)
    mine = np.arange(rank, len(valid), size)
    local = predict(model, valid.subset(mine), pad_id, use_cf, tc.eval_batch_size, tc.bf16)
    parts: list = [None] * size
    dist.all_gather_object(parts, (mine, local))
    out = np.empty(len(valid), np.float64)
    for idx, scores in parts:
        out[idx] = scores
    return out


def _sum_over_ranks(values: Sequence[float], device: torch.device) -> np.ndarray:
    """Element-wise sum over the ranks of equally long value lists: (len(values),) on every rank."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)  # SUM; nccl needs the tensor on the rank's GPU, gloo on the CPU
    return t.cpu().numpy()


def _per_rank(value: float, rank: int, size: int, device: torch.device) -> np.ndarray:
    """Every rank's value, (size,), on every rank."""
    return _sum_over_ranks(np.eye(size)[rank] * value, device)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_stage(model: CoLLM, stage: str, train: PairSet, valid: PairSet, tc: StageSettings, pad_id: int, *,
                state_dir: Optional[str] = None, log: Callable[[str], None] = print,
                progress: Callable[[str], None] = _stderr) -> dict:
    """Train one stage with early stopping on valid AUC; returns the epoch history and the best AUC.

    A tqdm bar shows the steps on a terminal; elsewhere (jobs, notebooks' driver logs) `progress` gets a line
    at every tenth of an epoch instead. Under torch.distributed see the module docstring.
    """
    from tqdm.auto import tqdm

    rank, size = world()
    if rank != 0:
        log = progress = lambda m: None  # noqa: E731 - rank 0 speaks for all
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    device = next(model.parameters()).device
    amp = autocast_enabled(device, tc.bf16)
    model.set_stage(stage)
    params = _trainable(model)
    # The skip is a logistic regression on standardised signals: at the projector's rate it barely moves in an
    # epoch (measured: |w| < 0.1 after 113 steps at 1e-3), so it gets its own.
    # the LM's scale (and its segments' offsets) are the skip's peers
    in_skip = {n: n.startswith("skip.") or n in ("lm_scale", "segment_bias") for n in params}
    skip = [p for n, p in params.items() if in_skip[n]]
    rest = [p for n, p in params.items() if not in_skip[n]]
    opt = torch.optim.AdamW([{"params": rest}] + ([{"params": skip, "lr": tc.skip_lr}] if skip else []),
                            lr=tc.lr, weight_decay=tc.weight_decay)
    use_cf = stage == "cf"
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    meta = {"stage": stage, "epoch": -1, "best_auc": -1.0, "best_epoch": -1, "history": [],
            "config": asdict(tc)}
    best: dict = {}
    state = Path(state_dir) / stage if state_dir else None
    if state is not None and state.with_suffix(".json").is_file():
        meta, best = _load_state(state, model, opt)
        log(f"[train] resuming stage {stage} after epoch {meta['epoch']}")
    net: torch.nn.Module = model
    if size > 1:
        if len(set(_per_rank(meta["epoch"], rank, size, device))) != 1:
            raise RuntimeError(f"stage {stage}: the ranks found different saved states under {state_dir}; "
                               "it must be a directory every rank reads")
        # In the text stage a fully tuned backbone has trainable weights outside the loss (BERT's pooler).
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=stage == "text")
    pairwise = tc.objective == "pairwise"
    if pairwise and size > 1:
        raise ValueError("objective pairwise trains in one process (its batches pair rows of a user)")
    for epoch in range(meta["epoch"] + 1, tc.epochs):
        if epoch - meta["best_epoch"] > tc.patience and meta["best_epoch"] >= 0:
            break
        net.train()
        epoch_rng = np.random.default_rng(tc.seed + epoch)
        if pairwise:  # [liked..., ignored...] per batch, the i-th liked row beside the i-th ignored one
            batches = pair_batches(train.label, train.user, tc.batch_size, epoch_rng)
            if not batches:
                raise ValueError(f"stage {stage}: objective pairwise needs a user with a liked and an ignored pair; "
                                 f"none of the set's {len(train)} pairs has one")
        else:
            order = epoch_rng.permutation(len(train))
            batches = [order[s:s + tc.batch_size] for s in range(0, len(order), tc.batch_size)]
        t0, losses, seen = time.time(), [], 0
        bar = tqdm(batches, desc=f"{stage} epoch {epoch}", mininterval=10, disable=None if rank == 0 else True)
        every = max(1, len(batches) // 10)
        for step, idx in enumerate(bar):  # idx: the global batch, the same on every rank
            keep = _cf_keep(rng, len(idx), tc.cf_dropout) if use_cf and tc.cf_dropout > 0 else None
            mine, scale = _share(len(idx), rank, size)
            seen += len(mine) if scale else 0
            b = batch_inputs(model, train, idx[mine], device, pad_id, use_cf,
                             keep=None if keep is None else (keep[0][mine], keep[1][mine]))
            y = torch.as_tensor(train.label[idx[mine]], dtype=torch.float32, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logit = net(**b)
            if pairwise:  # -log sigmoid(liked - ignored): a per-user offset cancels
                half = len(idx) // 2
                loss = torch.nn.functional.softplus(logit[half:].float() - logit[:half].float()).mean()
            elif size == 1:
                loss = bce(logit.float(), y)
            else:  # this share's part of the global batch's mean, x size (DDP divides gradients by size)
                loss = bce(logit.float(), y, reduction="sum") * scale
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if bar.disable and ((step + 1) % every == 0 or step + 1 == len(batches)):
                progress(f"[train] {stage} epoch {epoch}: step {step + 1}/{len(batches)} loss "
                         f"{np.mean(losses[-every:]):.4f} ({time.time() - t0:.0f}s)")
        extra = {}
        if size > 1:
            # Rank shares add up to the global batch's mean loss; identical record on every rank.
            losses = list(_sum_over_ranks(losses, device) / size)
            extra = {"world_size": size,
                     "shard_pairs": [int(n) for n in _per_rank(seen, rank, size, device)]}
        v_auc = auc(valid.label, _gather_scores(model, valid, pad_id, use_cf, tc, rank=rank, size=size))
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "valid_auc": v_auc,
               "train_s": round(time.time() - t0, 1), **extra}
        meta["history"].append(rec)
        log(f"[train] {stage} epoch {epoch}: loss {rec['loss']:.4f} valid AUC "
            f"{'n/a (one class)' if v_auc is None else f'{v_auc:.4f}'} ({rec['train_s']}s)")
        if v_auc is not None and v_auc > meta["best_auc"]:
            meta["best_auc"], meta["best_epoch"] = v_auc, epoch
            best = {n: p.detach().cpu().clone() for n, p in params.items()}
        meta["epoch"] = epoch
        if state is not None and rank == 0:
            state.parent.mkdir(parents=True, exist_ok=True)
            _save_state(state, model, opt, meta, best)
    del net  # DDP's gradient hooks go with it; the next stage wraps its own trainable set
    if best:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(best[n].to(p.device))
    model.set_stage("cf")  # leave nothing but the CF channel trainable
    return meta


def init_skip(model: CoLLM, cf: PairSet, how: str = "logistic", pad_id: Optional[int] = None, *,
              base: Optional[FeatureRanker] = None, bf16: str = "auto", within_user: bool = False) -> None:
    """Before stage 2: standardise the skip's signals as the stage-2 set has them (recorded in the spec) and, with
    how="logistic" and a linear skip, start it at a logistic regression of the set's labels on them. From zero
    the skip spends stage 2 catching up with what this closed-form fit gives at once, and the projector learns
    alongside a skip still far from its optimum. With the model's lm_scale the fit also sees the LM's logit as it
    stands after stage 1 (one pass over the set; needs pad_id), and its coefficient starts the scale: the start
    then scores like the fit, LM and signals weighed against each other on the table's labels. how="refit" fits
    the same (fit() calls it again after stage 2, whose steps at skip_lr leave the linear part jittering around
    that optimum: on ML-100K's first dev day u . v's weight went from the fit's 1.44 to 0.77).

    how="features" stacks the model on the features-only ranker `base` (collm_udf/core/features.py): the fit
    sees that ranker's logit f as its one signal column, so the skip ends as a * f (its coefficients mapped to the
    skip's standardisation) and, with lm_warm false, warm pairs rank exactly as that ranker ranks them; the LM's
    weights and offsets per segment are what the model adds.
    Needs a linear skip without skip_segments (ModelConfig checks). bf16: the pass over the set's precision, the
    stage's setting (on a CPU with native bf16, "auto" scores in bf16: the fit's LM column would not be the
    logit the stage trained in fp32). within_user (model.train.stack_fit): the fit sees each user's columns
    centred on his own rows (features.within_groups, cf.user), so the LM is weighed by how it orders a user's pairs,
    not by how it tells users who like more from the rest (pooled, a bigger stage 2 gave the LM a warm weight of 0.74
    and the gate's held-out NDCG fell from the ranker's 0.091 to 0.050: benchmarks/README.md)."""
    if not model.spec.signals:
        return
    x = cf.signals(model.spec.signals)
    model.set_signal_scale(x.mean(axis=0), x.std(axis=0))
    if how not in ("logistic", "refit", "features") or model.spec.skip_hidden or len(np.unique(cf.label)) < 2:
        return
    from sklearn.linear_model import LogisticRegression  # training machines only (see auc)

    z = model.skip_inputs(torch.as_tensor(x).to(model._sig_mean.device)).cpu().numpy()
    if how == "features":  # z -> the ranker's logit f = z @ w + b, one column (the skip standardises x as it does)
        if base is None:
            raise ValueError("init_skip features: needs the features-only ranker (base) to stack on")
        w, b = stacked(base, model.spec)
        z = (z @ w + b)[:, None]
    if model.lm_scale is not None:
        if pad_id is None:
            raise ValueError("init_skip: a model with lm_scale needs pad_id (its logistic start scores the set)")
        with torch.no_grad():  # the skip out of the logit, the scale at 1: the LM's own logit
            model.skip.weight.zero_()
            model.skip.bias.zero_()
            model.lm_scale.fill_(1.0)
        lm = predict(model, cf, pad_id, use_cf=True, bf16=bf16)
        m, s = float(lm.mean()), max(float(lm.std()), 1e-6)  # standardised like the signals, for the same penalty
        if model.spec.lm_segments:  # per segment (lm - m) / s there and 0 elsewhere, and its offset (not warm's)
            seg = model.segment(torch.as_tensor(x)).numpy()
            on = [j > 0 or model.spec.lm_warm for j in range(len(SEGMENTS))]  # lm_warm false: no warm column
            lm_cols = np.stack([((lm - m) / s) * (seg == j) * on[j] for j in range(len(SEGMENTS))]
                               + [(seg == j).astype(np.float64) for j in range(1, len(SEGMENTS))], axis=1)
        else:
            lm_cols = ((lm - m) / s)[:, None]
        z = np.concatenate([lm_cols, z], axis=1)
    def logistic(cols: np.ndarray) -> LogisticRegression:
        if within_user:
            wx, wy = within_groups(cols, cf.label, cf.user)
            if len(np.unique(wy)) == 2:
                return LogisticRegression(max_iter=1000).fit(wx, wy)
        return LogisticRegression(max_iter=1000).fit(cols, cf.label)

    lr = logistic(z)
    coef, bias = lr.coef_[0], float(lr.intercept_[0])
    with torch.no_grad():
        if model.lm_scale is not None and model.spec.lm_segments:
            # a segment the set lacks has no evidence either way: it starts at the weight of the pooled fit
            n = len(SEGMENTS)
            pooled = logistic(np.concatenate([((lm - m) / s)[:, None], z[:, 2 * n - 1:]], axis=1)).coef_[0][0]
            c = np.array([(coef[j] if (seg == j).any() else pooled) * on[j] for j in range(n)], np.float64)
            # c_j (lm - m) / s = (c_j / s) lm - c_j m / s: each segment's offset goes to its bias (warm's: the skip's)
            model.lm_scale.copy_(torch.as_tensor(c / s, dtype=torch.float32))
            offset = np.array([0.0, *coef[n:2 * n - 1]]) - c * m / s
            bias += float(offset[0])
            model.segment_bias.copy_(torch.as_tensor(offset - offset[0], dtype=torch.float32))
            coef = coef[2 * n - 1:]
        elif model.lm_scale is not None:  # coef[0] (lm - m) / s = (coef[0] / s) lm - coef[0] m / s
            model.lm_scale.fill_(float(coef[0]) / s)
            bias -= float(coef[0]) * m / s
            coef = coef[1:]
        if how == "features":  # coef[0] f = coef[0] (z @ w + b)
            coef, bias = coef[0] * w, bias + float(coef[0]) * b
        model.skip.weight.copy_(torch.as_tensor(coef[None, :], dtype=torch.float32))
        model.skip.bias.fill_(bias)


def stacked(ranker: FeatureRanker, spec: ModelSpec) -> tuple[np.ndarray, float]:
    """(w (S,), b): the features-only ranker's logit on the skip's standardised input z = (x - spec.signal_mean) /
    spec.signal_std, f = z @ w + b (the ranker standardises by its own mean and scale)."""
    if tuple(ranker.signals) != tuple(spec.signals):
        raise ValueError(f"skip_init features: the ranker's signals {list(ranker.signals)} are not the model's "
                         f"{list(spec.signals)}")
    coef, mean, scale = (np.asarray(v, np.float64) for v in (ranker.coef, ranker.mean, ranker.scale))
    m, s = np.asarray(spec.signal_mean, np.float64), np.asarray(spec.signal_std, np.float64)
    return coef * s / scale, ranker.intercept + float(coef @ ((m - mean) / scale))


def fit(spec: ModelSpec, stages: Mapping[str, StageSettings], sets: Mapping[str, PairSet], *,
        skip_init: str = "logistic", state_dir: Optional[str] = None, log: Callable[[str], None] = print,
        device: Optional[torch.device] = None, base: Optional[FeatureRanker] = None):
    """Build the model of `spec` and train both stages on sets {text, cf, hold}, stage s with stages[s];
    (model, tokenizer, report). The conf gives all three: ModelConfig.spec(), .stages(), .train.skip_init.
    base: the features-only ranker that skip_init features stacks on (init_skip).

    Stage 1 (text) is skipped when the text set is empty; with tuning none it trains the head only.
    The model trains where it is built (the CPU) unless a device is given. Under torch.distributed every rank
    calls this with the same sets and seed, so all ranks build the same initial model.
    """
    torch.manual_seed(stages["text"].seed)
    model, tok = build(spec)
    if device is not None:
        model.to(device)
    pb = PromptBuilder(tok, model.spec.template, model.spec.max_tokens, model.spec.candidate_max_tokens)
    for ps in sets.values():
        ps.encode(pb)
    report = {"pairs": {k: len(v) for k, v in sets.items()}}
    if len(sets["text"]):
        report["text"] = train_stage(model, "text", sets["text"], sets["hold"], stages["text"], tok.pad_token_id,
                                     state_dir=state_dir, log=log)
    report["cf"] = train_cf(model, sets["cf"], sets["hold"], stages["cf"], tok.pad_token_id, skip_init=skip_init,
                            state_dir=state_dir, log=log, base=base)
    if report["cf"].get("skip_refit"):
        report["skip_refit"] = True
    return model, tok, report


def train_cf(model: CoLLM, cf: PairSet, hold: PairSet, tc: StageSettings, pad_id: int, *,
             skip_init: str = "logistic", state_dir: Optional[str] = None,
             log: Callable[[str], None] = print, base: Optional[FeatureRanker] = None) -> dict:
    """Stage 2 after stage 1 (fit, and the benchmarks that run the stages themselves): the skip's start
    (init_skip, which weighs the LM as stage 1 left it), the CF stage, and with skip_init refit the same fit again
    on the LM as stage 2 left it (the linear part at the labels' optimum; skip_init features too, on `base`).
    train_stage's record, with skip_refit. skip_init features without `base`: the ranker fitted on `cf`, once (split
    mode's features-only ranker is that fit). tc.stack_share > 0: the refit weighs the LM on that share of the users,
    whose pairs the stage's steps did not see (record: stack_pairs)."""
    if skip_init == "features" and base is None and model.spec.signals:
        base = FeatureRanker.fit(model.spec.signals, cf.signals(model.spec.signals), cf.label)
    within = tc.stack_fit == "within_user"
    refit = skip_init in ("refit", "features")
    steps, stack = cf, cf
    if refit and tc.stack_share > 0:
        steps, stack = split_users(cf, tc.stack_share, tc.seed)
    init_skip(model, steps, skip_init, pad_id, base=base, bf16=tc.bf16, within_user=within)
    meta = train_stage(model, "cf", steps, hold, tc, pad_id, state_dir=state_dir, log=log)
    if refit:
        init_skip(model, stack, skip_init, pad_id, base=base, bf16=tc.bf16, within_user=within)
        meta["skip_refit"] = True
        meta["stack_pairs"] = len(stack) if stack is not cf else 0
    return meta

