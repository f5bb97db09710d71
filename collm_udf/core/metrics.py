"""Pair-wise metrics: the one AUC of the project (None when the labels hold one class) and AUC / UAUC per
warm/cold segment of a pandas frame (benchmarks, tests, the evaluate stage's per-user AUC). sklearn is imported
when a metric is computed: scoring machines need none."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SEGMENTS = ("all", "warm", "cold", "cold_item")


def auc(labels, scores) -> Optional[float]:
    """ROC AUC of scores against 0/1 labels; None when one class is absent (JSON null, never NaN)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None


def segment_masks(df: "pd.DataFrame") -> dict[str, np.ndarray]:
    warm = df["warm"].to_numpy(bool)
    return {"all": np.ones(len(df), bool), "warm": warm, "cold": ~warm, "cold_item": df["cold_item"].to_numpy(bool)}


def auc_uauc(df: "pd.DataFrame", score: str = "score") -> dict:
    """{segment: {auc, uauc, pairs, users}}; UAUC = mean per-user AUC over users with both classes."""
    out = {}
    for seg, m in segment_masks(df).items():
        part = df[m]
        a = auc(part["label"], part[score])
        per_user = [a for a in (auc(g["label"], g[score]) for _, g in part.groupby("user_id")) if a is not None]
        out[seg] = {"auc": a, "uauc": float(np.mean(per_user)) if per_user else None, "pairs": int(len(part)),
                    "uauc_users": len(per_user)}
    return out
