"""Split block attention (collm_udf/attention.py) against the reference: the dense segment mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention.bias import CausalBias

from collm_udf import attention
from collm_udf.batching import UserGroup, pack
from conftest import D, make

HISTORIES = [["Toy Story (1995)"], ["Toy Story (1995)", "Fargo (1996)", "Heat (1995)"], ["Alien (1979)", "Heat"]]


def rows_for(pb, pad_id, histories, per_user=5, max_row_tokens=110, seed=0):
    """Packed rows: each user's prefix, then candidate parts of different lengths, several rows per user."""
    rng = np.random.default_rng(seed)
    groups = []
    for u, hist in enumerate(histories):
        prefix, upos = pb.encode_prefix(hist)
        parts = [pb.encode_candidate(f"Candidate {u}-{c}" + " word" * int(rng.integers(0, 4))) for c in range(per_user)]
        groups.append(UserGroup(prefix, upos, rng.normal(size=D).astype(np.float32), u != 1, parts,
                                rng.normal(size=(per_user, D)).astype(np.float32), np.arange(per_user) % 3 != 0))
    rows, _ = pack(groups, pad_id, max_row_tokens)
    return rows


def scores(model, rows, kernel):
    model.block_kernel = kernel
    try:
        return model(**rows)
    finally:
        model.block_kernel = "auto"


@pytest.mark.parametrize("kind", ["encoder", "causal"])
@pytest.mark.parametrize("same_prefix", [False, True])
def test_split_equals_dense_mask_and_runs_without_dense_mask(kind, same_prefix, tiny_encoder, tiny_causal,
                                                             monkeypatch):
    model, tok, pb = make(tiny_encoder if kind == "encoder" else tiny_causal, kind)
    model.eval()
    rows = rows_for(pb, tok.pad_token_id, HISTORIES[1:2] * 2 if same_prefix else HISTORIES)
    assert int(rows["segment"].max()) > 1  # several candidates per row: the packed case
    shapes = []
    real_sdpa = attention._sdpa

    def spy(q, k, v, mask, *a):
        shapes.append(None if mask is None or isinstance(mask, CausalBias) else tuple(mask.shape))
        return real_sdpa(q, k, v, mask, *a)

    monkeypatch.setattr(attention, "_sdpa", spy)
    with torch.no_grad():
        dense = scores(model, rows, "dense")
        auto = scores(model, rows, "auto")
        assert shapes == []  # the reference never calls the split attention, nor does "auto" on a CPU
        split = scores(model, rows, "split")
    rel = ((split - dense).abs() / dense.abs().clamp(min=1e-3)).max()
    assert rel < 1e-5, rel
    assert torch.equal(auto, dense)
    layers = model.backbone.config.num_hidden_layers
    assert len(shapes) == 2 * layers  # prefix + candidates, per layer
    T = rows["input_ids"].shape[1]
    assert all(s is None or s[-1] < T for s in shapes)  # never a (T, T) mask
    if kind == "causal" and same_prefix:
        assert shapes == [None] * (2 * layers)  # is_causal and lower-right causal: flash-eligible, no mask
    # the backbone's own attention implementation is back in place after the pass
    hf = model.backbone.get_base_model() if hasattr(model.backbone, "get_base_model") else model.backbone
    assert hf.config._attn_implementation != attention.IMPL


@pytest.mark.parametrize("kind", ["encoder", "causal"])
def test_split_gradients_equal_dense_mask(kind, tiny_encoder, tiny_causal):
    """Training the encoder goes through the split attention: its gradients are the dense mask's."""
    model, tok, pb = make(tiny_encoder if kind == "encoder" else tiny_causal, kind, tuning="full")
    model.eval()  # no dropout: the two passes must be comparable
    model.set_stage("text")
    rows = rows_for(pb, tok.pad_token_id, HISTORIES)
    grads = {}
    for kernel in ("dense", "split"):
        model.zero_grad()
        scores(model, rows, kernel).square().sum().backward()
        grads[kernel] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert grads["split"].abs().sum() > 0
    torch.testing.assert_close(grads["split"], grads["dense"], rtol=1e-4, atol=1e-6)


def test_layout_masks_only_where_lengths_differ():
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, -1],
                        [0, 0, 1, 1, 1, 1, -1, -1, -1]])
    lay = attention.Layout.of(seg, causal=True)
    assert lay.pmax == 3
    assert lay.cand_row.tolist() == [0, 0, 1]
    assert lay.cand_pos.tolist() == [[3, 4, 4, 4], [5, 6, 7, 7], [2, 3, 4, 5]]
    assert lay.cand_valid.sum(1).tolist() == [2, 3, 4]
    # row 1's prefix is shorter: its second prefix position is masked, its candidate never sees position 2
    assert lay.prefix_mask[1, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert lay.cand_mask[2, 0, 0].tolist() == [True, True, False, True, False, False, False]
    assert lay.cand_mask[0, 0, 1].tolist() == [True, True, True, True, True, False, False]
    same = attention.Layout.of(seg[:1], causal=True)
    assert same.prefix_mask is None and same.cand_mask is None
    assert attention.Layout.of(seg[:1], causal=False).cand_mask is not None  # parts of 2 and 3 tokens


def test_unsupported_features_fall_back_to_the_dense_mask():
    """A sliding window shorter than the row is not implemented by the split path: SDPA with the dense mask."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from collm_udf.model import segment_mask

    seg = torch.tensor([[0, 0, 1, 1, 2, 2, 2, -1]])
    lay = attention.Layout.of(seg, causal=True)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 4, generator=g) for _ in range(3))
    module = torch.nn.Module()
    attention._active.layout = lay
    try:
        got, _ = attention.block_attention(module, q, k, v, None, sliding_window=4)
        split, _ = attention.block_attention(module, q, k, v, None)
    finally:
        attention._active.layout = None
    ref, _ = sdpa_attention_forward(module, q, k, v, segment_mask(seg, True, q.dtype), is_causal=False,
                                    sliding_window=4)
    torch.testing.assert_close(got, ref)
    real = (seg >= 0)[0]
    torch.testing.assert_close(split[:, real], ref[:, real], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["encoder", "causal"])
def test_split_under_bf16_autocast(kind, tiny_encoder, tiny_causal):
    """GPUs score under bf16 autocast; Qwen2's rotary hands fp32 q/k beside a bf16 v to the attention function."""
    model, tok, pb = make(tiny_encoder if kind == "encoder" else tiny_causal, kind)
    model.eval()
    for histories in (HISTORIES, HISTORIES[1:2] * 2):  # masked and mask-free (lower-right causal) paths
        rows = rows_for(pb, tok.pad_token_id, histories)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            dense, split = scores(model, rows, "dense"), scores(model, rows, "split")
        assert split.dtype == torch.float32 and torch.isfinite(split).all()
        torch.testing.assert_close(split, dense, rtol=3e-2, atol=3e-2 * float(dense.abs().max()))
