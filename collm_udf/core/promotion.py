"""The promotion gate's rules, on per-user figures (pandas; no Spark): what serves the daily table after a training.

gate.confidence = 0 (the default), the point rule: the new ranker serves when its held-out NDCG@k beats the best
other ranker's by gate.margin (relative); otherwise the best other serves (ties in POINT_TIES order).

gate.confidence > 0, the proof rule (issue 25's design 3; measured on the validation replays and not the default:
benchmarks/README.md): a team's default is a list that needs no model, the better of popularity and recent
popularity on the held-out users. A ranker with a model (the new one, the one serving, the features-only ranker,
ALS) replaces that list only when it proves better on the same users: the paired-bootstrap interval of its per-user
lead over the list is above 0 on NDCG@k or on Recall@k, its mean lead on the other figure is not below 0, and its
NDCG@k beats the list's by the margin. Of the rankers that prove it, the best NDCG@k serves (ties in TIES order).

Either way every ranker with a model gets its lead over the better list recorded, with its interval (at
RECORD_LEVEL under the point rule) and whether it proves it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from collm_udf.core.metrics import paired_bootstrap

if TYPE_CHECKING:  # the frames come from the gate; scoring machines have no pandas to spare
    import pandas as pd

LISTS = ("recent_popularity", "popularity")  # the rankers that need no model, in tie order
TIES = ("serving", "collm", "features", "als") + LISTS  # the proof rule: who serves when figures tie
POINT_TIES = ("serving", "features", "recent_popularity", "popularity", "als")  # the point rule's order
RECORD_LEVEL = 0.95  # the interval recorded under the point rule
# Figures that agree to 9 digits tie (the point rule): two rankers' lists the same for every held-out user still sum
# to means an ulp apart (ML-100K 1997-11-19, skip_init features: 0.04170551288829863 both, and CoLLM was promoted)
TIE = 1e-9
FIGURES = ("ndcg", "recall")


def lead(challenger: "pd.DataFrame", default: "pd.DataFrame", *, level: float, seed: int = 0) -> dict:
    """{ndcg: [est, lo, hi], recall: [...]}: the mean per-user difference challenger - default (frames indexed by
    user_id, columns ndcg and recall, the same users) and its paired-bootstrap interval at `level`."""
    out = {}
    for f in FIGURES:
        d = (challenger[f] - default[f]).to_numpy(np.float64)
        if not len(d):
            out[f] = [0.0, None, None]
        elif np.all(d == d[0]):  # no interval to draw: every user's lead is the same
            est = float(d.mean())
            out[f] = [est, est, est]
        else:
            out[f] = list(paired_bootstrap(np.mean, (d,), level=level, seed=seed))
    return out


def proves(diff: dict) -> bool:
    """A lead that is proven: one figure's interval above 0, the other's mean difference not below 0."""
    def above(f):
        lo = diff[f][1]
        return lo is not None and lo > 0

    return any(above(f) and diff[g][0] >= 0 for f, g in (("ndcg", "recall"), ("recall", "ndcg")))


def decide(per_user: dict[str, "pd.DataFrame"], new: str, *, margin: float, level: float,
           seed: int = 0) -> tuple[str, dict, str]:
    """(winner, leads, reason) from {ranker: frame of user_id, ndcg, recall} over the same held-out truth users.
    leads: {ranker with a model: {vs (the better list), ndcg_lead: [est, lo, hi], recall_lead: [...], proven}}.
    level: gate.confidence (0: the point rule decides)."""
    frames = {n: df.set_index("user_id")[list(FIGURES)].sort_index() for n, df in per_user.items()}
    users = next(iter(frames.values())).index
    for n, df in frames.items():
        if not df.index.equals(users):
            raise ValueError(f"gate: ranker {n} was judged on other users than {next(iter(frames))}")
    mean = {n: {f: float(df[f].mean()) if len(df) else 0.0 for f in FIGURES} for n, df in frames.items()}
    lists = [n for n in LISTS if n in frames]
    if not lists:
        raise ValueError(f"gate: no list without a model among the rankers {sorted(frames)}")
    default = max(lists, key=lambda n: (mean[n]["ndcg"], -LISTS.index(n)))
    leads = {}
    for n in frames:
        if n in LISTS:
            continue
        diff = lead(frames[n], frames[default], level=level if level > 0 else RECORD_LEVEL, seed=seed)
        beats = mean[n]["ndcg"] > mean[default]["ndcg"] * (1 + margin)
        leads[n] = {"vs": default, "ndcg_lead": diff["ndcg"], "recall_lead": diff["recall"],
                    "proven": bool(beats and proves(diff))}

    def said(n):
        r = leads[n]
        return f"{n} - {default}: NDCG {fmt_lead(r['ndcg_lead'])}, Recall {fmt_lead(r['recall_lead'])}"

    k_users = f"{len(users)} held-out truth users"
    if level <= 0:
        winner, reason = point_rule(mean, new, margin, k_users)
        return winner, leads, reason
    proven = [n for n, r in leads.items() if r["proven"]]
    order = lambda n: -TIES.index(n) if n in TIES else -len(TIES)  # noqa: E731
    winner = max(proven, key=lambda n: (mean[n]["ndcg"], order(n))) if proven else default
    pct = f"{round(100 * level)}% CI"
    if new in leads and winner == new:
        reason = f"{new} proves better than {default} on {k_users} ({pct}; {said(new)}): {new} serves"
    elif winner != default:
        reason = (f"{winner} proves better than {default} on {k_users} ({pct}; {said(winner)}) and ranks best of "
                  f"those that do: {winner} serves")
    else:
        reason = (f"no ranker with a model proves better than {default} on {k_users} ({pct}, gate.margin "
                  f"{margin:g}; {'; '.join(said(n) for n in leads)}): {default} serves")
    return winner, leads, reason


def point_rule(mean: dict, new: str, margin: float, k_users: str) -> tuple[str, str]:
    """(winner, reason): the new ranker when its NDCG@k beats the best other's by the margin, else the best other."""
    ndcg = {n: m["ndcg"] for n, m in mean.items()}
    others = {n: v for n, v in ndcg.items() if n != new}
    best = max(others, key=lambda n: (others[n], -POINT_TIES.index(n) if n in POINT_TIES else -len(POINT_TIES)))
    bar = others[best] * (1 + margin)
    if ndcg[new] > 0 and ndcg[new] > bar and not math.isclose(ndcg[new], bar, rel_tol=TIE):
        return new, (f"{new} NDCG@k {ndcg[new]:.4f} > {best} {others[best]:.4f} x (1 + gate.margin {margin:g}) on "
                     f"{k_users}")
    return best, (f"{new} NDCG@k {ndcg[new]:.4f} does not beat {best} {others[best]:.4f} by gate.margin {margin:g} "
                  f"on {k_users}: {best} serves")


def fmt_lead(t: list) -> str:
    """'+0.0123 [-0.0040, +0.0290]': a lead and its interval (the gate's reason, the report)."""
    est, lo, hi = t
    if lo is None or hi is None or lo == hi == est:
        return f"{est:+.4f}"
    return f"{est:+.4f} [{lo:+.4f}, {hi:+.4f}]"

