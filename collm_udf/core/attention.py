"""Block attention without a dense mask: a prefix attends to itself, each candidate to [its prefix ; itself].

A row (collm_udf/core/batching.py) holds a user prefix (segment 0) and one or more candidate parts (segments 1..n).
The reference semantics are segment_mask below, a dense (R, 1, T, T) mask: it costs T^2 per row, mostly spent on
masked pairs, and keeps SDPA off its flash kernels. Here the same attention is computed in two exact pieces:

  prefix     : row r's queries 0..P_r-1 over its keys 0..P_r-1 (causal for a causal LM)   q (R, H, Pmax, D)
  candidates : each candidate's queries over [its row's prefix K/V ; its own K/V]            q (N, H, Cmax, D)
               (causal: lower-right, query i sees the whole prefix and its own keys 0..i)    k (N, KVH, Pmax+Cmax, D)

so attention work is about R*P^2 + N*C*(P+C) instead of R*T^2, and the linear layers still run on the packed
tokens only. A mask is passed only where lengths differ (prefixes of different lengths in one batch, or an
encoder's candidate parts of different lengths), and then it is small: (N, 1, Cmax, Pmax+Cmax). A causal LM
whose batch shares one prefix length needs no mask at all: a candidate part is padded after its real tokens and
lower-right causal attention never lets a real query reach that padding.

The function is registered as a transformers attention implementation ("collm_block") and switched on only
around one forward pass (`use_block_attention`), so every model class that routes attention through
ALL_ATTENTION_FUNCTIONS (`_supports_attention_backend`: Llama, Qwen2, Mistral, BERT, ...) gets it unchanged.
What it does not implement (logit softcapping, sliding windows shorter than the row, attention sinks, position
bias) falls back, layer by layer, to the model's own attention function (its SDPA, else its eager one) with the
dense mask. One forward pass at a time per model object (the implementation is switched on its config): the
scorer holds one model per Python worker process; a second concurrent pass is refused. Nothing here imports
pyspark.
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

IMPL = "collm_block"
_active = threading.local()  # .layout, .original: the forward pass in progress on this thread


def segment_mask(segment: torch.Tensor, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask (R, 1, T, T): query t sees key u iff u is real and in the prefix (segment 0)
    or in t's own segment, and (causal) u <= t. A prefix token therefore never sees a candidate."""
    q, k = segment.unsqueeze(2), segment.unsqueeze(1)  # (R, T, 1), (R, 1, T)
    allowed = (k >= 0) & ((k == 0) | (k == q))
    if causal:
        T = segment.shape[1]
        allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=segment.device).tril()
    # Padding queries see nothing; give them their own position so no softmax row is empty (no NaN).
    allowed = allowed | torch.eye(segment.shape[1], dtype=torch.bool, device=segment.device)
    zero = torch.zeros((), dtype=dtype, device=segment.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min).unsqueeze(1)


@dataclass
class Layout:
    """Where each row's prefix and each candidate part lie, computed once per forward pass (all on one device)."""

    segment: torch.Tensor  # (R, T) the row format's segment ids, kept for the dense fallback
    causal: bool
    pmax: int  # longest prefix in the batch
    prefix_mask: Optional[torch.Tensor]  # (R, 1, Pmax, Pmax) bool, None when every prefix has length Pmax
    cand_row: torch.Tensor  # (N,) the row of each candidate part
    cand_pos: torch.Tensor  # (N, Cmax) its token positions in the row; padding repeats the last one
    cand_valid: torch.Tensor  # (N, Cmax) bool, False on padding
    cand_mask: Optional[torch.Tensor]  # (N, 1, Cmax, Pmax+Cmax) bool, None when lower-right causal is exact
    _dense: dict = field(default_factory=dict, repr=False)  # dtype -> the fallback's dense mask, built once

    def dense_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The reference (R, 1, T, T) mask, for layers that fall back: built once per pass, not per layer."""
        if dtype not in self._dense:
            self._dense[dtype] = segment_mask(self.segment, self.causal, dtype)
        return self._dense[dtype]

    @classmethod
    def of(cls, segment: torch.Tensor, causal: bool) -> "Layout":
        seg = segment.detach().cpu().numpy()
        R, T = seg.shape
        plen = (seg == 0).sum(1)  # (R,) the prefix is a row's first tokens
        rr, pp = np.nonzero(seg > 0)  # real candidate tokens, in row-major order: each part is contiguous
        ss = seg[rr, pp]
        if len(rr) == 0:
            raise ValueError("block attention: a batch without candidate parts")
        first = np.ones(len(rr), bool)
        first[1:] = (rr[1:] != rr[:-1]) | (ss[1:] != ss[:-1])
        start = np.flatnonzero(first)
        # The row format (collm_udf/core/batching.py) this relies on: prefix first, each part one contiguous run.
        if ((seg == 0) != (np.arange(T)[None, :] < plen[:, None])).any():
            raise ValueError("block attention: a row whose prefix (segment 0) is not its first tokens")
        if len(start) != len(np.unique(rr[start] * (int(seg.max()) + 1) + ss[start])):
            raise ValueError("block attention: a candidate part that is not one contiguous run of tokens")
        length = np.diff(np.append(start, len(rr)))  # (N,)
        cmax, pmax = int(length.max()), int(plen.max())
        c = np.arange(cmax)
        pos = pp[start][:, None] + np.minimum(c[None, :], length[:, None] - 1)  # (N, Cmax)
        valid = c[None, :] < length[:, None]
        same_prefix = bool((plen == pmax).all())

        prefix_mask = cand_mask = None
        if not same_prefix:
            i, j = np.arange(pmax)[:, None], np.arange(pmax)[None, :]
            m = j[None] < plen[:, None, None]  # keys inside the row's prefix
            if causal:
                m = m & (j <= i)[None]
            prefix_mask = torch.from_numpy((m | (i == j)[None])[:, None])  # a query past P_r still sees itself
        if not same_prefix or (not causal and not valid.all()):
            in_prefix = np.arange(pmax)[None, :] < plen[rr[start]][:, None]  # (N, Pmax)
            own = np.broadcast_to(valid[:, None, :], (len(start), cmax, cmax))  # keys: the part's real tokens
            if causal:
                own = own & (c[None, :] <= c[:, None])[None]
            m = np.concatenate([np.broadcast_to(in_prefix[:, None, :], (len(start), cmax, pmax)), own], axis=2)
            cand_mask = torch.from_numpy(np.ascontiguousarray(m[:, None]))
        dev = segment.device
        return cls(segment, causal, pmax, None if prefix_mask is None else prefix_mask.to(dev),
                   torch.from_numpy(rr[start]).to(dev), torch.from_numpy(pos).to(dev),
                   torch.from_numpy(valid).to(dev), None if cand_mask is None else cand_mask.to(dev))


def supported(hf_model) -> bool:
    """Whether this Hugging Face model routes its attention through the pluggable attention functions."""
    return bool(getattr(type(hf_model), "_supports_attention_backend", False)) and hasattr(hf_model, "config")


@contextmanager
def use_block_attention(hf_model, layout: Layout):
    """Run hf_model's attention layers with block_attention for the given layout, then restore its own."""
    _register()
    config = hf_model.config
    before = config._attn_implementation
    if before == IMPL:  # another thread's pass is running on this model: its config is not ours to switch
        raise RuntimeError("block attention: one forward pass at a time per model (another is in progress)")
    _active.layout, _active.original = layout, before
    config._attn_implementation = IMPL
    try:
        yield
    finally:
        config._attn_implementation = before
        _active.layout = _active.original = None


def _original_attention(module, name: str):
    """The attention function the model had before the switch: its SDPA, else its modeling file's eager one
    (which implements everything the model needs: softcapping, sinks; flash kernels take no dense mask)."""
    if name == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        raise RuntimeError(f"block attention: {type(module).__name__} needs a feature the split path lacks and "
                           f"has no eager_attention_forward to fall back to; use block_kernel='dense'")
    return eager


def _sdpa(q, k, v, mask, *, causal, dropout, scale):
    """SDPA with grouped-query heads: native GQA where no mask is given (flash), else K/V heads repeated."""
    from torch.nn.attention.bias import CausalBias

    gqa = q.shape[1] != k.shape[1]
    if gqa and mask is not None and not isinstance(mask, CausalBias):  # lower-right causal keeps native GQA
        k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
        gqa = False
    kw = {"enable_gqa": True} if gqa else {}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal,
                                          scale=scale, **kw)


def block_attention(module, query, key, value, attention_mask, *, dropout=0.0, scaling=None, **kwargs):
    """query (B, H, L, D), key/value (B, KVH, L, D) -> ((B, L, H, D), None), exact for the active Layout."""
    lay: Optional[Layout] = getattr(_active, "layout", None)
    if lay is None:
        raise RuntimeError("block attention called outside use_block_attention (or from another thread)")
    window = kwargs.get("sliding_window")
    if (kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None or kwargs.get("position_bias")
            is not None or (window is not None and window < query.shape[2])):
        kwargs.pop("is_causal", None)
        return _original_attention(module, _active.original)(module, query, key, value, lay.dense_mask(query.dtype),
                                                              dropout=dropout, scaling=scaling, is_causal=False,
                                                              **kwargs)
    if not query.dtype == key.dtype == value.dtype:
        # Under autocast, models that apply rotary embeddings in fp32 hand over fp32 q/k beside a bf16 v; plain
        # SDPA would cast them to the autocast dtype, but its lower-right-causal dispatch checks dtypes first.
        dev = query.device.type
        dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else value.dtype
        query, key, value = query.to(dt), key.to(dt), value.to(dt)
    B, H, L, D = query.shape
    P = lay.pmax
    out = query.new_zeros(B, L, H, D)
    # 1. prefixes: (B, H, Pmax, D). Positions past a shorter row's prefix are overwritten below or are padding.
    if P:
        out_p = _sdpa(query[:, :, :P], key[:, :, :P], value[:, :, :P], lay.prefix_mask,
                      causal=lay.causal and lay.prefix_mask is None, dropout=dropout, scale=scaling)
        out[:, :P] = out_p.transpose(1, 2)
    # 2. candidate parts: gather each part's tokens (N, Cmax, heads, D), put its row's prefix K/V in front.
    q_t, k_t, v_t = (x.transpose(1, 2) for x in (query, key, value))  # (B, L, heads, D)
    row, pos = lay.cand_row, lay.cand_pos
    q_c = q_t[row[:, None], pos].transpose(1, 2)  # (N, H, Cmax, D)
    k_c, v_c = (torch.cat([x[row, :P], x[row[:, None], pos]], dim=1).transpose(1, 2) for x in (k_t, v_t))
    C = pos.shape[1]
    if lay.cand_mask is None and lay.causal:
        from torch.nn.attention.bias import causal_lower_right

        out_c = _sdpa(q_c, k_c, v_c, causal_lower_right(C, P + C), causal=False, dropout=dropout, scale=scaling)
    else:
        out_c = _sdpa(q_c, k_c, v_c, lay.cand_mask, causal=False, dropout=dropout, scale=scaling)  # (N, H, Cmax, D)
    valid = lay.cand_valid
    out[row[:, None].expand_as(pos)[valid], pos[valid]] = out_c.transpose(1, 2)[valid].to(out.dtype)
    return out, None


def _no_mask(**kwargs) -> None:
    return None  # the Layout is the mask: the model builds none


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if IMPL not in AttentionInterface._global_mapping:
        # Left out of torch.compile graphs (a graph break around it): a compiled layer then sees only shapes of
        # (rows, tokens), which the scorer pads to a few buckets, never the layout's per-batch candidate shapes.
        AttentionInterface.register(IMPL, torch.compiler.disable(block_attention))
        AttentionMaskInterface.register(IMPL, _no_mask)
