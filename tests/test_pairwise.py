"""How stage 2 weighs the LM beside the signals. model.train.objective pairwise: batches that pair a user's liked
row with one of his ignored rows. model.train.stack_fit within_user: the stacked fit after stage 2 within users, so
the LM is weighed by how it orders a user's pairs; stack_share: that fit on users stage 2's steps did not see."""
from __future__ import annotations

import numpy as np
import pytest

from collm_udf.config import ConfigError
from collm_udf.config.model_conf import DistributedConfig, TrainingConfig
from collm_udf.core.inference import predict
from collm_udf.core.spec import StageSettings
from collm_udf.core.groups import pair_batches, split_users
from collm_udf.core.training import init_skip, train_cf, train_stage
from helpers import make, pairs


def test_pair_batches_put_each_liked_row_beside_an_ignored_row_of_its_user():
    user = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2)
    label = np.array([1, 0, 1, 0, 0] + [1, 1, 1, 0] + [1, 1, 1] + [0, 0])  # c and d hold one label only
    batches = pair_batches(label, user, 4, np.random.default_rng(0))
    liked, ignored = [], []
    for b in batches:
        half = len(b) // 2
        assert len(b) % 2 == 0 and half <= 2
        assert (user[b[:half]] == user[b[half:]]).all()
        assert (label[b[:half]] == 1).all() and (label[b[half:]] == 0).all()
        liked += list(b[:half])
        ignored += list(b[half:])
    assert sorted(liked) == [0, 2, 5, 6, 7]  # every liked row of a and b once; none of c's
    assert set(ignored) <= {1, 3, 4, 8}
    with pytest.raises(ValueError, match="no user ids"):
        pair_batches(label, None, 4, np.random.default_rng(0))


def test_the_within_user_fit_weighs_the_lm_by_its_order_within_users(tiny_encoder):
    # Users are blocks of 10 pairs adjacent in the LM's logit: the high blocks like 8 of 10, the low ones 2, and
    # within each block the liked pairs are those the LM scores lowest. Pooled, the LM tells who likes more and gets
    # a positive weight; within users it orders each user's pairs backwards, and its weight is negative.
    model, tok, pb = make(tiny_encoder, signals=["item_count"], lm_scale=True)
    ps = pairs(400, 0).encode(pb)
    ps.stats = {"item_count": np.log1p(np.random.default_rng(1).integers(0, 40, len(ps)).astype(np.float64))}
    lm = predict(model, ps, tok.pad_token_id, use_cf=True, bf16="off")  # skip zero, scale 1: the LM's logit
    order = np.argsort(lm)
    block = np.empty(len(ps), int)
    block[order] = np.arange(len(ps)) // 10
    ps.user = np.array([f"u{b}" for b in block], dtype=object)
    rank_in_block = np.empty(len(ps), int)
    rank_in_block[order] = np.arange(len(ps)) % 10
    liked_per_block = np.where(block >= block.max() / 2, 8, 2)
    ps.label = (rank_in_block < liked_per_block).astype(np.int64)
    weights = {}
    for within in (False, True):
        init_skip(model, ps, "logistic", tok.pad_token_id, bf16="off", within_user=within)
        weights[within] = float(model.lm_scale.detach())
    assert weights[False] > 0 > weights[True], weights


def test_a_pairwise_stage_trains_and_refuses_a_set_without_a_user_holding_both_labels(tiny_encoder):
    model, tok, pb = make(tiny_encoder, signals=["item_count"], lm_scale=True)
    ps = pairs(64, 0).encode(pb)
    ps.stats = {"item_count": np.zeros(len(ps))}
    ps.user = np.array([f"u{i % 8}" for i in range(len(ps))], dtype=object)
    tc = StageSettings(lr=1e-3, batch_size=8, epochs=1, objective="pairwise", bf16="off")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    meta = train_stage(model, "cf", ps, ps, tc, tok.pad_token_id, log=lambda m: None, progress=lambda m: None)
    assert meta["history"][0]["loss"] > 0
    assert any(not np.allclose(before[n].numpy(), p.detach().numpy())
               for n, p in model.named_parameters() if n in before)
    one_class = ps.subset(np.flatnonzero(ps.label == 1))
    with pytest.raises(ValueError, match="needs a user with a liked and an ignored pair"):
        train_stage(model, "cf", one_class, ps, tc, tok.pad_token_id, log=lambda m: None, progress=lambda m: None)


def test_pairwise_refuses_several_training_processes():
    assert TrainingConfig(objective="pairwise").objective == "pairwise"
    with pytest.raises(ConfigError, match="objective"):
        TrainingConfig(objective="listwise")
    with pytest.raises(ConfigError, match="stack_fit"):
        TrainingConfig(stack_fit="within")
    with pytest.raises(ConfigError, match="stack_share"):
        TrainingConfig(stack_share=1.0)
    with pytest.raises(ConfigError, match="one process"):
        TrainingConfig(objective="pairwise", distributed=DistributedConfig(num_processes=2))


def test_stack_share_weighs_the_lm_on_users_the_stage_did_not_train_on(tiny_encoder):
    model, tok, pb = make(tiny_encoder, signals=["item_count"], lm_scale=True)
    ps = pairs(240, 0).encode(pb)
    ps.stats = {"item_count": np.log1p(np.random.default_rng(1).integers(0, 40, len(ps)).astype(np.float64))}
    ps.user = np.array([f"u{i % 24}" for i in range(len(ps))], dtype=object)
    steps, stack = split_users(ps, 0.3, seed=0)
    assert not set(steps.user) & set(stack.user) and set(steps.user) | set(stack.user) == set(ps.user)
    assert 0.1 < len(set(stack.user)) / 24 < 0.5
    tc = StageSettings(lr=1e-2, batch_size=16, epochs=1, bf16="off", stack_share=0.3)
    meta = train_cf(model, ps, ps, tc, tok.pad_token_id, skip_init="refit", log=lambda m: None)
    assert meta["stack_pairs"] == len(stack)
    trained = float(model.lm_scale.detach())
    init_skip(model, stack, "refit", tok.pad_token_id, bf16="off")  # the same fit again on the held users: no change
    assert abs(float(model.lm_scale.detach()) - trained) < 1e-6
    init_skip(model, ps, "refit", tok.pad_token_id, bf16="off")  # on every user it differs
    assert abs(float(model.lm_scale.detach()) - trained) > 1e-4
    one_user = ps.subset(np.flatnonzero(ps.user == "u0"))
    assert all(p is one_user for p in split_users(one_user, 0.3, seed=0))  # too few users to split: the whole set
