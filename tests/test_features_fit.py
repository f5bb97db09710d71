"""The features-only ranker's two fits (collm_udf/core/features.py): pooled, and within users (model.train.ranker_fit).
Pure numpy and sklearn: no Spark."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from collm_udf.core.features import FeatureRanker, within_groups

NAMES = ("item_recent", "item_like_rate")


def confounded(seed=0, users=300, per_user=40):
    """A pool where what differs between users' candidate sets points the other way from what orders each user's
    candidates: a user who likes a lot (a trait no signal here shows) has seen the popular items, so his candidates
    are less popular, while within every user the more popular candidate is the one liked."""
    rng = np.random.default_rng(seed)
    activity = rng.uniform(0, 1, users)
    g = np.repeat(np.arange(users), per_user)
    item_recent = rng.normal(0, 0.5, len(g)) - 3.0 * activity[g]
    item_like_rate = rng.normal(0, 1, len(g))  # carries nothing
    logit = -3.0 + 9.0 * activity[g] + 1.5 * (item_recent + 3.0 * activity[g])
    y = (rng.uniform(size=len(g)) < 1 / (1 + np.exp(-logit))).astype(int)
    return np.stack([item_recent, item_like_rate], axis=1), y, g


def within_user_auc(score, y, g):
    """The mean over users with both labels of the share of (liked, ignored) pairs ordered right."""
    out = []
    for u in np.unique(g):
        s, t = score[g == u], y[g == u]
        if 0 < t.sum() < len(t):
            out.append((s[t == 1][:, None] > s[t == 0][None, :]).mean())
    return float(np.mean(out))


def test_within_user_fit_learns_the_order_inside_users_where_the_pooled_fit_takes_the_other_sign():
    x, y, g = confounded()
    pooled = FeatureRanker.fit(NAMES, x, y)
    within = FeatureRanker.fit(NAMES, x, y, groups=g)
    assert (pooled.fit_by, within.fit_by) == ("pooled", "within_user")
    assert pooled.weights()["item_recent"] < 0 < within.weights()["item_recent"]
    assert within_user_auc(within.score(x), y, g) > 0.7 > within_user_auc(pooled.score(x), y, g) + 0.2
    assert FeatureRanker.from_json(within.to_json()) == within


def test_within_user_fit_equals_sklearn_on_each_users_centred_rows():
    """The reference: users with both labels, each user's rows minus his mean, StandardScaler + LogisticRegression;
    the ranker's score differs from the reference's decision function by one constant per user (his mean's
    offset), so within every user the two order the same."""
    x, y, g = confounded(seed=1, users=120)
    mixed = [u for u in np.unique(g) if 0 < y[g == u].sum() < (g == u).sum()]
    assert 0 < len(mixed) < len(np.unique(g))  # the frame has users the fit must drop
    keep = np.isin(g, mixed)
    xc = np.concatenate([x[g == u] - x[g == u].mean(axis=0) for u in mixed])
    yc = np.concatenate([y[g == u] for u in mixed])
    sc = StandardScaler().fit(xc)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(sc.transform(xc), yc)
    ranker = FeatureRanker.fit(NAMES, x, y, groups=g)
    np.testing.assert_allclose(ranker.coef, ref.coef_[0], rtol=1e-4)
    np.testing.assert_allclose(ranker.scale, sc.scale_, rtol=1e-9)
    assert (ranker.rows, ranker.positives) == (keep.sum(), y[keep].sum())
    order = np.concatenate([np.flatnonzero(g == u) for u in mixed])
    diff = ranker.score(x[order]) - ref.decision_function(sc.transform(xc))
    for u in mixed:
        d = diff[g[order] == u]
        np.testing.assert_allclose(d, d[0], atol=1e-8)


@pytest.mark.parametrize("y", [np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0])])
def test_within_user_fit_without_a_user_holding_both_labels_learns_no_weights(y):
    x = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 0.0], [3.0, 1.0]])
    g = np.array(["a", "b", "c", "d"]) if y[0] != y[1] else np.array(["a", "a", "b", "b"])
    xc, yc = within_groups(x, y, g)
    assert len(xc) == len(yc) == 0
    ranker = FeatureRanker.fit(NAMES, x, y, groups=g)
    assert ranker.coef == (0.0, 0.0) and ranker.rows == 0 and np.isfinite(ranker.score(x)).all()


def test_a_signal_of_the_user_alone_gets_no_weight_within_users():
    """user_count is one value per user: centred within users it is rounding noise, and a slope on that noise
    (times a scale of ~1e-15) would add a huge per-user constant to every score a model stacks on the ranker."""
    x, y, g = confounded(seed=2, users=80)
    per_user = np.log1p(np.random.default_rng(3).integers(5, 300, g.max() + 1))[g]
    ranker = FeatureRanker.fit(("item_recent", "user_count"), np.stack([x[:, 0], per_user], axis=1), y, groups=g)
    assert ranker.coef[1] == 0.0 and ranker.scale[1] == 1.0 and ranker.coef[0] > 0
    assert np.abs(ranker.score(np.stack([x[:, 0], per_user], axis=1))).max() < 50
