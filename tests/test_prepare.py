"""prepare.add_history against a pandas reference, on events with many same-instant ties."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from collm_udf.spark.stages.prepare import add_history


def reference(p: pd.DataFrame, length: int) -> dict:
    """(user, item, ts) -> the last `length` likes of the user strictly before ts, ordered by (ts, item)."""
    out = {}
    for _, r in p.iterrows():
        earlier = p[(p.user_id == r.user_id) & (p.ts < r.ts) & (p.label == 1)].sort_values(["ts", "item_id"])
        out[(r.user_id, r.item_id, r.ts)] = earlier["item_id"].tolist()[-length:] if length else []
    return out


@pytest.mark.parametrize("length", [0, 1, 3])
def test_history_is_the_last_likes_of_earlier_instants_only(spark, length):
    rng = np.random.default_rng(5)
    n = 240
    # 4 users x 60 events on 12 instants: most instants hold several events, likes and dislikes mixed
    p = pd.DataFrame({"user_id": [f"u{i % 4}" for i in range(n)],
                      "item_id": [f"i{i:03d}" for i in rng.permutation(n)],
                      "ts": [dt.datetime(2024, 1, 1) + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 12, n)],
                      "label": rng.integers(0, 2, n)})
    got = add_history(spark.createDataFrame(p), length).toPandas()
    assert len(got) == n
    want = reference(p, length)
    hist = {(r.user_id, r.item_id, r.ts.to_pydatetime()): list(r.history) for r in got.itertuples()}
    assert hist == {(u, i, pd.Timestamp(t).to_pydatetime()): h for (u, i, t), h in want.items()}
    assert length == 0 or sum(len(h) == length for h in hist.values()) > n / 2
