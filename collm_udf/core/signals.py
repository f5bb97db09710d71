"""Per-pair signals that a CoLLM model adds to its logit through a learned linear skip. Pure numpy (no pyspark).

The CF tokens carry ALS factors into the prompt; what a frozen small backbone does not turn into a score, the skip
adds directly: logit = LM(prompt with CF tokens) + w . standardise(signals) + b. Two signals derive from the
pair's own factors (so they always agree with the CF tokens); the others are statistics of the interactions
before the cutoff, which the caller computes (collm_udf/spark/signal_stats.py) and passes by name. A model records the
names it was trained with (ModelSpec.signals) and refuses pairs that lack one.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

DERIVED = {
    "als_dot": "u . v of the pair's ALS factors (0 where either is missing)",
    "als_missing": "1 where the user or the item has no ALS factors",
    "user_missing": "1 where the user has no ALS factors",
}
STATISTICS = {
    "item_recent": "log1p(the item's interactions in the last candidates.recent_days before the cutoff)",
    "item_trend": "log1p(the item's interactions in the last evaluate.horizon_days before the cutoff: the span a "
                  "day's table is judged on)",
    "item_count": "log1p(the item's interactions before the cutoff)",
    "item_like_rate": "the item's like rate before the cutoff, shrunk towards the global rate by 5 interactions",
    "user_count": "log1p(the user's interactions before the cutoff)",
    "item_rare": "1 where the item has fewer than candidates.min_item_interactions interactions before the cutoff "
                 "(the cold items of the candidates and of the metrics)",
    "item_rare_recent": "item_recent where item_rare is 1, else 0: a recency slope of the rare items' own (a linear "
                        "ranker's one item_recent weight is set by the warm items, which are most pairs)",
}
SIGNALS = {**DERIVED, **STATISTICS}


def column(name: str) -> str:
    """The column that carries statistic `name` beside a pair (in Spark and in pandas frames)."""
    return f"_sig_{name}"


class SignalError(ValueError):
    pass


def check_names(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in SIGNALS]
    if unknown or len(set(names)) != len(names):
        raise SignalError(f"signals: {unknown or list(names)} - each must be one of {', '.join(SIGNALS)}, once")
    return list(names)


def matrix(names: Sequence[str], user_f: np.ndarray, item_f: np.ndarray, user_has: np.ndarray,
           item_has: np.ndarray, stats: Optional[Mapping[str, np.ndarray]]) -> np.ndarray:
    """(N, len(names)) float32: the named signals of N pairs, derived ones from the factors, the others from
    `stats` (name -> (N,) array). A missing statistic is an error naming it."""
    n = len(user_has)
    both = np.asarray(user_has, bool) & np.asarray(item_has, bool)
    cols = []
    for name in names:
        if name == "als_dot":
            cols.append(np.where(both, np.einsum("nd,nd->n", user_f, item_f), 0.0))
        elif name == "als_missing":
            cols.append((~both).astype(np.float64))
        elif name == "user_missing":
            cols.append((~np.asarray(user_has, bool)).astype(np.float64))
        else:
            if stats is None or name not in stats:
                raise SignalError(f"the model adds signal {name!r} ({SIGNALS.get(name, '?')}) to its score and the "
                                  f"pairs do not carry it (they carry: {', '.join(sorted(stats or {})) or 'none'})")
            col = np.asarray(stats[name], np.float64).reshape(-1)
            if len(col) != n:
                raise SignalError(f"signal {name!r}: {len(col)} values for {n} pairs")
            cols.append(np.nan_to_num(col))
    return np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((n, 0), np.float32)
