"""The pairs a model trains on or scores, as arrays: history titles, candidate text, ALS factors, labels and the
statistics among the model's signals. Training (training.py) and inference (inference.py) both read them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from collm_udf.core import signals
from collm_udf.core.prompt import PromptBuilder


def missing(v) -> bool:
    """A null cell: None, or the NaN pandas puts in an object column."""
    return v is None or (isinstance(v, float) and np.isnan(v))


def factor_matrix(values: Sequence, dim: int, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Factor vectors or nulls (a user or item without factors) -> (N, dim) float32 with zeros where missing, and
    the (N,) bool mask of who has them. A vector of another length is an error naming the column and row."""
    f = np.zeros((len(values), dim), np.float32)
    has = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        if missing(v):
            continue
        a = np.asarray(v, np.float32).ravel()
        if a.size != dim:
            raise ValueError(f"{column}, row {i}: {a.size} factors; the model was trained on {dim}")
        f[i], has[i] = a, True
    return f, has


@dataclass
class PairSet:
    """N scored pairs: history titles, candidate text, factors (zeros where missing), labels, and the
    statistics among the model's signals (collm_udf/core/signals.py; name -> (N,) values)."""

    history: list
    candidate: list
    user_f: np.ndarray  # (N, d) float32
    item_f: np.ndarray  # (N, d)
    user_has: np.ndarray  # (N,) bool
    item_has: np.ndarray  # (N,)
    label: np.ndarray  # (N,) 0/1
    encoded: Optional[list] = field(default=None, repr=False)
    stats: Optional[dict] = field(default=None, repr=False)  # name -> (N,) float
    user: Optional[np.ndarray] = field(default=None, repr=False)  # (N,) user ids: the groups of within-user losses

    def __len__(self) -> int:
        return len(self.candidate)

    def subset(self, idx) -> "PairSet":
        idx = np.asarray(idx)
        enc = None if self.encoded is None else [self.encoded[i] for i in idx]
        stats = None if self.stats is None else {k: np.asarray(v)[idx] for k, v in self.stats.items()}
        return PairSet([self.history[i] for i in idx], [self.candidate[i] for i in idx], self.user_f[idx],
                       self.item_f[idx], self.user_has[idx], self.item_has[idx], self.label[idx], enc, stats,
                       None if self.user is None else self.user[idx])

    def signals(self, names: Sequence[str], idx=None, user_has=None, item_has=None) -> np.ndarray:
        """(n, len(names)) signals of the pairs idx (all when None); *_has override the factor masks (a CF slot
        dropped in training, or scoring without CF, also drops its derived signals)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx)
        stats = None if self.stats is None else {k: np.asarray(v)[idx] for k, v in self.stats.items()}
        return signals.matrix(names, self.user_f[idx], self.item_f[idx],
                              self.user_has[idx] if user_has is None else user_has,
                              self.item_has[idx] if item_has is None else item_has, stats)

    @classmethod
    def from_ids(cls, user_ids: Sequence, item_ids: Sequence, histories: Sequence[Sequence], labels: Sequence, *,
                 text: Mapping, user_factors: Mapping, item_factors: Mapping, factor_dim: int,
                 use_history: bool = True, stats: Optional[Mapping[str, Sequence]] = None) -> "PairSet":
        """Look up titles and factors by id; missing factors become zeros with *_has = False."""
        user_f, user_has = factor_matrix([user_factors.get(u) for u in user_ids], factor_dim, "user factors")
        item_f, item_has = factor_matrix([item_factors.get(i) for i in item_ids], factor_dim, "item factors")
        return cls(
            # history ids without a catalog text are skipped, as the Spark scorer's title join does
            history=[[text[i] for i in h if i in text] if use_history and h is not None else [] for h in histories],
            candidate=[text.get(i, "") for i in item_ids], user_f=user_f, item_f=item_f, user_has=user_has,
            item_has=item_has, label=np.asarray(labels, np.int64),
            stats=None if stats is None else {k: np.asarray(v, np.float64) for k, v in stats.items()},
            user=np.asarray(user_ids, dtype=object))

    def encode(self, pb: PromptBuilder) -> "PairSet":
        """Tokenise once; epochs and evaluations reuse the ids."""
        if self.encoded is None:
            self.encoded = [pb.encode(h, c) for h, c in zip(self.history, self.candidate)]
        return self
