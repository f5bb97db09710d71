"""Factor-space alignment: a projector trained on one ALS run must not silently score another run's factors.

A retrained ALS model spans a different basis: U' V'^T ~ U V^T, but U' ~ U R for some R, so the projector's
input means something else. align() fits the orthogonal R (orthogonal Procrustes) that maps the new run's item
factors A onto the reference run's B on the items both know, and measures the relative residual
||A R - B||_F / ||B||_F. Under the threshold, new user and item factors are scored as f @ R (an orthogonal R keeps
every u . v); over it, or with too few shared items, it raises, and the CoLLM scorer scores with the reference
run's own factors instead (collm_udf/spark/scorers/collm.py).

Both need only the shared items' Moments, sums over items: their count, the d x d cross-product A^T B and the
squared norms ||A||^2, ||B||^2. R = U V^T from the SVD U S V^T of A^T B, and ||A R - B||^2 = ||A||^2 + ||B||^2 -
2 tr(S) (R is orthogonal). So a warehouse's factors never need to meet in one place: Spark sums the moments of
each partition and the driver holds d x d numbers (collm_udf/spark/scorers/collm.py: factor_moments).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np


class AlignmentError(ValueError):
    """The rotation does not fit; residual and shared_items say how badly (None where it was not fitted)."""

    def __init__(self, message: str, residual: float | None = None, shared_items: int | None = None):
        super().__init__(message)
        self.residual, self.shared_items = residual, shared_items


@dataclass
class Alignment:
    reference_run: str  # the projector's als_run_id
    new_run: str  # the run whose factors are scored
    rotation: np.ndarray  # (d, d): new factors @ rotation ~ reference factors
    residual: float  # relative Frobenius residual on the shared items
    shared_items: int

    @classmethod
    def identity(cls, run: str, d: int) -> "Alignment":
        return cls(run, run, np.eye(d, dtype=np.float32), 0.0, 0)

    def apply(self, f: np.ndarray) -> np.ndarray:
        return (np.asarray(f, np.float32) @ self.rotation).astype(np.float32)


@dataclass(frozen=True)
class Moments:
    """Sums over the items both runs know, A (new run) and B (reference run) their factor rows."""
    shared: int  # items
    cross: np.ndarray  # (d_new, d_ref): A^T B, float64
    new_sq: float  # ||A||_F^2
    ref_sq: float  # ||B||_F^2

    @classmethod
    def of(cls, new: np.ndarray, reference: np.ndarray) -> "Moments":
        """new, reference: (n, d_new) and (n, d_ref), row i the same item's factors in each run."""
        A, B = np.asarray(new, np.float64), np.asarray(reference, np.float64)
        return cls(len(A), A.T @ B, float(np.square(A).sum()), float(np.square(B).sum()))

    def __add__(self, other: "Moments") -> "Moments":
        return Moments(self.shared + other.shared, self.cross + other.cross, self.new_sq + other.new_sq,
                       self.ref_sq + other.ref_sq)


def align(reference: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], reference_run: str, new_run: str,
          max_residual: float, min_shared: int = 20) -> Alignment:
    """Fit new -> reference on shared item ids (factors as {item_id: vector}); see align_moments."""
    shared = sorted(set(reference) & set(new))
    if not shared:
        return align_moments(None, reference_run, new_run, max_residual, min_shared)
    return align_moments(Moments.of(np.stack([new[i] for i in shared]), np.stack([reference[i] for i in shared])),
                         reference_run, new_run, max_residual, min_shared)


def align_moments(m: Moments | None, reference_run: str, new_run: str, max_residual: float,
                  min_shared: int = 20) -> Alignment:
    """The rotation of the shared items' moments (None: no shared item); raise AlignmentError naming both runs
    when it does not fit."""
    n = 0 if m is None else m.shared
    if n < min_shared:
        raise AlignmentError(f"CoLLM model trained on ALS run {reference_run} cannot score factors of ALS run "
                             f"{new_run}: only {n} shared items (need {min_shared}) to align them; "
                             "retrain the model (stage train) on the new run", shared_items=n)
    d_new, d_ref = m.cross.shape
    if d_new != d_ref:
        raise AlignmentError(f"ALS run {new_run} has rank {d_new}, the model's run {reference_run} has rank "
                             f"{d_ref}: retrain the model on the new run", shared_items=n)
    u, s, vt = np.linalg.svd(m.cross)
    R = u @ vt  # (d, d): argmin over orthogonal R of ||A R - B||_F
    residual = float(np.sqrt(max(m.new_sq + m.ref_sq - 2.0 * s.sum(), 0.0)) / max(np.sqrt(m.ref_sq), 1e-12))
    if residual > max_residual:
        raise AlignmentError(f"CoLLM model trained on ALS run {reference_run} cannot score factors of ALS run "
                             f"{new_run}: the best rotation leaves a relative residual of {residual:.3f} on "
                             f"{n} shared items (limit score.max_alignment_residual = {max_residual}); "
                             "retrain the model (stage train) on the new run", residual, n)
    return Alignment(reference_run, new_run, R.astype(np.float32), residual, n)
