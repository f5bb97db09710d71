"""Pair-wise metrics on pandas frames (benchmarks and tests): AUC and UAUC per warm/cold segment via sklearn."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

SEGMENTS = ("all", "warm", "cold", "cold_item")


def segment_masks(df: pd.DataFrame) -> dict[str, np.ndarray]:
    warm = df["warm"].to_numpy(bool)
    return {"all": np.ones(len(df), bool), "warm": warm, "cold": ~warm, "cold_item": df["cold_item"].to_numpy(bool)}


def auc_uauc(df: pd.DataFrame, score: str = "score") -> dict:
    """{segment: {auc, uauc, pairs, users}}; UAUC = mean per-user AUC over users with both classes."""
    out = {}
    for seg, m in segment_masks(df).items():
        part = df[m]
        a = float(roc_auc_score(part["label"], part[score])) if part["label"].nunique() == 2 else None
        per_user = [roc_auc_score(g["label"], g[score]) for _, g in part.groupby("user_id")
                    if g["label"].nunique() == 2]
        out[seg] = {"auc": a, "uauc": float(np.mean(per_user)) if per_user else None, "pairs": int(len(part)),
                    "uauc_users": len(per_user)}
    return out
