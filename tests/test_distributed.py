"""Training in 2 CPU processes (gloo) through pyspark's TorchDistributor, against the single-process trainer on
the same pairs of a MovieLens-100K slice.

Each rank trains on its strided share of every global batch with a loss scaled so that DDP's averaged gradient
is the whole batch's (collm_udf/core/training.py), and the backbone below has dropout off, so the two runs differ only
by float summation order: their per-epoch losses must agree to LOSS_TOL. A wrong share (ranks overlapping,
pairs skipped, another batch size) moves the curve by far more (checked by hand: ranks sharing one share: ~1e-2).
"""
from __future__ import annotations

import shutil
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import pytest

from collm_udf.core import checkpoint
from collm_udf.config import config_from_dict
from collm_udf.spark.asof import AsOf
from collm_udf.core.pairs import PairSet
from collm_udf.core.training import fit
from collm_udf.core.inference import predict
from collm_udf.spark.context import StageContext
from helpers import load_ml100k, save_tiny_bert, slice_conf

D = 4  # factor dim
LOSS_TOL = 1e-5  # per-epoch mean BCE (measured here: 5e-8); float32 all-reduce order only
SIZES = {"text": 97, "cf": 99, "hold": 64}  # last batches of 1 and 3 pairs: uneven and empty rank shares


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    """tests/conftest.py's tiny random BERT, with dropout off (every rank would draw its own dropout masks)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-nodrop"), hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)


def slice_sets(ml100k: Path) -> dict[str, PairSet]:
    """The newest 260 ratings of the test slice (users divisible by 3), with their liked-title histories and
    rank-4 SVD factors of the slice's centred like matrix standing in for ALS."""
    ratings, items = load_ml100k(ml100k)
    r = ratings[ratings["user"] % 3 == 0].sort_values(["unix_ts", "user", "item"]).reset_index(drop=True)
    r["label"] = (r["rating"] >= 4).astype(np.int64)
    users, movies = np.unique(r["user"]), np.unique(r["item"])
    m = np.zeros((len(users), len(movies)), np.float32)  # (users, items)
    m[np.searchsorted(users, r["user"]), np.searchsorted(movies, r["item"])] = r["label"] - r["label"].mean()
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    U = {int(k): f for k, f in zip(users, u[:, :D] * np.sqrt(s[:D]))}
    V = {int(k): f for k, f in zip(movies, vt[:D].T * np.sqrt(s[:D]))}
    liked: dict = defaultdict(lambda: deque(maxlen=3))
    history = []
    for user, item, label in zip(r["user"], r["item"], r["label"]):
        history.append(list(liked[user]))  # strictly before this rating
        if label:
            liked[user].append(int(item))
    title = dict(zip(items["movie_id"].astype(int), items["title"]))
    out, start = {}, len(r) - sum(SIZES.values())
    for name, n in SIZES.items():
        part = slice(start, start + n)
        out[name] = PairSet.from_ids(r["user"][part].astype(int).tolist(), r["item"][part].astype(int).tolist(),
                                     history[part], r["label"][part], text=title, user_factors=U,
                                     item_factors=V, factor_dim=D)
        start += n
    assert len(np.unique(out["hold"].label)) == 2
    return out


def test_two_gloo_processes_follow_the_single_process_loss_curve(spark, ml100k, slice_dir, backbone, tmp_path):
    from collm_udf.spark.distributed import fit_distributed

    cfg = config_from_dict(slice_conf(slice_dir, tmp_path / "wh", model={
        "backbone": backbone, "max_tokens": 48, "candidate_max_tokens": 12, "tuning": "full",
        "train": {"text_epochs": 3, "cf_epochs": 3, "batch_size": 16, "patience": 5, "bf16": "off",
                  "text_lr": 1e-3, "cf_lr": 1e-2, "cf_dropout": 0.2,
                  "distributed": {"num_processes": 2, "local_mode": True, "use_gpu": False}}}))
    sets = slice_sets(ml100k)
    ref, _, single = fit(cfg.model.spec(D, "als_slice"), cfg.model.stages(), sets, log=lambda m: None)
    logs: list[str] = []
    ckpt, multi = fit_distributed(spark, cfg, sets, D, "als_slice", str(tmp_path / "work"), log=logs.append)
    assert any("2 processes through TorchDistributor" in m for m in logs)

    for stage in ("text", "cf"):
        one = np.array([h["loss"] for h in single[stage]["history"]])
        two = np.array([h["loss"] for h in multi[stage]["history"]])
        assert len(one) == len(two) == 3
        assert one[-1] < one[0] and two[-1] < two[0], (stage, one, two)  # both curves go down
        np.testing.assert_allclose(two, one, rtol=0, atol=LOSS_TOL, err_msg=f"stage {stage} loss curve")
        auc1 = [h["valid_auc"] for h in single[stage]["history"]]
        auc2 = [h["valid_auc"] for h in multi[stage]["history"]]
        np.testing.assert_allclose(auc2, auc1, rtol=0, atol=0.005, err_msg=f"stage {stage} holdout AUC")
        steps = -(-SIZES[stage] // 16)
        for h in multi[stage]["history"]:
            # every pair trained once per epoch, split evenly: ranks differ by at most one pair per batch
            assert h["world_size"] == 2 and sum(h["shard_pairs"]) == SIZES[stage]
            assert abs(h["shard_pairs"][0] - h["shard_pairs"][1]) <= steps

    # Rank 0's checkpoint (the best epochs' weights) scores the holdout like the single-process model.
    assert [multi[s]["best_epoch"] for s in ("text", "cf")] == [single[s]["best_epoch"] for s in ("text", "cf")]
    model, tok = checkpoint.load(ckpt, expect_factor_dim=D, expect_als_run_id="als_slice")
    hold = sets["hold"]
    got = predict(model, hold, tok.pad_token_id, use_cf=True, bf16="off")
    want = predict(ref, hold, tok.pad_token_id, use_cf=True, bf16="off")
    assert np.abs(got - want).max() < 1e-4  # measured here: 1.2e-7


@pytest.mark.slow
def test_train_stage_uses_the_distributor_and_logs_to_mlflow(spark, pipeline_run, slice_dir, backbone,
                                                             tmp_path_factory, monkeypatch):
    """The Spark train stage with distributed.num_processes 2 and MLflow on: registers rank 0's checkpoint."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store in tmp (see tests/test_tracking.py)
    previous = mlflow.get_tracking_uri()
    from collm_udf.spark.stages import train
    from collm_udf.spark import model_registry
    from collm_udf.spark.tables import Tables

    cfg0, _, _ = pipeline_run
    root = tmp_path_factory.mktemp("dist-warehouse")
    shutil.copytree(cfg0.tables.root, root, dirs_exist_ok=True)  # this test's own copy: it adds a model
    uri = (root / "mlruns").as_uri()
    cfg = config_from_dict(slice_conf(slice_dir, root, model={
        "backbone": backbone, "max_tokens": 48, "candidate_max_tokens": 12,
        "train": {"text_pairs": 64, "cf_pairs": 64, "holdout_pairs": 48, "text_epochs": 1, "cf_epochs": 2,
                  "bf16": "off", "distributed": {"num_processes": 2, "use_gpu": False},
                  "mlflow": {"enabled": True, "experiment": "collm-dist", "tracking_uri": uri}}}))
    try:
        out = train.run(StageContext.of(spark, cfg, "2026-02-02", log=lambda m: None))
    finally:
        mlflow.set_tracking_uri(previous)  # the stage set the process's tracking URI from the conf

    row = model_registry.model_as_of(Tables(spark, cfg.tables), AsOf.of(cfg, "2026-02-02"))
    assert row["model_version"] == out["model_version"] and row["path"] == out["path"]
    model, _ = checkpoint.load(out["path"], expect_als_run_id=row["als_run_id"])
    assert not Path(out["path"] + ".train").exists()  # the work directory is gone after success
    run = mlflow.tracking.MlflowClient(uri).get_run(out["mlflow"]["run_id"])
    assert run.data.params["model.train.distributed.num_processes"] == "2"
    assert run.data.params["model_version"] == out["model_version"]
    cf_loss = mlflow.tracking.MlflowClient(uri).get_metric_history(run.info.run_id, "cf_loss")
    assert sorted({m.step for m in cf_loss}) == [0, 1]  # per epoch (MLflow 3 may repeat one: see test_tracking)
    assert run.data.metrics["holdout_auc_cf"] == pytest.approx(out["holdout_auc_cf"])


def test_the_processes_read_back_the_statistics_users_and_ranker_a_single_process_trains_with(tmp_path):
    # The shipped signals (item_recent, ...) come from the pairs' statistics and skip_init features stacks on the
    # pool's features-only ranker: without them on disk every rank failed (SignalError) or stacked on another fit.
    from collm_udf.core.features import FeatureRanker
    from collm_udf.spark.distributed import read_pairs, write_pairs
    from helpers import pairs

    ps = pairs(12, 0)
    ps.stats = {"item_recent": np.linspace(0, 3, 12), "item_count": np.arange(12.0)}
    ps.user = np.array([f"u{i % 3}" for i in range(12)], dtype=object)
    bare = pairs(5, 1)
    names = ["als_dot", "item_recent", "item_count"]
    base = FeatureRanker.fit(names, ps.signals(names), ps.label)
    sets, got = read_pairs(write_pairs({"cf": ps, "hold": bare}, tmp_path / "pairs", base))
    assert got == base
    np.testing.assert_array_equal(sets["cf"].signals(names), ps.signals(names))
    assert list(sets["cf"].user) == list(ps.user)
    assert sets["hold"].user is None and sets["hold"].stats is None
    np.testing.assert_array_equal(sets["hold"].label, bare.label)
    _, none = read_pairs(write_pairs({"cf": ps}, tmp_path / "pairs"))  # a rewrite without a ranker drops the old
    assert none is None
