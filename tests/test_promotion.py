"""The promotion gate's rule on per-user figures (collm_udf/core/promotion.py): a ranker with a model replaces the
better list without one only when its per-user lead is proven, on NDCG@k or Recall@k, and not lost on the other."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collm_udf.core.promotion import decide

USERS = [f"u{i}" for i in range(40)]


def frame(ndcg, recall=None) -> pd.DataFrame:
    ndcg = np.broadcast_to(np.asarray(ndcg, float), (len(USERS),))
    recall = ndcg if recall is None else np.broadcast_to(np.asarray(recall, float), (len(USERS),))
    return pd.DataFrame({"user_id": USERS, "ndcg": ndcg, "recall": recall})


def lists(recent=0.1, popular=0.05) -> dict:
    rng = np.random.default_rng(0)
    return {"recent_popularity": frame(recent + rng.uniform(-0.05, 0.05, len(USERS))),
            "popularity": frame(popular + rng.uniform(-0.05, 0.05, len(USERS)))}


def test_a_ranker_better_for_most_users_is_proven_and_serves():
    per_user = lists()
    per_user["collm"] = frame(per_user["recent_popularity"].ndcg + 0.05)  # +0.05 for every user
    winner, leads, reason = decide(per_user, "collm", margin=0.0, level=0.95)
    assert winner == "collm" and leads["collm"]["proven"] and leads["collm"]["vs"] == "recent_popularity"
    assert leads["collm"]["ndcg_lead"] == pytest.approx([0.05, 0.05, 0.05])
    assert "collm serves" in reason


def test_a_lead_from_two_users_of_forty_is_not_proven_and_the_list_serves():
    per_user = lists()
    base = per_user["recent_popularity"].ndcg.to_numpy()
    lucky = base.copy()
    lucky[:2] += 0.5  # the mean lead (+0.025) comes from two users: a resample without them has none
    per_user["collm"] = frame(lucky)
    winner, leads, reason = decide(per_user, "collm", margin=0.0, level=0.95)
    est, lo, hi = leads["collm"]["ndcg_lead"]
    assert est == pytest.approx(0.025) and lo <= 0 < hi
    assert winner == "recent_popularity" and not leads["collm"]["proven"] and "recent_popularity serves" in reason
    # the point estimates alone (confidence 0) would have promoted it: the interval is what keeps it out
    assert decide(per_user, "collm", margin=0.0, level=0.0)[0] == "collm"
    # and a margin above its lead keeps it out too
    assert decide(per_user, "collm", margin=0.5, level=0.0)[0] == "recent_popularity"


def test_recall_is_judged_too():
    per_user = lists()
    base = per_user["recent_popularity"]
    # proven on NDCG, but it loses Recall on average: not promoted
    per_user["collm"] = frame(base.ndcg + 0.05, base.recall - 0.01)
    assert decide(per_user, "collm", margin=0.0, level=0.95)[0] == "recent_popularity"
    # a lead proven on Recall alone, NDCG a little ahead: promoted
    noise = np.where(np.arange(len(USERS)) % 2, 0.051, -0.049)  # +0.001 on average
    per_user["collm"] = frame(base.ndcg + noise, base.recall + 0.05)
    winner, leads, _ = decide(per_user, "collm", margin=0.0, level=0.95)
    assert leads["collm"]["ndcg_lead"][1] < 0 < leads["collm"]["recall_lead"][1] and winner == "collm"


def test_the_default_is_the_better_list_and_the_best_proven_ranker_serves():
    per_user = lists(recent=0.05, popular=0.1)
    base = per_user["popularity"].ndcg
    per_user["features"] = frame(base + 0.08)
    per_user["collm"] = frame(base + 0.04)
    per_user["als"] = frame(base - 0.02)
    winner, leads, reason = decide(per_user, "collm", margin=0.0, level=0.95)
    assert {r["vs"] for r in leads.values()} == {"popularity"} and set(leads) == {"features", "collm", "als"}
    assert leads["collm"]["proven"] and leads["features"]["proven"] and not leads["als"]["proven"]
    assert winner == "features" and "features serves" in reason


def test_rankers_judged_on_other_users_are_refused():
    per_user = lists()
    per_user["collm"] = frame(0.2).assign(user_id=[f"v{i}" for i in range(len(USERS))])
    with pytest.raises(ValueError, match="ranker collm was judged on other users"):
        decide(per_user, "collm", margin=0.0, level=0.95)


def test_the_point_rule_serves_the_new_ranker_only_when_it_beats_the_best_other():
    per_user = lists()
    base = per_user["recent_popularity"].ndcg
    per_user["features"] = frame(base + 0.02)
    per_user["collm"] = frame(base + 0.01)
    winner, leads, reason = decide(per_user, "collm", margin=0.0, level=0.0)
    assert winner == "features" and "does not beat features" in reason  # the best other, a model or not
    assert leads["collm"]["proven"] and leads["collm"]["ndcg_lead"] == pytest.approx([0.01] * 3)  # recorded anyway
    per_user["collm"] = frame(base + 0.03)
    assert decide(per_user, "collm", margin=0.0, level=0.0)[0] == "collm"
    # base + 0.03 against base + 0.02 by 20%: base averages ~0.1, so 0.13 < 0.12 x 1.2
    assert decide(per_user, "collm", margin=0.2, level=0.0)[0] == "features"


def test_the_point_rule_does_not_promote_on_a_lead_in_float_rounding():
    # The same lists for every user, their figures an ulp apart: a tie, and the best other serves.
    per_user = lists()
    same = per_user["recent_popularity"].ndcg.to_numpy() + 0.02
    per_user["features"] = frame(same)
    per_user["collm"] = frame(np.nextafter(same, 1.0))
    assert per_user["collm"].ndcg.mean() > per_user["features"].ndcg.mean()
    winner, _, reason = decide(per_user, "collm", margin=0.0, level=0.0)
    assert winner == "features" and "does not beat features" in reason
