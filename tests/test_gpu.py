"""The production core on a GPU: `pytest -m gpu` on a machine with CUDA (skipped elsewhere, so `make test` is
unchanged). Tiny random backbones (fixtures in conftest, built by tests/helpers.py); no pyspark is needed (GPU
machines have no JVM).

Tolerances: fp32 split vs dense as on CPU (1e-4 relative); bf16 autocast against the fp32 dense reference within
5e-2 relative (bf16 keeps 8 bits of mantissa; the scores are sums over a few hundred products)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from collm_udf.core import checkpoint
from collm_udf.core.inference import load_predict_fn, pick_device
from collm_udf.core.spec import StageSettings
from collm_udf.core.training import train_stage
from collm_udf.core.inference import predict
from helpers import HISTORIES, make, pairs, rows_for, scores

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m gpu on one)")]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.float() - b.float()).abs() / b.float().abs().clamp(min=1e-3)).max())


@pytest.mark.parametrize("kind", ["encoder", "causal"])
def test_split_equals_dense_on_gpu_fp32_and_bf16(kind, tiny_encoder, tiny_causal):
    model, tok, pb = make(tiny_encoder if kind == "encoder" else tiny_causal, kind)
    model.eval().to("cuda")
    rows = {k: v.to("cuda") for k, v in rows_for(pb, tok.pad_token_id, HISTORIES).items()}
    with torch.no_grad():
        dense = scores(model, rows, "dense")
        split = scores(model, rows, "split")
        auto = scores(model, rows, "auto")  # on a GPU, auto is the split
        with torch.autocast("cuda", dtype=torch.bfloat16):
            split_bf16 = scores(model, rows, "split")
            dense_bf16 = scores(model, rows, "dense")
    assert _rel(split, dense) < 1e-4
    assert torch.equal(auto, split)
    assert _rel(split_bf16, dense) < 5e-2 and _rel(dense_bf16, dense) < 5e-2


def test_device_choice_prefers_the_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pick_device().type == "cuda"
    assert pick_device("cpu").type == "cpu"


def test_a_checkpoint_loads_onto_the_gpu_and_scores_as_on_cpu(tiny_encoder, tmp_path):
    model, tok, pb = make(tiny_encoder)
    checkpoint.save(model, tmp_path / "c")
    ps = pairs(40).encode(pb)
    args = (ps.history, ps.candidate, ps.user_f, ps.item_f, ps.user_has, ps.item_has)
    cpu = load_predict_fn(str(tmp_path / "c"), "cpu", bf16="off")(*args)
    gpu_fn = load_predict_fn(str(tmp_path / "c"), bf16="off")
    assert gpu_fn.device.type == "cuda" and next(gpu_fn.model.parameters()).is_cuda
    np.testing.assert_allclose(gpu_fn(*args), cpu, rtol=1e-4, atol=1e-5)
    bf16 = load_predict_fn(str(tmp_path / "c"), bf16="on")(*args)
    np.testing.assert_allclose(bf16, cpu, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("bf16", ["off", "on"])
def test_a_training_step_on_the_gpu_learns(bf16, tiny_encoder):
    model, tok, pb = make(tiny_encoder)
    model.to("cuda")
    ps, hold = pairs(96).encode(pb), pairs(48, seed=1).encode(pb)
    before = {n: p.detach().clone() for n, p in model.projector.named_parameters()}
    out = train_stage(model, "cf", ps, hold, StageSettings(lr=5e-3, epochs=1, batch_size=16, bf16=bf16),
                      tok.pad_token_id, log=lambda m: None)
    assert np.isfinite(out["best_auc"])
    assert any(not torch.equal(p, before[n]) for n, p in model.projector.named_parameters())
    assert np.isfinite(predict(model, hold, tok.pad_token_id, use_cf=True, bf16=bf16)).all()


@pytest.mark.parametrize("kind, bf16", [("encoder", "off"), ("causal", "on")])
def test_compiled_scores_equal_eager_on_gpu(kind, bf16, tiny_encoder, tiny_causal, tmp_path):
    """compile='auto' compiles on a GPU; bucketed batches of several shapes score as the eager path does."""
    model, tok, pb = make(tiny_encoder if kind == "encoder" else tiny_causal, kind)
    checkpoint.save(model, tmp_path / "c")
    ps = pairs(90)
    ps.user_f[:] = ps.user_f[np.arange(90) // 10]  # users of 10 candidates: packed rows of several candidates
    args = (ps.history, ps.candidate, ps.user_f, ps.item_f, ps.user_has, ps.item_has)
    kw = dict(bf16=bf16, max_row_tokens=60, batch_tokens=600)  # two batches of several rows: two shapes
    eager = load_predict_fn(str(tmp_path / "c"), compile="off", **kw)
    compiled = load_predict_fn(str(tmp_path / "c"), **kw)
    assert compiled.compiled and not eager.compiled and compiled.device.type == "cuda"
    tol = 1e-4 if bf16 == "off" else 5e-2
    for kernel in ("split", "dense"):
        eager.model.block_kernel = compiled.model.block_kernel = kernel
        np.testing.assert_allclose(compiled(*args), eager(*args), rtol=tol, atol=tol)
