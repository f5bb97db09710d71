"""The pairs of a training set grouped by user: the pairwise objective's batches (a user's liked row beside one of
his ignored rows) and a seeded split of the users (model.train.stack_share). Pure numpy."""
from __future__ import annotations

from typing import Optional

import numpy as np

from collm_udf.core.pairs import PairSet


def pair_batches(label: np.ndarray, user: Optional[np.ndarray], batch_size: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """The pairwise objective's batches for one epoch: each liked row beside an ignored row of the same user drawn
    at random, in a shuffled order; a batch is [liked..., ignored...] of batch_size // 2 (at least 1) pairs each.
    Users without both labels give none."""
    if user is None:
        raise ValueError("objective pairwise: the pairs carry no user ids (PairSet.user)")
    _, inv = np.unique(np.asarray(user), return_inverse=True)
    by_user = np.argsort(inv, kind="stable")  # one pass over the rows, each user's a slice of it
    pos, neg = [], []
    for rows in np.split(by_user, np.cumsum(np.bincount(inv))[:-1]) if len(inv) else []:
        p, n = rows[label[rows] == 1], rows[label[rows] == 0]
        if len(p) and len(n):
            pos.append(p)
            neg.append(rng.choice(n, size=len(p)))
    if not pos:
        return []
    pos_a, neg_a = np.concatenate(pos), np.concatenate(neg)
    order = rng.permutation(len(pos_a))
    half = max(1, batch_size // 2)
    return [np.concatenate([pos_a[order[s:s + half]], neg_a[order[s:s + half]]])
            for s in range(0, len(order), half)]


def split_users(ps: PairSet, share: float, seed: int) -> tuple[PairSet, PairSet]:
    """(the pairs of 1 - share of the users, those of the rest): a seeded draw over the distinct user ids. Where
    either part would lack a label (too few users), both are the whole set."""
    if ps.user is None:
        raise ValueError("stack_share: the pairs carry no user ids (PairSet.user)")
    users, inv = np.unique(np.asarray(ps.user), return_inverse=True)
    held = np.random.default_rng(seed).random(len(users)) < share
    rows = held[inv]
    if any(len(np.unique(ps.label[part])) < 2 for part in (rows, ~rows)):
        return ps, ps
    return ps.subset(np.flatnonzero(~rows)), ps.subset(np.flatnonzero(rows))
