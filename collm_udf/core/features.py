"""The features-only ranker: the signals a CoLLM model's skip sees (collm_udf/core/signals.py), fitted as a logistic
ranker on the same stage-2 labels, with no language model. Pure numpy at scoring time; sklearn fits it.

It is the baseline that says what the language model adds: a CoLLM model whose LM part learns nothing ranks like
it. It is also a ranker of its own (score.scorer: features), and one of the candidates the promotion gate
(collm_udf/spark/gate.py) compares a new model with.

    score = intercept + sum_i coef_i * (x_i - mean_i) / scale_i        x: (N, S) signals, in `signals` order

Fitted pooled (every pair one sample) or within users (`groups`: each user's signals centred on the mean of his
own rows, users with both labels only, the task of a conditional logit): a table ranks within each user, and a
pooled fit also learns which users like more, through whatever differs between users' candidate sets.

sklearn's StandardScaler + LogisticRegression fit it (one description of the standardisation: the same mean and
scale, the same L2 penalty C as the CoLLM skip's logistic start); the Spark scorer evaluates the same expression
over columns (collm_udf/spark/scorers/features.py), so nothing leaves Spark at scoring time.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from collm_udf.core.signals import check_names


@dataclass(frozen=True)
class FeatureRanker:
    signals: tuple[str, ...]  # the names of x's columns (collm_udf.core.signals)
    mean: tuple[float, ...]  # (S,) of the training set
    scale: tuple[float, ...]  # (S,) its standard deviations (1 where a signal is constant)
    coef: tuple[float, ...]  # (S,) on the standardised signals
    intercept: float
    rows: int = 0  # training pairs the fit saw
    positives: int = 0
    fit_by: str = "pooled"  # pooled | within_user (see the module's docstring)

    @classmethod
    def fit(cls, signals: Sequence[str], x: np.ndarray, y: np.ndarray, C: float = 1.0,
            groups: Optional[Sequence] = None) -> "FeatureRanker":
        """Fit on (N, S) signals x and 0/1 labels y, pooled, or within the groups (users) of `groups` (N,); a set
        with one class (within users: no user with both) gets zero weights and the labels' log-odds."""
        from sklearn.linear_model import LogisticRegression  # training machines only (see core.training.init_skip)
        from sklearn.preprocessing import StandardScaler

        names = check_names(list(signals))
        x, y = np.asarray(x, np.float64), np.asarray(y).astype(int)
        if x.shape != (len(y), len(names)) or not len(y):
            raise ValueError(f"features-only ranker: {x.shape} signals for {len(y)} labels and {len(names)} names")
        mean, fx, fy = x.mean(axis=0), x, y
        if groups is not None:
            fx, fy = within_groups(x, y, groups)
        sc = StandardScaler().fit(fx if len(fy) else x)
        if len(np.unique(fy)) < 2:
            p = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
            coef, intercept = np.zeros(len(names)), float(np.log(p / (1 - p)))
        else:
            lr = LogisticRegression(C=C, max_iter=1000).fit(sc.transform(fx), fy)
            coef, intercept = lr.coef_[0], float(lr.intercept_[0])
        # within users the score keeps the fit's slopes on x centred at the rows' overall mean: the same order
        # within every user, and the intercept is the log-odds of a user's average candidate
        return cls(tuple(names), tuple(map(float, mean)), tuple(map(float, sc.scale_)), tuple(map(float, coef)),
                   intercept, len(fy), int(fy.sum()), "pooled" if groups is None else "within_user")

    def score(self, x: np.ndarray) -> np.ndarray:
        """(N,) logits of (N, S) signals."""
        z = (np.asarray(x, np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef) + self.intercept

    def weights(self) -> dict[str, float]:
        """Each signal's coefficient per standard deviation: what the ranker learned, in the run summary."""
        return {n: round(c, 4) for n, c in zip(self.signals, self.coef)}

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "FeatureRanker":
        d = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def within_groups(x: np.ndarray, y: np.ndarray, groups: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the groups that hold both labels, each group's x centred on its own mean: (M, S), (M,)."""
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    n = np.bincount(inv)
    pos = np.bincount(inv, weights=y)
    means = np.stack([np.bincount(inv, weights=x[:, j]) for j in range(x.shape[1])], axis=1) / n[:, None]
    keep = ((pos > 0) & (pos < n))[inv]
    xc = (x - means[inv])[keep]
    # a signal of the user alone (user_count, user_missing) centres to rounding noise (~1e-15): exact zeros, so that
    # the scaler keeps scale 1 and the fit gives it weight 0 instead of a slope on that noise
    flat = xc.std(axis=0) <= 1e-9 * (1.0 + x.std(axis=0)) if len(xc) else np.ones(x.shape[1], bool)
    xc[:, flat] = 0.0
    return xc, y[keep]
