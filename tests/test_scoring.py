"""Scoring core without Spark: device choice and factor-space alignment."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from collm_udf.core import inference as scoring
from collm_udf.core.align import AlignmentError, align


@pytest.mark.parametrize("cuda, count, addrs, prefer, want", [
    (False, 0, ["0"], None, "cpu"),          # no CUDA: CPU whatever Spark says
    (True, 2, ["1"], None, "cuda:1"),        # the GPU Spark assigned to the task
    (True, 1, ["3"], None, "cuda:0"),        # executor isolated to one visible GPU: it is device 0
    (True, 2, [], None, "cuda:0"),           # no Spark assignment: first of CUDA_VISIBLE_DEVICES
    (True, 2, ["1"], "cpu", "cpu"),          # conf wins
])
def test_device_choice(monkeypatch, cuda, count, addrs, prefer, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert str(scoring.pick_device(prefer, addrs)) == want


def _factors(n=200, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return {f"i{k}": rng.normal(size=d).astype(np.float32) for k in range(n)}


def test_alignment_recovers_a_rotation_and_keeps_dot_products():
    ref = _factors()
    Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))
    noise = np.random.default_rng(2)
    new = {k: v @ Q.T + 0.01 * noise.normal(size=8) for k, v in ref.items()}
    a = align(ref, new, "als_ref", "als_new", max_residual=0.1)
    assert a.residual < 0.02 and a.shared_items == 200
    np.testing.assert_allclose(a.apply(new["i3"]), ref["i3"], atol=0.05)


def test_alignment_from_summed_moments_equals_scipys_procrustes_on_the_whole_matrices():
    from scipy.linalg import orthogonal_procrustes

    from collm_udf.core.align import Moments, align_moments

    rng = np.random.default_rng(3)
    B = rng.normal(size=(300, 8))
    A = B @ np.linalg.qr(rng.normal(size=(8, 8)))[0] + 0.3 * rng.normal(size=(300, 8))  # a rotation plus noise
    R, _ = orthogonal_procrustes(A, B)
    chunks = [Moments.of(A[i:i + 70], B[i:i + 70]) for i in range(0, 300, 70)]  # what Spark's partitions sum
    got = align_moments(sum(chunks[1:], chunks[0]), "ref", "new", max_residual=1.0)
    np.testing.assert_allclose(got.rotation, R, atol=1e-5)
    assert got.shared_items == 300
    assert got.residual == pytest.approx(np.linalg.norm(A @ R - B) / np.linalg.norm(B), rel=1e-6)
    with pytest.raises(AlignmentError, match="rank 8, the model's run ref has rank 6"):
        align_moments(Moments.of(A, B[:, :6]), "ref", "new", max_residual=1.0)


def test_alignment_refuses_unrelated_factors_and_too_few_shared_items():
    ref, other = _factors(seed=0), _factors(seed=5)
    with pytest.raises(AlignmentError, match=r"ALS run als_ref cannot score factors of ALS run als_new.*residual"):
        align(ref, other, "als_ref", "als_new", max_residual=0.25)
    few = {k: ref[k] for k in list(ref)[:5]}
    with pytest.raises(AlignmentError, match="only 5 shared items"):
        align(few, ref, "als_ref", "als_new", max_residual=0.25)


def test_factor_columns_become_zeros_and_masks_and_a_wrong_length_is_refused():
    import pandas as pd

    from collm_udf.core.pairs import factor_matrix

    f, has = factor_matrix(pd.Series([[1.0, 2.0], None, np.array([3.0, 4.0]), float("nan")]), 2, "user_factors")
    np.testing.assert_array_equal(f, [[1, 2], [0, 0], [3, 4], [0, 0]])
    assert has.tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="user_factors, row 1: 3 factors; the model was trained on 2"):
        factor_matrix([[1.0, 2.0], [1.0, 2.0, 3.0]], 2, "user_factors")
