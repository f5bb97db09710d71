"""Factor-space alignment: a projector trained on one ALS run must not silently score another run's factors.

A retrained ALS model spans a different basis: U' V'^T ~ U V^T, but U' ~ U R for some R, so the projector's
input means something else. align() fits the orthogonal R (scipy's orthogonal Procrustes) that maps the new
run's item factors onto the reference run's on the items both know, and measures the relative residual
||V_new R - V_ref||_F / ||V_ref||_F. Under the threshold, new user and item factors are scored as f @ R (an
orthogonal R keeps every u . v); over it, or with too few shared items, it raises, and the CoLLM scorer
scores with the reference run's own factors instead (collm_udf/spark/scorers/collm.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy.linalg import orthogonal_procrustes


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


def align(reference: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], reference_run: str, new_run: str,
          max_residual: float, min_shared: int = 20) -> Alignment:
    """Fit new -> reference on shared item ids; raise AlignmentError naming both runs when it does not fit."""
    shared = sorted(set(reference) & set(new))
    if len(shared) < min_shared:
        raise AlignmentError(f"CoLLM model trained on ALS run {reference_run} cannot score factors of ALS run "
                             f"{new_run}: only {len(shared)} shared items (need {min_shared}) to align them; "
                             "retrain the model (stage train) on the new run", shared_items=len(shared))
    A = np.stack([new[i] for i in shared]).astype(np.float64)
    B = np.stack([reference[i] for i in shared]).astype(np.float64)
    if A.shape[1] != B.shape[1]:
        raise AlignmentError(f"ALS run {new_run} has rank {A.shape[1]}, the model's run {reference_run} has rank "
                             f"{B.shape[1]}: retrain the model on the new run", shared_items=len(shared))
    R, _ = orthogonal_procrustes(A, B)
    residual = float(np.linalg.norm(A @ R - B) / max(np.linalg.norm(B), 1e-12))
    if residual > max_residual:
        raise AlignmentError(f"CoLLM model trained on ALS run {reference_run} cannot score factors of ALS run "
                             f"{new_run}: the best rotation leaves a relative residual of {residual:.3f} on "
                             f"{len(shared)} shared items (limit score.max_alignment_residual = {max_residual}); "
                             "retrain the model (stage train) on the new run", residual, len(shared))
    return Alignment(reference_run, new_run, R.astype(np.float32), residual, len(shared))
