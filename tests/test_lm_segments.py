"""The LM's weight per segment (model.lm_segments): warm pairs, cold items, users without ALS factors. Each pair
takes its segment's weight, the logistic start fits the three apart, and they round-trip through the checkpoint."""
from __future__ import annotations

import numpy as np
import pytest

from collm_udf.core import checkpoint
from collm_udf.core.inference import predict
from collm_udf.core.spec import ModelError, ModelSpec
from helpers import make, pairs

COLD_BELOW = 10
SIGNALS = ["item_count", "user_missing"]


def segment_pairs(n, seed):
    """Pairs of the three segments: a quarter of the users without factors, item counts 0..39."""
    ps = pairs(n, seed)
    rng = np.random.default_rng(seed + 11)
    ps.user_has = rng.random(n) > 0.25
    ps.stats = {"item_count": np.log1p(rng.integers(0, 40, n).astype(np.float64))}
    return ps


def reference_segment(ps) -> np.ndarray:
    """0 warm, 1 cold item (fewer than COLD_BELOW interactions), 2 user without factors (first)."""
    count = np.rint(np.expm1(ps.stats["item_count"]))
    return np.where(~ps.user_has, 2, np.where(count < COLD_BELOW, 1, 0))


def test_the_lm_counts_in_the_segment_where_it_ranks_and_its_weights_round_trip(tiny_encoder, tmp_path):
    # The label follows the LM's logit on cold items, its opposite on warm pairs, and is noise for users without
    # factors: one weight cannot say so, three can. The logistic start gives each segment its weight's sign, and
    # each pair scores with its own segment's.
    from collm_udf.core.inference import load_predict_fn
    from collm_udf.core.metrics import auc
    from collm_udf.core.training import init_skip

    model, tok, pb = make(tiny_encoder, signals=SIGNALS, lm_scale=True, lm_segments=True, cold_item_below=COLD_BELOW)

    def labelled(n, seed):
        ps = segment_pairs(n, seed).encode(pb)
        lm = predict(model, ps, tok.pad_token_id, use_cf=True, bf16="off")  # skip zero, scales 1: the LM's logit
        seg = reference_segment(ps)
        noise = np.random.default_rng(seed + 5).random(len(ps)) > 0.5
        above = {j: lm > np.median(lm[seg == j]) for j in (0, 1)}
        ps.label = np.select([seg == 0, seg == 1], [~above[0], above[1]], noise).astype(np.int64)
        return ps, lm, seg

    (ps, _, _), (hold, lm_hold, seg_hold) = labelled(600, 0), labelled(300, 1)
    assert set(seg_hold) == {0, 1, 2}
    init_skip(model, ps, "logistic", tok.pad_token_id)
    w = model.lm_weights()
    assert list(w) == ["warm", "cold_item", "no_factors"]
    assert w["cold_item"] > 0 > w["warm"] and abs(w["no_factors"]) < min(w["cold_item"], -w["warm"]) / 2, w
    scored = predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off")
    for j in (0, 1):
        assert auc(hold.label[seg_hold == j], scored[seg_hold == j]) > 0.9, j

    checkpoint.save(model, tmp_path / "c")
    spec = checkpoint.read_spec(tmp_path / "c")
    assert spec.lm_segments and spec.cold_item_below == COLD_BELOW
    fn = load_predict_fn(str(tmp_path / "c"), "cpu", bf16="off")
    assert fn.model.lm_weights() == w
    parts = fn(hold.history, hold.candidate, hold.user_f, hold.item_f, hold.user_has, hold.item_has,
               stats=hold.stats, parts=True)
    weight = np.array([w["warm"], w["cold_item"], w["no_factors"]])[seg_hold]
    np.testing.assert_allclose(parts[:, 0], lm_hold * weight, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("fields, message", [
    (dict(signals=SIGNALS, lm_segments=True), "needs lm_scale"),
    (dict(signals=["item_count"], lm_scale=True, lm_segments=True), "user_missing"),
    (dict(signals=SIGNALS, lm_scale=True, lm_segments=True), "cold_item_below must be >= 1"),
])
def test_lm_segments_refuse_a_model_that_cannot_tell_the_segments(fields, message):
    with pytest.raises(ModelError, match=message):
        ModelSpec(**fields)


def test_lm_warm_false_leaves_warm_pairs_to_the_skip(tiny_encoder):
    # Warm labels follow the LM, which would earn the warm segment a weight; lm_warm false holds it at 0 through
    # the logistic start and stage 2, and the warm pairs' LM part is 0 while the cold items' is not.
    from collm_udf.core.spec import StageSettings
    from collm_udf.core.training import init_skip, train_stage

    model, tok, pb = make(tiny_encoder, signals=SIGNALS, lm_scale=True, lm_segments=True,
                          cold_item_below=COLD_BELOW, lm_warm=False)
    ps = segment_pairs(300, 2).encode(pb)
    lm = predict(model, ps, tok.pad_token_id, use_cf=True, bf16="off")
    ps.label = (lm > np.median(lm)).astype(np.int64)
    seg = reference_segment(ps)
    init_skip(model, ps, "logistic", tok.pad_token_id)
    assert model.lm_weights()["warm"] == 0 and model.lm_weights()["cold_item"] > 0, model.lm_weights()
    train_stage(model, "cf", ps, ps, StageSettings(epochs=1, bf16="off"), tok.pad_token_id, log=lambda m: None,
                progress=lambda m: None)
    w = model.lm_weights()
    assert w["warm"] == 0 and w["cold_item"] != 0, w
    parts = predict(model, ps, tok.pad_token_id, use_cf=True, bf16="off", parts=True)
    assert np.all(parts[seg == 0, 0] == 0) and np.any(parts[seg == 1, 0] != 0)


def test_lm_warm_false_needs_lm_segments():
    with pytest.raises(ModelError, match="lm_warm: false .* needs lm_segments"):
        ModelSpec(signals=SIGNALS, lm_scale=True, lm_warm=False)


def test_skip_init_refit_ends_stage_2_at_the_logistic_fit_of_the_trained_lm(tiny_encoder):
    # After stage 2 the skip and the LM's weights are sklearn's logistic fit of the labels on [the trained model's
    # LM logit ; the signals], both standardised over the set (without the refit stage 2's steps move them away).
    from sklearn.linear_model import LogisticRegression

    from collm_udf.core.spec import StageSettings
    from collm_udf.core.training import fit

    spec = make(tiny_encoder, signals=SIGNALS, lm_scale=True)[0].spec
    sets = {"text": pairs(0, 0), "cf": segment_pairs(200, 3), "hold": segment_pairs(60, 4)}
    rng = np.random.default_rng(3)
    sets["cf"].label = (rng.random(200) < 0.3 + 0.4 * (sets["cf"].stats["item_count"] > 2)).astype(np.int64)
    stages = {s: StageSettings(epochs=1, bf16="off", skip_lr=0.5) for s in ("text", "cf")}
    model, tok, report = fit(spec, stages, sets, skip_init="refit", log=lambda m: None)
    assert report["skip_refit"]
    cf = sets["cf"]
    scale = float(model.lm_scale.detach())
    lm = predict(model, cf, tok.pad_token_id, use_cf=True, bf16="off", parts=True)[:, 0] / scale
    x = np.column_stack([lm, cf.signals(SIGNALS)])
    ref = LogisticRegression(max_iter=1000).fit((x - x.mean(0)) / x.std(0), cf.label).coef_[0] / x.std(0)
    got = np.concatenate([[scale],
                          model.skip.weight.detach().numpy()[0] / np.array(model.spec.signal_std)])
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)


def test_skip_init_features_stacks_the_model_on_the_features_only_ranker(tiny_encoder):
    # The ranker learned u . v up from other labels than the model's set, whose labels follow item_count: with
    # skip_init features the model's warm pairs still score a * (the ranker's logit) + c, a > 0 (they rank as
    # the ranker ranks them), while its LM counts on cold items. Fitting the skip on the set instead ranks them
    # by item_count, and no single (a, c) fits.
    from collm_udf.core.features import FeatureRanker
    from collm_udf.core.spec import StageSettings
    from collm_udf.core.training import fit

    names = ["als_dot", "item_count", "user_missing"]
    first, _, pb = make(tiny_encoder, signals=names, lm_scale=True, lm_segments=True, cold_item_below=COLD_BELOW,
                        lm_warm=False)
    other = segment_pairs(400, 8)
    base = FeatureRanker.fit(names, other.signals(names), other.label)  # pairs(): label = u . v > 0
    assert base.weights()["als_dot"] > 0
    sets = {"text": pairs(0, 0), "cf": segment_pairs(300, 5), "hold": segment_pairs(60, 6)}
    sets["cf"].label = (sets["cf"].stats["item_count"] > 2.5).astype(np.int64)
    stages = {s: StageSettings(epochs=1, bf16="off") for s in ("text", "cf")}
    model, tok, report = fit(first.spec, stages, sets, skip_init="features", base=base, log=lambda m: None)
    assert report["skip_refit"] and model.lm_weights()["warm"] == 0 and model.lm_weights()["cold_item"] != 0
    test = segment_pairs(200, 9).encode(pb)
    warm = reference_segment(test) == 0
    got = predict(model, test, tok.pad_token_id, use_cf=True, bf16="off")[warm]
    f = base.score(test.signals(names))[warm]
    a, c = np.polyfit(f, got, 1)
    assert a > 0
    np.testing.assert_allclose(got, a * f + c, atol=1e-4)
