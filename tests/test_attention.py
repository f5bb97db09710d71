"""Split block attention (collm_udf/core/attention.py) against the reference: the dense segment mask."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention.bias import CausalBias

from collm_udf.core import attention
from helpers import HISTORIES, make, rows_for, scores

def gradients(model, rows, kernel):
    """All parameter gradients of one backward pass through the given block kernel, flattened."""
    model.zero_grad()
    scores(model, rows, kernel).square().sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


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

    def spy(q, k, v, mask, **kw):
        shapes.append(None if mask is None or isinstance(mask, CausalBias) else tuple(mask.shape))
        return real_sdpa(q, k, v, mask, **kw)

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
    grads = {kernel: gradients(model, rows, kernel) for kernel in ("dense", "split")}
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

    from collm_udf.core.attention import segment_mask

    seg = torch.tensor([[0, 0, 1, 1, 2, 2, 2, -1]])
    lay = attention.Layout.of(seg, causal=True)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 4, generator=g) for _ in range(3))
    module = torch.nn.Module()
    attention._active.layout, attention._active.original = lay, "sdpa"
    try:
        got, _ = attention.block_attention(module, q, k, v, None, sliding_window=4)
        split, _ = attention.block_attention(module, q, k, v, None)
    finally:
        attention._active.layout = attention._active.original = None
    with pytest.raises(RuntimeError, match="outside use_block_attention"):
        attention.block_attention(module, q, k, v, None)
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


def _save_tiny(d, name):
    """Causal LMs whose attention needs what the split path lacks: Gemma2 (logit softcapping, eager attention)
    and GPT-OSS (attention sinks, non-trivial here)."""
    import transformers as T

    from helpers import tokenizer_files

    torch.manual_seed(0)
    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8)
    if name == "gemma2":
        m = T.Gemma2ForCausalLM(T.Gemma2Config(**common, intermediate_size=64))
    else:
        m = T.GptOssForCausalLM(T.GptOssConfig(**common, intermediate_size=32, num_local_experts=2,
                                               num_experts_per_tok=1, layer_types=["full_attention"] * 2))
        with torch.no_grad():
            for layer in m.model.layers:
                layer.self_attn.sinks.normal_(0, 2.0)
    m.save_pretrained(d)
    tokenizer_files(d)
    return str(d)


@pytest.mark.parametrize("name", ["gemma2", "gpt_oss"])
def test_models_with_softcap_or_sinks_fall_back_to_their_own_attention(name, tmp_path):
    """The fallback calls the model's own (eager) attention with the dense mask: softcaps and sinks are kept."""
    model, tok, pb = make(_save_tiny(tmp_path, name), "causal")
    model.eval()
    rows = rows_for(pb, tok.pad_token_id, HISTORIES)
    with torch.no_grad():
        dense, split = scores(model, rows, "dense"), scores(model, rows, "split")
    torch.testing.assert_close(split, dense, rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_trains_on_the_dense_mask(tiny_encoder):
    """Checkpointing recomputes attention in backward, after the split pass has switched back: the model must
    not take the split path then, or its gradients would come from attention without any block mask."""
    model, tok, pb = make(tiny_encoder, "encoder", tuning="full")
    model.set_stage("text")
    model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    for m in model.modules():  # training mode for checkpointing, but no dropout: two passes must agree
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    rows = rows_for(pb, tok.pad_token_id, HISTORIES)
    grads = {kernel: gradients(model, rows, kernel) for kernel in ("dense", "split")}
    torch.testing.assert_close(grads["split"], grads["dense"], rtol=1e-4, atol=1e-6)


def test_one_pass_at_a_time_and_the_row_format_is_checked(tiny_causal):
    model, tok, pb = make(tiny_causal, "causal")
    hf = model.backbone
    lay = attention.Layout.of(torch.tensor([[0, 0, 1, 1, 2, -1]]), causal=True)
    with attention.use_block_attention(hf, lay):
        with pytest.raises(RuntimeError, match="one forward pass at a time"):
            with attention.use_block_attention(hf, lay):
                pass
    assert hf.config._attn_implementation != attention.IMPL
    with pytest.raises(ValueError, match="prefix"):
        attention.Layout.of(torch.tensor([[0, 1, 0, 2, -1]]), causal=True)
    with pytest.raises(ValueError, match="contiguous"):
        attention.Layout.of(torch.tensor([[0, 1, 2, 1, -1]]), causal=True)
