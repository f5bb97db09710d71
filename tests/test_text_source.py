"""Cold items in the table: the candidates' text source (each user's cold items nearest in text to the user's
history, as of the cutoff; checked against a numpy reference built from the source file on conftest's `daily`
replay), the rows score.cold_slots holds for them, and the recent likes' cold share that sizes those."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collm_udf.core.text_embed import nearest, profile
from helpers import DAYS, RECENT, TEXT_K, TEXT_RECENCY, active_users, cutoff, day, known


def test_nearest_leaves_out_the_excluded_and_breaks_ties_by_index():
    items = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], np.float32)
    user = profile(np.array([[1, 0], [1, 0]], np.float32))
    idx, sim = nearest(user, items, 3, np.array([False, False, False, False]))
    assert idx.tolist() == [0, 2, 3] and sim.tolist() == pytest.approx([1, 1, 0.6])
    idx, _ = nearest(user, items, 3, np.array([True, False, False, True]))
    assert idx.tolist() == [2, 1]  # only two allowed
    assert not len(nearest(user, items, 2, np.ones(4, bool))[0])


def test_a_prior_moves_items_by_standardised_cosines():
    items = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], np.float32)  # cosines 1, 0.8, 0, 0.6
    user = np.array([1, 0], np.float32)
    exclude = np.zeros(4, bool)
    # z-scores over the four: (1, 0.8, 0, 0.6) -> mean 0.6, sd 0.374: 1.069, 0.535, -1.604, 0
    idx, score = nearest(user, items, 4, exclude, prior=np.array([0, 0, 2.8, 0], np.float32))
    assert idx.tolist() == [2, 0, 1, 3] and score[0] == pytest.approx(-1.604 + 2.8, abs=1e-3)
    # the standardisation is over the allowed items only: leaving out item 0 moves the others' scores
    idx, score = nearest(user, items, 2, np.array([True, False, False, False]), prior=np.zeros(4, np.float32))
    assert idx.tolist() == [1, 3] and score.tolist() == pytest.approx([0.9806, 0.3922], abs=1e-3)
    assert nearest(user, items, 4, exclude, prior=np.zeros(4, np.float32))[0].tolist() == [0, 1, 3, 2]


@pytest.mark.slow
@pytest.mark.parametrize("ds", DAYS)
def test_text_candidates_are_each_users_nearest_unseen_cold_items_as_of_the_cutoff(daily, events, ds):
    """Every text pair is a cold item (fewer than min_item_interactions interactions before the cutoff) the user
    never interacted with before it, among the user's TEXT_K best by the cosine between the base backbone's
    embeddings of the item and of the history (the latest history_len likes before the cutoff), standardised over
    the user's unseen cold items, plus TEXT_RECENCY * log1p(the item's interactions in the RECENT days before the
    cutoff); users without a like before it get none."""
    from collm_udf.core.inference import pick_device
    from collm_udf.core.text_embed import load_embed_fn

    cfg, tables, _, _ = daily
    cands = day(tables, "candidates", ds)
    text = cands[cands.source == "text"]
    assert len(text) and text.user_id.nunique() > 10
    k = known(events, ds)
    counts = k.item_id.value_counts()
    catalog = tables.read("items").toPandas()
    cold = sorted(i for i in catalog.item_id if counts.get(i, 0) < cfg.candidates.min_item_interactions)
    assert set(text.item_id) <= set(cold)
    seen = set(zip(k.user_id, k.item_id))
    assert not any((u, i) in seen for u, i in zip(text.user_id, text.item_id))

    from collm_udf.core.spec import ModelSpec

    assert cfg.model is None  # the ALS replay: the source embeds with the embedded default backbone
    embed = load_embed_fn(ModelSpec(), pick_device("cpu"))
    texts = dict(zip(catalog.item_id, catalog.text))
    cold_m = embed([texts[i] for i in cold])
    recent = k[k.ts >= cutoff(ds) - pd.Timedelta(days=RECENT)].item_id.value_counts()
    prior = TEXT_RECENCY * np.log1p(np.array([recent.get(i, 0) for i in cold], float))
    assert (prior > 0).sum() > 2  # some cold items were interacted with lately: the prior moves the ranking
    likes = k[k.label == 1].sort_values(["ts", "item_id"])
    offered = set(zip(cands.user_id, cands.item_id))
    users = active_users(events, ds)
    assert set(text.user_id) <= users & set(likes.user_id)
    for u, h in likes[likes.user_id.isin(users)].groupby("user_id"):
        ref_user = profile(embed([texts[i] for i in h.item_id.tail(cfg.prepare.history_len)]))
        allowed = np.array([(u, i) not in seen for i in cold])
        cos = cold_m @ ref_user
        ref = (cos - cos[allowed].mean()) / cos[allowed].std() + prior
        kth = np.sort(ref[allowed])[::-1][min(TEXT_K, allowed.sum()) - 1]
        score = dict(zip(cold, ref))
        mine = text[text.user_id == u]
        # the reference's picks are all offered (by this source, or by an earlier one), and every pick of the
        # source scores as the reference's k-th does or better (float noise across batches: 1e-3)
        assert all((u, i) in offered for i, r, a in zip(cold, ref, allowed) if a and r > kth + 1e-3), u
        assert all(score[i] >= kth - 1e-3 for i in mine.item_id), u


def test_cold_slots_are_a_floor_the_greedy_merge_of_cold_and_other_pairs(spark):
    from collm_udf.spark.scorers import rank_with_cold_slots, slot_positions

    assert slot_positions(2, 20) == [5, 15] and slot_positions(1, 20) == [10] and slot_positions(0, 20) == []
    rng = np.random.default_rng(0)
    rows = []
    # cold pairs far below the others (only the slots bring them in), mixed with them, and above them
    for user, n_cold, shift in (("a", 4, -5), ("b", 1, -5), ("c", 0, 0), ("d", 6, 0), ("e", 9, 0.5), ("f", 3, 5)):
        rows += [(user, f"w{i}", float(rng.normal()), "als") for i in range(12)]
        rows += [(user, f"c{i}", float(rng.normal()) + shift, "text") for i in range(n_cold)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "score", "source"])
    for slots in (0, 2, 3):
        got = rank_with_cold_slots(spark.createDataFrame(df), 8, slots).toPandas()
        pos = slot_positions(slots, 8)
        for user, g in df.groupby("user_id"):
            warm = g[g.source == "als"].sort_values("score", ascending=False)[["item_id", "score"]].values.tolist()
            cold = g[g.source == "text"].sort_values("score", ascending=False)[["item_id", "score"]].values.tolist()
            want, placed = [], 0
            for p in range(1, 9):  # the next cold pair when its slot is due or it scores higher, else the next other
                due = placed < len(pos) and pos[placed] == p
                take_cold = cold and (due or not warm or cold[0][1] > warm[0][1])
                want.append((cold if take_cold else warm).pop(0)[0])
                placed += bool(take_cold)
            mine = got[got.user_id == user].sort_values("rank")
            assert mine["rank"].tolist() == list(range(1, 9)) and mine.item_id.tolist() == want, (slots, user)
    # the floor: no cold pair is listed later than its score alone would list it (user f's three lead the list)
    top = rank_with_cold_slots(spark.createDataFrame(df), 8, 2).toPandas()
    assert top[top.user_id == "f"].sort_values("rank").source.head(3).tolist() == ["text"] * 3


def test_the_cold_share_is_the_recent_likes_of_items_rare_before_the_window(spark, events):
    from collm_udf.spark.asof import cold_share

    end, days, min_items = pd.Timestamp("1998-02-01"), 28, 5
    k = events[events.ts < end]
    start = end - pd.Timedelta(days=days)
    before = k[k.ts < start].item_id.value_counts()
    likes = k[(k.ts >= start) & (k.label == 1)]
    want = (likes.item_id.map(before).fillna(0) < min_items).mean()
    share, n = cold_share(spark.createDataFrame(k), end.tz_localize("UTC").to_pydatetime(), days, min_items)
    assert n == len(likes) > 100 and 0 < share == pytest.approx(want)


def test_a_popularity_list_served_with_cold_slots_brings_the_days_cold_candidates(daily):
    """A list has no cold items of its own: with score.cold_slots its pool adds the user's candidates of the cold
    sources, each pair once, and the slots then list them; without, the pool is the list."""
    import dataclasses

    from pyspark.sql import functions as F

    from collm_udf.spark.asof import AsOf
    from collm_udf.spark.scorers import PopularityScorer, rank_with_cold_slots

    cfg, tables, _, _ = daily
    ds, top_n = DAYS[1], 10
    cands = tables.read("candidates").where(F.col("ds") == F.lit(ds).cast("date"))
    on = dataclasses.replace(cfg, score=dataclasses.replace(cfg.score, cold_slots=True))
    plain, slotted = (PopularityScorer(c, tables, AsOf.of(c, ds), "recent_popularity") for c in (cfg, on))
    lst, pool = plain.pool(cands, top_n).toPandas(), slotted.pool(cands, top_n).toPandas()
    assert set(lst.source) == {"popular"} and (lst.groupby("user_id").size() == top_n).all()
    c = cands.toPandas()
    cold = c[c.source.isin(["text", "cold"])]
    key = ["user_id", "item_id"]
    want = pd.concat([lst[key], cold[key]]).drop_duplicates()
    assert len(pool) == len(want) and not pool.duplicated(key).any() and len(pool) > len(lst)
    assert set(map(tuple, pool[key].to_numpy())) == set(map(tuple, want.to_numpy()))
    ranked = rank_with_cold_slots(slotted.score_pairs(slotted.pool(cands, top_n)), top_n, 2).toPandas()
    assert (ranked.groupby("user_id").size() == top_n).all()
    has_cold = set(cold.user_id)
    per_user = ranked[ranked.source.isin(["text", "cold"])].groupby("user_id").size()
    assert has_cold and (per_user.reindex(sorted(has_cold)).fillna(0) >= 2).all()
