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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from collm_udf.core import signals
from collm_udf.core.batching import collate
from collm_udf.core.model import CoLLM, ModelSpec, build
from collm_udf.core.prompt import TEMPLATES, PromptBuilder

if TYPE_CHECKING:  # the core never needs the conf loader (PyYAML) at run time
    from collm_udf.config import ModelConfig


@dataclass
class PairSet:
    """N scored pairs: history titles, candidate text, factors (zeros where missing), labels, and the
    statistics among the model's signals (collm_udf/core/signals.py; name -> (N,) values)."""

    history: list
    candidate: list
    user_f: np.ndarray  # (N, d) float32
    item_f: np.ndarray  # (N, d)
    user_has: np.ndarray  # (N,) bool
    item_has: np.ndarray  # (N,)
    label: np.ndarray  # (N,) 0/1
    encoded: Optional[list] = field(default=None, repr=False)
    stats: Optional[dict] = field(default=None, repr=False)  # name -> (N,) float

    def __len__(self) -> int:
        return len(self.candidate)

    def subset(self, idx) -> "PairSet":
        idx = np.asarray(idx)
        enc = None if self.encoded is None else [self.encoded[i] for i in idx]
        stats = None if self.stats is None else {k: np.asarray(v)[idx] for k, v in self.stats.items()}
        return PairSet([self.history[i] for i in idx], [self.candidate[i] for i in idx], self.user_f[idx],
                       self.item_f[idx], self.user_has[idx], self.item_has[idx], self.label[idx], enc, stats)

    def signals(self, names: Sequence[str], idx=None, user_has=None, item_has=None) -> np.ndarray:
        """(n, len(names)) signals of the pairs idx (all when None); *_has override the factor masks (a CF slot
        dropped in training, or scoring without CF, also drops its derived signals)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx)
        stats = None if self.stats is None else {k: np.asarray(v)[idx] for k, v in self.stats.items()}
        return signals.matrix(names, self.user_f[idx], self.item_f[idx],
                              self.user_has[idx] if user_has is None else user_has,
                              self.item_has[idx] if item_has is None else item_has, stats)

    @classmethod
    def from_ids(cls, user_ids: Sequence, item_ids: Sequence, histories: Sequence[Sequence], labels: Sequence,
                 text: Mapping, user_factors: Mapping, item_factors: Mapping, factor_dim: int,
                 use_history: bool = True, stats: Optional[Mapping[str, Sequence]] = None) -> "PairSet":
        """Look up titles and factors by id; missing factors become zeros with *_has = False."""
        z = np.zeros(factor_dim, np.float32)
        U, V = user_factors, item_factors
        return cls(
            # history ids without a catalog text are skipped, as the Spark scorer's title join does
            history=[[text[i] for i in h if i in text] if use_history and h is not None else [] for h in histories],
            candidate=[text.get(i, "") for i in item_ids],
            user_f=np.stack([U.get(u, z) for u in user_ids]).astype(np.float32).reshape(-1, factor_dim),
            item_f=np.stack([V.get(i, z) for i in item_ids]).astype(np.float32).reshape(-1, factor_dim),
            user_has=np.array([u in U for u in user_ids], bool), item_has=np.array([i in V for i in item_ids], bool),
            label=np.asarray(labels, np.int64),
            stats=None if stats is None else {k: np.asarray(v, np.float64) for k, v in stats.items()})

    def encode(self, pb: PromptBuilder) -> "PairSet":
        """Tokenise once; epochs and evaluations reuse the ids."""
        if self.encoded is None:
            self.encoded = [pb.encode(h, c) for h, c in zip(self.history, self.candidate)]
        return self


@dataclass
class TrainConfig:
    lr: float = 1e-4
    skip_lr: float = 0.05  # the signals' skip (stage 2): a linear model on standardised inputs
    batch_size: int = 32
    epochs: int = 3
    patience: int = 1
    cf_dropout: float = 0.2
    weight_decay: float = 0.0
    seed: int = 0
    bf16: str = "auto"  # autocast to bf16: auto (on GPU, or CPUs with native bf16), on, off
    eval_batch_size: int = 128


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


def _batch(model: CoLLM, ps: PairSet, idx, device, pad_id: int, use_cf: bool,
           keep: Optional[tuple[np.ndarray, np.ndarray]] = None) -> dict:
    """Rows for pairs idx; keep = (user, item) bool masks (len(idx),) of CF slots that survive cf-dropout."""
    uh, ih = ps.user_has[idx], ps.item_has[idx]
    if not use_cf:
        uh, ih = np.zeros_like(uh), np.zeros_like(ih)
    elif keep is not None:
        uh, ih = uh & keep[0], ih & keep[1]
    x = ps.signals(model.spec.signals, idx, uh, ih) if use_cf and model.spec.signals else None
    b = collate([ps.encoded[i] for i in idx], ps.user_f[idx], ps.item_f[idx], uh, ih, pad_id, x)
    return {k: v.to(device) for k, v in b.items()}


@torch.no_grad()
def predict(model: CoLLM, ps: PairSet, pad_id: int, use_cf: bool, batch_size: int = 128,
            bf16: str = "auto") -> np.ndarray:
    device = next(model.parameters()).device
    amp = autocast_enabled(device, bf16)
    model.eval()
    # Sorting by length keeps padding low; scores go back to the input order.
    order = np.argsort([len(e.input_ids) for e in ps.encoded], kind="stable")
    out = np.empty(len(ps), dtype=np.float64)
    for s in range(0, len(ps), batch_size):
        idx = order[s:s + batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out[idx] = model(**_batch(model, ps, idx, device, pad_id, use_cf)).float().cpu().numpy()
    return out


def auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score  # here, not at import: scoring machines need no sklearn

    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


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


def _gather_scores(model: CoLLM, valid: PairSet, pad_id: int, use_cf: bool, tc: TrainConfig, rank: int,
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


def train_stage(model: CoLLM, stage: str, train: PairSet, valid: PairSet, tc: TrainConfig, pad_id: int,
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
    in_skip = {n: n.startswith("skip.") or n == "lm_scale" for n in params}  # the LM's scale is the skip's peer
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
    for epoch in range(meta["epoch"] + 1, tc.epochs):
        if epoch - meta["best_epoch"] > tc.patience and meta["best_epoch"] >= 0:
            break
        net.train()
        order = np.random.default_rng(tc.seed + epoch).permutation(len(train))
        t0, losses, seen = time.time(), [], 0
        steps = range(0, len(order), tc.batch_size)
        bar = tqdm(steps, desc=f"{stage} epoch {epoch}", mininterval=10, disable=None if rank == 0 else True)
        every = max(1, len(steps) // 10)
        for step, s in enumerate(bar):
            idx = order[s:s + tc.batch_size]  # the global batch: the same on every rank
            keep = _cf_keep(rng, len(idx), tc.cf_dropout) if use_cf and tc.cf_dropout > 0 else None
            mine, scale = _share(len(idx), rank, size)
            seen += len(mine) if scale else 0
            b = _batch(model, train, idx[mine], device, pad_id, use_cf,
                       None if keep is None else (keep[0][mine], keep[1][mine]))
            y = torch.as_tensor(train.label[idx[mine]], dtype=torch.float32, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logit = net(**b)
            if size == 1:
                loss = bce(logit.float(), y)
            else:  # this share's part of the global batch's mean, x size (DDP divides gradients by size)
                loss = bce(logit.float(), y, reduction="sum") * scale
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if bar.disable and ((step + 1) % every == 0 or step + 1 == len(steps)):
                progress(f"[train] {stage} epoch {epoch}: step {step + 1}/{len(steps)} loss "
                         f"{np.mean(losses[-every:]):.4f} ({time.time() - t0:.0f}s)")
        extra = {}
        if size > 1:
            # Rank shares add up to the global batch's mean loss; identical record on every rank.
            losses = list(_sum_over_ranks(losses, device) / size)
            extra = {"world_size": size,
                     "shard_pairs": [int(n) for n in _per_rank(seen, rank, size, device)]}
        v_auc = auc(valid.label, _gather_scores(model, valid, pad_id, use_cf, tc, rank, size))
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "valid_auc": v_auc,
               "train_s": round(time.time() - t0, 1), **extra}
        meta["history"].append(rec)
        log(f"[train] {stage} epoch {epoch}: loss {rec['loss']:.4f} valid AUC {v_auc:.4f} ({rec['train_s']}s)")
        if v_auc > meta["best_auc"]:
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


# ------------------------------------------------------------------------------------- from a conf
def spec_from_conf(mc: "ModelConfig", factor_dim: int, als_run_id: Optional[str]) -> ModelSpec:
    return ModelSpec(backbone=mc.backbone, kind=mc.kind, factor_dim=factor_dim, projector_mult=mc.projector_mult,
                     attention=mc.attention,
                     tuning=mc.tuning, lora_r=mc.lora_r, lora_alpha=mc.lora_alpha, answer_token=mc.answer_token,
                     template=TEMPLATES.get(mc.template, mc.template), max_tokens=mc.max_tokens,
                     candidate_max_tokens=mc.candidate_max_tokens, als_run_id=als_run_id, signals=list(mc.signals),
                     skip_hidden=mc.skip_hidden, skip_segments=mc.skip_segments, lm_scale=mc.lm_scale)


def init_skip(model: CoLLM, cf: PairSet, how: str = "logistic", pad_id: Optional[int] = None) -> None:
    """Before stage 2: standardise the skip's signals as the stage-2 set has them (recorded in the spec) and, with
    how="logistic" and a linear skip, start it at a logistic regression of the set's labels on them. From zero
    the skip spends stage 2 catching up with what this closed-form fit gives at once, and the projector learns
    alongside a skip still far from its optimum. With the model's lm_scale the fit also sees the LM's logit as it
    stands after stage 1 (one pass over the set; needs pad_id), and its coefficient starts the scale: the start
    then scores like the fit, LM and signals weighed against each other on the table's labels."""
    if not model.spec.signals:
        return
    x = cf.signals(model.spec.signals)
    model.set_signal_scale(x.mean(axis=0), x.std(axis=0))
    if how != "logistic" or model.spec.skip_hidden or len(np.unique(cf.label)) < 2:
        return
    from sklearn.linear_model import LogisticRegression  # training machines only (see auc)

    z = model.skip_inputs(torch.as_tensor(x).to(model._sig_mean.device)).cpu().numpy()
    if model.lm_scale is not None:
        if pad_id is None:
            raise ValueError("init_skip: a model with lm_scale needs pad_id (its logistic start scores the set)")
        with torch.no_grad():  # the skip out of the logit, the scale at 1: the LM's own logit
            model.skip.weight.zero_()
            model.skip.bias.zero_()
            model.lm_scale.fill_(1.0)
        lm = predict(model, cf, pad_id, use_cf=True)
        m, s = float(lm.mean()), max(float(lm.std()), 1e-6)  # standardised like the signals, for the same penalty
        z = np.concatenate([((lm - m) / s)[:, None], z], axis=1)
    lr = LogisticRegression(max_iter=1000).fit(z, cf.label)
    coef, bias = lr.coef_[0], float(lr.intercept_[0])
    with torch.no_grad():
        if model.lm_scale is not None:  # coef[0] (lm - m) / s = (coef[0] / s) lm - coef[0] m / s
            model.lm_scale.fill_(float(coef[0]) / s)
            bias -= float(coef[0]) * m / s
            coef = coef[1:]
        model.skip.weight.copy_(torch.as_tensor(coef[None, :], dtype=torch.float32))
        model.skip.bias.fill_(bias)


def stage_config(mc: "ModelConfig", stage: str) -> TrainConfig:
    t = mc.train
    return TrainConfig(lr=t.text_lr if stage == "text" else t.cf_lr, skip_lr=t.skip_lr, batch_size=t.batch_size,
                       epochs=t.text_epochs if stage == "text" else t.cf_epochs, patience=t.patience,
                       cf_dropout=t.cf_dropout, seed=t.seed, bf16=t.bf16)


def fit(mc: "ModelConfig", sets: Mapping[str, PairSet], factor_dim: int, als_run_id: Optional[str],
        state_dir: Optional[str] = None, log: Callable[[str], None] = print,
        device: Optional[torch.device] = None):
    """Build the model of a conf and train both stages on sets {text, cf, hold}; (model, tokenizer, report).

    Stage 1 (text) is skipped when the text set is empty; with tuning none it trains the head only.
    The model trains where it is built (the CPU) unless a device is given. Under torch.distributed every rank
    calls this with the same sets and seed, so all ranks build the same initial model.
    """
    torch.manual_seed(mc.train.seed)
    model, tok = build(spec_from_conf(mc, factor_dim, als_run_id))
    if device is not None:
        model.to(device)
    pb = PromptBuilder(tok, model.spec.template, model.spec.max_tokens, model.spec.candidate_max_tokens)
    for ps in sets.values():
        ps.encode(pb)
    report = {"pairs": {k: len(v) for k, v in sets.items()}}
    if len(sets["text"]):
        report["text"] = train_stage(model, "text", sets["text"], sets["hold"], stage_config(mc, "text"),
                                     tok.pad_token_id, state_dir, log)
    init_skip(model, sets["cf"], mc.train.skip_init, tok.pad_token_id)  # after stage 1: the LM it weighs
    report["cf"] = train_stage(model, "cf", sets["cf"], sets["hold"], stage_config(mc, "cf"), tok.pad_token_id,
                               state_dir, log)
    return model, tok, report
