"""The CoLLM core on tiny random backbones (an encoder and a causal LM built from configs; no downloads)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from collm_udf.core import checkpoint
from collm_udf.core.batching import collate
from collm_udf.core.spec import ModelError, ModelSpec
from collm_udf.core.prompt import PromptBuilder, PromptError
from collm_udf.core.inference import group_pairs, predict_packed
from collm_udf.core.pairs import PairSet
from collm_udf.core.spec import StageSettings
from collm_udf.core.training import train_stage
from collm_udf.core.inference import predict
from helpers import D, make, pairs

def batch(tok, pb, n=3, user_has=True, item_has=True, seed=0):
    rng = np.random.default_rng(seed)
    enc = [pb.encode(["Toy Story (1995)", "Fargo (1996)"][: i + 1], f"Movie {i}") for i in range(n)]
    return collate(enc, rng.normal(size=(n, D)), rng.normal(size=(n, D)), np.full(n, user_has),
                   np.full(n, item_has), tok.pad_token_id)


# ------------------------------------------------------------------------------------------ prompt
def test_prompt_marks_cf_slots_and_truncates_oldest_history_first(tiny_encoder):
    _, tok, pb = make(tiny_encoder)
    titles = [f"Old Title Number {i} (19{i:02d})" for i in range(10)]
    e = pb.encode(titles, "The Candidate Movie (2000)")
    assert len(e.input_ids) <= 48
    assert e.input_ids[e.user_pos] == pb.cf_id and e.input_ids[e.item_pos] == pb.cf_id
    text = tok.decode(e.input_ids)
    assert "candidate movie" in text  # the candidate survives whole
    assert "title number 9" in text and "title number 0" not in text  # newest kept, oldest dropped
    long_cand = pb.encode([], "word " * 500)
    assert long_cand.input_ids[long_cand.item_pos] == pb.cf_id and len(long_cand.input_ids) <= 48


def test_template_errors(tiny_encoder):
    _, tok, _ = make(tiny_encoder)
    with pytest.raises(PromptError, match="exactly once"):
        PromptBuilder(tok, "{history} {candidate} {item_cf}")
    with pytest.raises(PromptError, match="unknown field"):
        PromptBuilder(tok, "{history} {user_cf} {candidate} {item_cf} {oops}")
    with pytest.raises(PromptError, match="after it"):
        PromptBuilder(tok, "{history} {user_cf} {item_cf} {candidate}")  # the item slot would sit in the prefix
    with pytest.raises(PromptError, match="exceeds max_tokens"):
        PromptBuilder(tok, max_tokens=40)  # CoLLM's long template does not fit


# ------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("kind", ["encoder", "causal"])
def test_cf_tokens_land_in_their_slots_and_change_the_score(kind, tiny_encoder, tiny_causal):
    model, tok, pb = make(tiny_encoder if kind == "encoder" else tiny_causal, kind)
    model.eval()
    enc = [pb.encode(["Toy Story (1995)", "Fargo (1996)"][: i + 1], f"Movie {i}") for i in range(3)]
    b = batch(tok, pb)
    cf = model.cf_vectors(b["slot_kind"], b["slot_f"], b["slot_has"])
    emb = model.embed(b["input_ids"], b["slot_row"], b["slot_pos"], cf)
    plain = model.backbone.get_input_embeddings()(b["input_ids"])
    for r, e in enumerate(enc):
        # the placeholder ids sit where the template put {user_cf} and {item_cf}; the CF vectors replace them
        assert b["input_ids"][r, e.user_pos] == pb.cf_id and b["input_ids"][r, e.item_pos] == pb.cf_id
        mine = b["slot_row"] == r
        user_k = int(torch.nonzero(mine & (b["slot_kind"] == 0))[0, 0])
        item_k = int(torch.nonzero(mine & (b["slot_kind"] == 1))[0, 0])
        assert torch.equal(emb[r, e.user_pos], cf[user_k]) and torch.equal(emb[r, e.item_pos], cf[item_k])
        others = [t for t in range(emb.shape[1]) if t not in (e.user_pos, e.item_pos)]
        assert torch.equal(emb[r, others], plain[r, others])
    with torch.no_grad():
        s1 = model(**b)
        user_slots = (b["slot_kind"] == 0).unsqueeze(-1)
        assert not torch.allclose(s1, model(**dict(b, slot_f=b["slot_f"] + user_slots * 1.0)))
        item_slots = (b["slot_kind"] == 1).unsqueeze(-1)
        assert not torch.allclose(s1, model(**dict(b, slot_f=b["slot_f"] + item_slots * 1.0)))


def test_cold_item_uses_the_no_cf_vector(tiny_encoder):
    model, tok, pb = make(tiny_encoder)
    model.eval()
    b = batch(tok, pb, item_has=False)
    cf = model.cf_vectors(b["slot_kind"], b["slot_f"], b["slot_has"])
    items = b["slot_kind"] == 1
    assert torch.equal(cf[items], model.no_cf[1].expand(int(items.sum()), -1))
    with torch.no_grad():
        s1 = model(**b)
        noise = torch.randn_like(b["slot_f"]) * 100 * items.unsqueeze(-1)  # whatever sits in a cold item's row
        s2 = model(**dict(b, slot_f=b["slot_f"] + noise))
    assert torch.equal(s1, s2)


@pytest.mark.parametrize("kind", ["encoder", "causal"])
def test_packed_scores_equal_one_prompt_per_pair(kind, tiny_encoder, tiny_causal):
    model, tok, pb = make(tiny_encoder if kind == "encoder" else tiny_causal, kind)
    model.eval()
    rng = np.random.default_rng(3)
    n_users, per_user = 4, 9
    hist = [["Toy Story (1995)", "Fargo (1996)", "Heat (1995)"][: u + 1] for u in range(n_users)]
    uf, vf = rng.normal(size=(n_users, D)).astype(np.float32), rng.normal(size=(40, D)).astype(np.float32)
    rows = [(u, int(i)) for u in range(n_users) for i in rng.choice(40, per_user, replace=False)]
    rng.shuffle(rows)  # a user's pairs need not be adjacent
    ps = PairSet([hist[u] for u, _ in rows], [f"Candidate movie number {i}" + " x" * (i % 5) for _, i in rows],
                 np.stack([uf[u] for u, _ in rows]), np.stack([vf[i] for _, i in rows]),
                 np.array([u != 3 for u, _ in rows]), np.array([i % 4 != 0 for _, i in rows]),
                 np.zeros(len(rows), np.int64))
    naive = predict(model, ps.encode(pb), tok.pad_token_id, use_cf=True, bf16="off")
    # small rows and batches: several rows per user, several candidates per row, several forward batches
    packed = predict_packed(model, pb, ps, tok.pad_token_id, max_row_tokens=60, batch_tokens=150, bf16="off")
    rel = np.abs(packed - naive) / np.maximum(np.abs(naive), 1e-3)
    assert rel.max() < 1e-4, rel.max()
    assert len(group_pairs(ps)) == n_users
    # packing is what makes it cheaper: tokens through the backbone
    rows_packed, _ = pack_groups_for(pb, ps, tok.pad_token_id)
    assert int((rows_packed["segment"] >= 0).sum()) < 0.7 * sum(len(e.input_ids) for e in ps.encoded)


def pack_groups_for(pb, ps, pad_id):
    from collm_udf.core.batching import UserGroup, pack

    groups = []
    for idx in group_pairs(ps):
        prefix, upos = pb.encode_prefix(ps.history[idx[0]])
        groups.append(UserGroup(prefix, upos, ps.user_f[idx[0]], bool(ps.user_has[idx[0]]),
                                [pb.encode_candidate(ps.candidate[i]) for i in idx], ps.item_f[idx], ps.item_has[idx]))
    return pack(groups, pad_id, max_row_tokens=512)


def test_encoder_prefix_never_sees_the_candidate(tiny_encoder):
    """Block attention: a different candidate leaves the prefix's hidden states unchanged."""
    model, tok, pb = make(tiny_encoder)
    model.eval()
    enc = [pb.encode(["Toy Story (1995)"], c) for c in ("Alien (1979)", "A much longer candidate title (2001)")]
    b = collate(enc, np.ones((2, D)), np.ones((2, D)), np.ones(2, bool), np.ones(2, bool), tok.pad_token_id)
    from collm_udf.core.attention import segment_mask

    with torch.no_grad():
        emb = model.embed(b["input_ids"], b["slot_row"], b["slot_pos"],
                          model.cf_vectors(b["slot_kind"], b["slot_f"], b["slot_has"]))
        h = model.backbone(inputs_embeds=emb, attention_mask=segment_mask(b["segment"], False, emb.dtype),
                           position_ids=b["position_ids"]).last_hidden_state
    cs = enc[0].candidate_start
    assert cs == enc[1].candidate_start
    torch.testing.assert_close(h[0, :cs], h[1, :cs], rtol=1e-5, atol=1e-6)


def test_stage_cf_trains_only_the_projector(tiny_encoder):
    model, tok, pb = make(tiny_encoder, tuning="full")
    before = {n: t.clone() for n, t in model.state_dict().items()}
    ps, hold = pairs(64).encode(pb), pairs(32, seed=1).encode(pb)
    train_stage(model, "cf", ps, hold, StageSettings(lr=1e-2, epochs=2, batch_size=16, bf16="off"),
                tok.pad_token_id, log=lambda m: None)
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith("projector.") or n == "no_cf" for n in changed)
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith(("backbone.", "head.")))


def test_training_resumes_from_saved_state(tiny_encoder, tmp_path):
    model, tok, pb = make(tiny_encoder)
    ps, hold = pairs(32).encode(pb), pairs(16, seed=1).encode(pb)
    tc = StageSettings(lr=1e-2, epochs=1, batch_size=16, bf16="off", patience=5)
    m1 = train_stage(model, "cf", ps, hold, tc, tok.pad_token_id, state_dir=str(tmp_path), log=lambda m: None)
    assert [h["epoch"] for h in m1["history"]] == [0]
    logs = []
    tc.epochs = 2
    m2 = train_stage(model, "cf", ps, hold, tc, tok.pad_token_id, state_dir=str(tmp_path), log=logs.append)
    assert any("resuming stage cf after epoch 0" in m for m in logs)
    assert [h["epoch"] for h in m2["history"]] == [0, 1]


@pytest.mark.parametrize("kind, tuning", [("encoder", "full"), ("causal", "lora")])
def test_checkpoint_round_trip_gives_identical_scores(kind, tuning, tiny_encoder, tiny_causal, tmp_path):
    model, tok, pb = make(tiny_encoder if kind == "encoder" else tiny_causal, kind, tuning)
    ps, hold = pairs(32).encode(pb), pairs(16, seed=1).encode(pb)
    tc = StageSettings(lr=1e-2, epochs=1, batch_size=16, bf16="off")
    train_stage(model, "text", ps, hold, tc, tok.pad_token_id, log=lambda m: None)
    train_stage(model, "cf", ps, hold, tc, tok.pad_token_id, log=lambda m: None)
    want = predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off")
    checkpoint.save(model, tmp_path / "ckpt")
    loaded, _ = checkpoint.load(tmp_path / "ckpt", expect_factor_dim=D, expect_als_run_id="als_test")
    got = predict(loaded, hold, tok.pad_token_id, use_cf=True, bf16="off")
    np.testing.assert_array_equal(got, want)
    if tuning == "lora":
        assert any("lora_" in k for k in loaded.saved_state())
        assert not any(k.startswith("backbone.") and "lora_" not in k for k in loaded.saved_state())


def test_checkpoint_refuses_mismatch_and_tampering(tiny_encoder, tmp_path):
    model, _, _ = make(tiny_encoder)
    checkpoint.save(model, tmp_path / "c")
    with pytest.raises(ModelError, match="factor_dim 4 != factors given"):
        checkpoint.load(tmp_path / "c", expect_factor_dim=8)
    with pytest.raises(ModelError, match="trained on als_run_id als_test"):
        checkpoint.load(tmp_path / "c", expect_als_run_id="als_other")
    (tmp_path / "c" / checkpoint.WEIGHTS).write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ModelError, match="not a valid safetensors"):
        checkpoint.load(tmp_path / "c")


# ------------------------------------------------------------------------------------------ signals
def signal_pairs(n=96, seed=0) -> PairSet:
    """Pairs whose label follows a statistic the prompt does not show: learnable only through the skip."""
    ps = pairs(n, seed)
    rate = np.random.default_rng(seed + 7).random(n)
    ps.label = (rate > 0.5).astype(np.int64)
    ps.stats = {"item_like_rate": rate * 3 + 1}  # off-centre, so the standardisation matters
    return ps


def test_signal_skip_learns_packs_round_trips_and_refuses_pairs_without_it(tiny_encoder, tmp_path):
    from collm_udf.core.inference import load_predict_fn
    from collm_udf.core.signals import SignalError
    from collm_udf.core.metrics import auc

    model, tok, pb = make(tiny_encoder, signals=["als_dot", "item_like_rate"])
    ps, hold = signal_pairs().encode(pb), signal_pairs(48, seed=1).encode(pb)
    x = ps.signals(model.spec.signals)
    model.set_signal_scale(x.mean(0), x.std(0))
    before = auc(hold.label, predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off"))
    train_stage(model, "cf", ps, hold, StageSettings(lr=5e-2, epochs=3, batch_size=16, bf16="off"),
                tok.pad_token_id, log=lambda m: None)
    after = auc(hold.label, predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off"))
    assert after > 0.9 > before + 0.2, (before, after)
    assert float(model.skip.weight.detach()[0, 1]) > 0  # the like rate's weight
    want = predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off")
    packed = predict_packed(model, pb, hold, tok.pad_token_id, max_row_tokens=60, batch_tokens=150, bf16="off")
    np.testing.assert_allclose(packed, want, rtol=1e-4, atol=1e-5)
    # without CF the skip stays out: scores do not move with the statistic
    moved = signal_pairs(48, seed=1).encode(pb)
    moved.stats = {"item_like_rate": moved.stats["item_like_rate"] * 10}
    np.testing.assert_array_equal(predict(model, hold, tok.pad_token_id, use_cf=False, bf16="off"),
                                  predict(model, moved, tok.pad_token_id, use_cf=False, bf16="off"))

    checkpoint.save(model, tmp_path / "c")
    assert checkpoint.read_spec(tmp_path / "c").signal_mean == model.spec.signal_mean
    fn = load_predict_fn(str(tmp_path / "c"), "cpu", bf16="off")
    got = fn(hold.history, hold.candidate, hold.user_f, hold.item_f, hold.user_has, hold.item_has, stats=hold.stats)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(SignalError, match="adds signal 'item_like_rate'.*do not carry it"):
        fn(hold.history, hold.candidate, hold.user_f, hold.item_f, hold.user_has, hold.item_has)
    with pytest.raises(ModelError, match="signals: \\['bogus'\\]"):
        ModelSpec(signals=["bogus"])


def test_the_signal_scale_stays_on_the_device_the_model_moved_to(tiny_encoder):
    # init_skip standardises the signals after fit() has moved the model to its training device (a GPU there);
    # the meta device stands in for it on a CPU-only machine
    model, _, _ = make(tiny_encoder, signals=["als_dot", "item_like_rate"])
    model.to("meta")
    model.set_signal_scale([0.5, 0.2], [2.0, 0.1])
    assert model._sig_mean.device.type == model._sig_std.device.type == "meta"
    assert model.spec.signal_mean == [0.5, 0.2]


def test_the_logistic_start_scores_the_signals_before_any_step_and_zero_leaves_the_skip_out(tiny_encoder):
    from collm_udf.core.metrics import auc
    from collm_udf.core.training import init_skip

    model, tok, pb = make(tiny_encoder, signals=["als_dot", "item_like_rate"])
    ps, hold = signal_pairs().encode(pb), signal_pairs(48, seed=1).encode(pb)
    init_skip(model, ps, "zero")
    assert float(model.skip.weight.abs().sum() + model.skip.bias.abs().sum()) == 0.0
    assert model.spec.signal_std[1] == pytest.approx(float(ps.stats["item_like_rate"].std()), rel=1e-5)
    init_skip(model, ps, "logistic")
    skip_part = predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off") - \
        predict(model, hold, tok.pad_token_id, use_cf=False, bf16="off")
    assert auc(hold.label, skip_part) > 0.9 and float(model.skip.weight[0, 1]) > 0.5  # the like rate decides


def test_the_lm_scale_starts_at_a_joint_fit_that_can_turn_the_lm_down_or_round_and_round_trips(tiny_encoder,
                                                                                                   tmp_path):
    # The label follows the signal and the *opposite* of the LM's logit: a start that keeps the LM at weight 1
    # cannot score it; the joint fit gives the LM a negative scale.
    from collm_udf.core.inference import load_predict_fn
    from collm_udf.core.metrics import auc
    from collm_udf.core.training import init_skip

    model, tok, pb = make(tiny_encoder, signals=["als_dot", "item_like_rate"], lm_scale=True)
    plain, _, _ = make(tiny_encoder, signals=["als_dot", "item_like_rate"])
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "lm_scale"})

    def anti_lm_pairs(n, seed):
        ps = signal_pairs(n, seed).encode(pb)
        lm = predict(plain, ps, tok.pad_token_id, use_cf=True, bf16="off")  # the skip is still zero
        rate = ps.stats["item_like_rate"]
        ps.label = ((rate - rate.mean()) / rate.std() - (lm - lm.mean()) / lm.std() > 0).astype(np.int64)
        return ps

    ps, hold = anti_lm_pairs(160, 0), anti_lm_pairs(96, 1)
    got = {}
    for name, m in (("plain", plain), ("lm_scale", model)):
        init_skip(m, ps, "logistic", tok.pad_token_id)
        got[name] = auc(hold.label, predict(m, hold, tok.pad_token_id, use_cf=True, bf16="off"))
    assert got["lm_scale"] > 0.9 and got["lm_scale"] > got["plain"] + 0.15, got
    assert float(model.lm_scale) < 0
    with pytest.raises(ValueError, match="needs pad_id"):
        init_skip(model, ps, "logistic")
    # stage 2 trains the scale with the skip; packed scoring and the checkpoint keep it
    model.set_stage("cf")
    assert model.lm_scale.requires_grad
    want = predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off")
    packed = predict_packed(model, pb, hold, tok.pad_token_id, max_row_tokens=60, batch_tokens=150, bf16="off")
    np.testing.assert_allclose(packed, want, rtol=1e-4, atol=1e-5)
    checkpoint.save(model, tmp_path / "c")
    assert checkpoint.read_spec(tmp_path / "c").lm_scale
    fn = load_predict_fn(str(tmp_path / "c"), "cpu", bf16="off")
    np.testing.assert_allclose(fn(hold.history, hold.candidate, hold.user_f, hold.item_f, hold.user_has,
                                  hold.item_has, stats=hold.stats), want, rtol=1e-5, atol=1e-6)
    # the score's two addends (the table's lm_score, signal_score), packed or not: the signals' part is the skip's
    parts = predict_packed(model, pb, hold, tok.pad_token_id, max_row_tokens=60, batch_tokens=150, bf16="off",
                           parts=True)
    with torch.no_grad():
        skip = model.skip(model.skip_inputs(torch.as_tensor(hold.signals(model.spec.signals)))).squeeze(-1).numpy()
    assert parts.shape == (len(hold), 2) and np.abs(skip).max() > 0.01
    np.testing.assert_allclose(parts, np.stack([want - skip, skip], 1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="lm_scale"):
        ModelSpec(lm_scale=True)


def test_segment_weights_let_a_signal_count_one_way_for_warm_pairs_and_the_other_for_cold(tiny_encoder, tmp_path):
    from collm_udf.core.inference import load_predict_fn
    from collm_udf.core.metrics import auc
    from collm_udf.core.training import init_skip

    def seg_pairs(n, seed):
        ps = pairs(n, seed)
        rng = np.random.default_rng(seed + 3)
        rate = rng.normal(size=n)
        ps.item_has = rng.random(n) > 0.5  # warm: both factors (users all have them)
        ps.label = (np.where(ps.item_has, rate, -rate) > 0).astype(np.int64)
        ps.stats = {"item_like_rate": rate}
        return ps

    got = {}
    for seg in (False, True):
        model, tok, pb = make(tiny_encoder, signals=["als_missing", "item_like_rate"], skip_segments=seg)
        ps, hold = seg_pairs(200, 0).encode(pb), seg_pairs(96, 1).encode(pb)
        init_skip(model, ps, "logistic")
        got[seg] = auc(hold.label, predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off"))
    assert got[True] > 0.9 and got[False] < 0.7, got
    assert model.skip.weight.shape == (1, 4)
    checkpoint.save(model, tmp_path / "c")
    assert checkpoint.read_spec(tmp_path / "c").skip_segments
    fn = load_predict_fn(str(tmp_path / "c"), "cpu", bf16="off")
    np.testing.assert_allclose(fn(hold.history, hold.candidate, hold.user_f, hold.item_f, hold.user_has,
                                  hold.item_has, stats=hold.stats),
                               predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off"), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="skip_segments"):
        ModelSpec(signals=["item_like_rate"], skip_segments=True)


def test_a_hidden_skip_learns_what_a_linear_one_cannot_and_round_trips(tiny_encoder, tmp_path):
    # the label is the sign of (u . v) x (like rate): a weight that depends on another signal
    from collm_udf.core.inference import load_predict_fn
    from collm_udf.core.metrics import auc

    def xor_pairs(n, seed):
        ps = pairs(n, seed)
        rate = np.random.default_rng(seed + 7).normal(size=n)
        ps.label = ((np.einsum("nd,nd->n", ps.user_f, ps.item_f) * rate) > 0).astype(np.int64)
        ps.stats, ps.item_has = {"item_like_rate": rate}, np.ones(n, bool)
        return ps

    got = {}
    for hidden in (0, 16):
        model, tok, pb = make(tiny_encoder, signals=["als_dot", "item_like_rate"], skip_hidden=hidden)
        ps, hold = xor_pairs(192, 0).encode(pb), xor_pairs(96, 1).encode(pb)
        x = ps.signals(model.spec.signals)
        model.set_signal_scale(x.mean(0), x.std(0))
        train_stage(model, "cf", ps, hold, StageSettings(lr=1e-3, skip_lr=2e-2, epochs=6, patience=6, batch_size=16,
                                                       cf_dropout=0.0, bf16="off"), tok.pad_token_id,
                    log=lambda m: None)
        got[hidden] = auc(hold.label, predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off"))
    assert got[16] > 0.85 and got[16] > got[0] + 0.2, got
    checkpoint.save(model, tmp_path / "c")
    assert checkpoint.read_spec(tmp_path / "c").skip_hidden == 16
    fn = load_predict_fn(str(tmp_path / "c"), "cpu", bf16="off")
    np.testing.assert_allclose(fn(hold.history, hold.candidate, hold.user_f, hold.item_f, hold.user_has,
                                  hold.item_has, stats=hold.stats),
                               predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off"), rtol=1e-5, atol=1e-6)


def test_checkpoint_refuses_another_backbone(tiny_encoder, tmp_path):
    model, _, _ = make(tiny_encoder)
    checkpoint.save(model, tmp_path / "c")
    other = tmp_path / "other-backbone"
    shutil.copytree(tiny_encoder, other)
    import json

    spec = json.loads((tmp_path / "c" / checkpoint.CONFIG).read_text())
    spec["spec"]["backbone"] = str(other)
    (tmp_path / "c" / checkpoint.CONFIG).write_text(json.dumps(spec))
    checkpoint.load(tmp_path / "c")  # an identical copy elsewhere is fine
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(cfg, hidden_size=48, intermediate_size=96)))
    with pytest.raises(ModelError, match="is not the one this model was trained on"):
        checkpoint.load(tmp_path / "c")
