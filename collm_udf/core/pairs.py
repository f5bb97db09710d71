"""The pairs a model trains on or scores, as arrays: history titles, candidate text, ALS factors, labels and the
statistics among the model's signals. Training (training.py) and inference (inference.py) both read them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from collm_udf.core import signals
from collm_udf.core.prompt import PromptBuilder


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

    def __len__(self) -> int:
        return len(self.candidate)

    def subset(self, idx) -> "PairSet":
        idx = np.asarray(idx)
        enc = None if self.encoded is None else [self.encoded[i] for i in idx]
        stats = None if self.stats is None else {k: np.asarray(v)[idx] for k, v in self.stats.items()}
        return PairSet([self.history[i] for i in idx], [self.candidate[i] for i in idx], self.user_f[idx],
                       self.item_f[idx], self.user_has[idx], self.item_has[idx], self.label[idx], enc, stats)

    def signals(self, names: Sequence[str], idx=None, user_has=None, item_has=None) -> np.ndarray:
        """(n, len(names)) signals of the pairs idx (all when None); *_has override the factor masks (a CF slot
        dropped in training, or scoring without CF, also drops its derived signals)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx)
        stats = None if self.stats is None else {k: np.asarray(v)[idx] for k, v in self.stats.items()}
        return signals.matrix(names, self.user_f[idx], self.item_f[idx],
                              self.user_has[idx] if user_has is None else user_has,
                              self.item_has[idx] if item_has is None else item_has, stats)

    @classmethod
    def from_ids(cls, user_ids: Sequence, item_ids: Sequence, histories: Sequence[Sequence], labels: Sequence,
                 text: Mapping, user_factors: Mapping, item_factors: Mapping, factor_dim: int,
                 use_history: bool = True, stats: Optional[Mapping[str, Sequence]] = None) -> "PairSet":
        """Look up titles and factors by id; missing factors become zeros with *_has = False."""
        z = np.zeros(factor_dim, np.float32)
        U, V = user_factors, item_factors
        return cls(
            # history ids without a catalog text are skipped, as the Spark scorer's title join does
            history=[[text[i] for i in h if i in text] if use_history and h is not None else [] for h in histories],
            candidate=[text.get(i, "") for i in item_ids],
            user_f=np.stack([U.get(u, z) for u in user_ids]).astype(np.float32).reshape(-1, factor_dim),
            item_f=np.stack([V.get(i, z) for i in item_ids]).astype(np.float32).reshape(-1, factor_dim),
            user_has=np.array([u in U for u in user_ids], bool), item_has=np.array([i in V for i in item_ids], bool),
            label=np.asarray(labels, np.int64),
            stats=None if stats is None else {k: np.asarray(v, np.float64) for k, v in stats.items()})

    def encode(self, pb: PromptBuilder) -> "PairSet":
        """Tokenise once; epochs and evaluations reuse the ids."""
        if self.encoded is None:
            self.encoded = [pb.encode(h, c) for h, c in zip(self.history, self.candidate)]
        return self
