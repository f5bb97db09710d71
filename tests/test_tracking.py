"""MLflow tracking of a training run (collm_udf/tracking.py) against a local file store in tmp_path.

MLflow 3's default store (sqlite:///mlflow.db) needs SQLAlchemy, which mlflow-skinny lacks, so the tests use a
file: store, which recent MLflow 3 releases accept only with MLFLOW_ALLOW_FILE_STORE=true.
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import pytest

from collm_udf.core import checkpoint
from collm_udf.config import config_from_dict
from collm_udf.config.model_conf import MlflowConfig
from collm_udf.core.inference import load_predict_fn
from collm_udf.core.pairs import PairSet
from collm_udf.core.training import fit
from helpers import slice_conf

mlflow = pytest.importorskip("mlflow")
D = 4  # factor dim


def pairs(n: int, seed: int) -> PairSet:
    rng = np.random.default_rng(seed)
    f_u, f_i = rng.normal(size=(n, D)).astype(np.float32), rng.normal(size=(n, D)).astype(np.float32)
    label = ((f_u * f_i).sum(1) > 0).astype(np.int64)  # learnable through the CF tokens only
    titles = ["Toy Story (1995)", "Fargo (1996)", "Heat (1995)"]
    return PairSet([titles[: i % 4] for i in range(n)], [f"Item {i % 7}" for i in range(n)], f_u, f_i,
                   rng.random(n) > 0.2, rng.random(n) > 0.2, label)


@pytest.fixture(scope="module")
def trained(tiny_encoder, slice_dir, tmp_path_factory):
    """A tiny two-stage training (2 epochs each) and its checkpoint."""
    cfg = config_from_dict(slice_conf(slice_dir, tmp_path_factory.mktemp("wh"), model={
        "backbone": tiny_encoder, "max_tokens": 48, "candidate_max_tokens": 12,
        "train": {"text_epochs": 2, "cf_epochs": 2, "batch_size": 16, "patience": 5, "bf16": "off",
                  "text_lr": 1e-3, "cf_lr": 1e-2}}))
    sets = {"text": pairs(48, 0), "cf": pairs(48, 1), "hold": pairs(32, 2)}
    model, _, report = fit(cfg.model.spec(D, "als_track"), cfg.model.stages(), sets, log=lambda m: None)
    ckpt = checkpoint.save(model, tmp_path_factory.mktemp("ckpt") / "model")
    return cfg, report, str(ckpt)


@pytest.fixture
def file_store(monkeypatch, tmp_path) -> str:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    previous = mlflow.get_tracking_uri()
    yield (tmp_path / "mlruns").as_uri()
    mlflow.set_tracking_uri(previous)  # tracking.require_mlflow sets the process's URI


def test_training_run_is_logged_with_params_metrics_and_a_pyfunc_scorer(trained, file_store):
    cfg, report, ckpt = trained
    mc = MlflowConfig(enabled=True, experiment="collm-tests", tracking_uri=file_store)
    from collm_udf import tracking

    info = tracking.log_training(mc, model_conf=dataclasses.asdict(cfg.model), als_run_id="als_track",
                                 model_version="collm_20260115_test", ds="2026-01-15", report=report,
                                 checkpoint_dir=ckpt)

    client = mlflow.tracking.MlflowClient(mc.tracking_uri)
    run = client.get_run(info["run_id"])
    assert run.info.run_name == "collm_20260115_test"
    p = run.data.params
    assert p["als_run_id"] == "als_track" and p["model.backbone"] == cfg.model.backbone
    assert p["model.train.cf_lr"] == "0.01" and p["pairs.cf"] == "48" and p["pairs.hold"] == "32"
    assert run.data.tags["collm.checkpoint"] == ckpt
    for stage in ("text", "cf"):
        # MLflow 3's log_model links the run's metrics to the logged model, which repeats an entry in the
        # history on some stores: compare the distinct (step, value) points.
        for metric, key in ((f"{stage}_loss", "loss"), (f"{stage}_valid_auc", "valid_auc")):
            points = sorted({(m.step, m.value) for m in client.get_metric_history(info["run_id"], metric)})
            want = [(h["epoch"], h[key]) for h in report[stage]["history"]]
            assert [s for s, _ in points] == [0, 1] and [v for _, v in points] == pytest.approx([v for _, v in want])
        assert run.data.metrics[f"holdout_auc_{stage}"] == pytest.approx(report[stage]["best_auc"])

    # The logged scorer scores a pandas frame exactly as the checkpoint's own predict function does.
    rows = pairs(12, 3)
    frame = pd.DataFrame({
        "history": rows.history,
        "candidate": rows.candidate,
        "user_factors": [list(map(float, f)) if h else None for f, h in zip(rows.user_f, rows.user_has)],
        "item_factors": [list(map(float, f)) if h else None for f, h in zip(rows.item_f, rows.item_has)],
    })
    assert not rows.user_has.all() and not rows.item_has.all()  # missing factors are exercised
    scorer = mlflow.pyfunc.load_model(info["model_uri"])
    got = np.asarray(scorer.predict(frame), np.float64)
    want = load_predict_fn(ckpt)(rows.history, rows.candidate, rows.user_f * rows.user_has[:, None],
                                 rows.item_f * rows.item_has[:, None], rows.user_has, rows.item_has)
    assert got.shape == (12,) and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # Factors matter to the logged model (it did not silently drop the CF columns).
    no_cf = np.asarray(scorer.predict(frame.assign(user_factors=None, item_factors=None)), np.float64)
    assert np.abs(no_cf - got).max() > 1e-4


def test_missing_mlflow_is_a_clear_error(monkeypatch):
    from collm_udf import tracking

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    with pytest.raises(tracking.TrackingError, match="mlflow is not installed"):
        tracking.require_mlflow(MlflowConfig(enabled=True))


def test_store_mlflow_refuses_is_a_clear_error_before_training(tmp_path, monkeypatch):
    from collm_udf import tracking

    previous = mlflow.get_tracking_uri()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    try:
        import mlflow.environment_variables as env

        if hasattr(env, "MLFLOW_ALLOW_FILE_STORE"):  # the MLflow releases that refuse a file store unasked
            with pytest.raises(tracking.TrackingError, match="MLFLOW_ALLOW_FILE_STORE=true"):
                tracking.require_mlflow(MlflowConfig(enabled=True, tracking_uri=(tmp_path / "m").as_uri()))
    finally:
        mlflow.set_tracking_uri(previous)
    try:
        import sqlalchemy  # noqa: F401
        return  # SQLAlchemy is installed: the sqlite store works
    except ImportError:
        pass
    try:
        with pytest.raises(tracking.TrackingError, match="needs SQLAlchemy"):
            tracking.require_mlflow(MlflowConfig(enabled=True, tracking_uri=f"sqlite:///{tmp_path}/m.db"))
    finally:
        mlflow.set_tracking_uri(previous)
