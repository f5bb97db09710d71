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


def segment_figures(part: "pd.DataFrame", score: str = "score") -> dict:
    """One segment's pairs: {auc, uauc, pairs, users, uauc_users}; UAUC = mean per-user AUC over the users whose
    pairs hold both classes (uauc_users of the `users` there)."""
    a = auc(part["label"], part[score])
    per_user = [a for a in (auc(g["label"], g[score]) for _, g in part.groupby("user_id")) if a is not None]
    return {"auc": a, "uauc": float(np.mean(per_user)) if per_user else None, "pairs": int(len(part)),
            "users": int(part["user_id"].nunique()), "uauc_users": len(per_user)}


def auc_uauc(df: "pd.DataFrame", score: str = "score") -> dict:
    """{segment: segment_figures} over SEGMENTS."""
    return {seg: segment_figures(df[m], score) for seg, m in segment_masks(df).items()}


def weighted_mean(x, w, axis=-1):
    """sum(w x) / sum(w) along axis: with w = 1 / (a day's truth users), the mean of the days' means."""
    return (x * w).sum(axis=axis) / w.sum(axis=axis)


def weighted_ratio(a, b, w, axis=-1):
    """sum(w a) / sum(w b): the ratio of two rankers' weighted means (of their days' means, with weighted_mean's
    weights); infinite where only b's mean is 0, and 1 where both are (a resample in which neither ranker hits
    says they tie)."""
    num, den = (a * w).sum(axis=axis), (b * w).sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((num == 0) & (den == 0), 1.0, num / den)


BOOTSTRAP_BATCH = 500


def paired_bootstrap(statistic, samples: tuple, *, level: float = 0.95, n_resamples: int = 10_000,
                     seed: int = 0) -> tuple[float, Optional[float], Optional[float]]:
    """(estimate, low, high): `statistic(*samples, axis)` and its percentile confidence interval, resampling the
    units (the samples' common first axis: truth users, or users of several days) with replacement, the same
    units for every sample (paired). scipy.stats.bootstrap; None bounds where the resamples say nothing (one unit,
    all values equal). The resamples go through in batches of BOOTSTRAP_BATCH: the same resamples (scipy draws them
    in sequence), in O(batch x units) memory: all 10,000 at once held 390 MiB for the gate's 5M-interaction day."""
    import warnings

    from scipy.stats import bootstrap

    samples = tuple(np.asarray(s, np.float64) for s in samples)
    est = float(statistic(*samples, axis=-1))
    if len(samples[0]) < 2:
        return est, None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples (all equal) give NaN bounds, reported as None
        res = bootstrap(samples, statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                        confidence_level=level, method="percentile", random_state=seed, batch=BOOTSTRAP_BATCH)
    lo, hi = (float(v) for v in res.confidence_interval)
    return est, (lo if np.isfinite(lo) else None), (hi if np.isfinite(hi) else None)
