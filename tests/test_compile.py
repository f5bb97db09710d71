"""The scorer's compile option and the bucketed batch shapes it relies on (CPU, eager: fast). The compiled path
itself runs in tests/test_gpu.py (pytest -m gpu)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from collm_udf.core import checkpoint
from collm_udf.core.batching import bucket, pad_to_buckets
from collm_udf.core.inference import load_predict_fn, predict_packed
from helpers import HISTORIES, make, pairs, rows_for


def test_buckets_are_few_and_pad_little():
    assert [bucket(n, 4) for n in (1, 4, 5, 9, 17, 33, 40, 41)] == [1, 4, 5, 10, 20, 40, 40, 48]
    sizes = {bucket(n, 8) for n in range(1025, 2049)}
    assert len(sizes) == 8 and all(bucket(n, 8) >= n for n in range(1, 5000))
    assert max(bucket(n, 8) / n for n in range(9, 5000)) <= 1 + 1 / 8


@pytest.mark.parametrize("kind", ["encoder", "causal"])
@pytest.mark.parametrize("kernel", ["split", "dense"])
def test_padding_to_buckets_leaves_scores_unchanged(kind, kernel, tiny_encoder, tiny_causal):
    model, tok, pb = make(tiny_encoder if kind == "encoder" else tiny_causal, kind)
    model.eval().block_kernel = kernel
    rows = rows_for(pb, tok.pad_token_id, HISTORIES * 3)  # 9 users, several rows each
    padded = pad_to_buckets(rows, tok.pad_token_id)
    R, T = rows["input_ids"].shape
    assert padded["input_ids"].shape == (bucket(R, 4), bucket(T, 8)) != (R, T)  # the test pads something
    with torch.no_grad():
        np.testing.assert_allclose(model(**padded).numpy(), model(**rows).numpy(), rtol=1e-5, atol=1e-6)
    ps = pairs(60).encode(pb)
    eager = predict_packed(model, pb, ps, tok.pad_token_id, max_row_tokens=60, batch_tokens=300, bf16="off")
    bucketed = predict_packed(model, pb, ps, tok.pad_token_id, max_row_tokens=60, batch_tokens=300, bf16="off",
                              buckets=True)
    np.testing.assert_allclose(bucketed, eager, rtol=1e-5, atol=1e-6)


def test_compile_option_on_cpu_defaults_to_eager(tiny_causal, tmp_path):
    model, tok, pb = make(tiny_causal, "causal")
    checkpoint.save(model, tmp_path / "c")
    layers = lambda fn: fn.model.backbone.model.layers  # noqa: E731
    auto = load_predict_fn(str(tmp_path / "c"), "cpu")
    assert auto.compiled is False and all(layer._compiled_call_impl is None for layer in layers(auto))
    on = load_predict_fn(str(tmp_path / "c"), "cpu", compile="on")  # compiles lazily, at the first call
    assert on.compiled is True and all(layer._compiled_call_impl is not None for layer in layers(on))
    with pytest.raises(ValueError, match="compile: 'yes' is not auto, on or off"):
        load_predict_fn(str(tmp_path / "c"), "cpu", compile="yes")
    ps = pairs(20).encode(pb)
    args = (ps.history, ps.candidate, ps.user_f, ps.item_f, ps.user_has, ps.item_has)
    off = load_predict_fn(str(tmp_path / "c"), "cpu", compile="off")
    np.testing.assert_array_equal(auto(*args), off(*args))  # CPU default: the eager path, bit for bit
