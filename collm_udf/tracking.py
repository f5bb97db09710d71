"""MLflow tracking of the train stage (conf model.train.mlflow; off by default). No pyspark import here, and
mlflow is imported only when tracking is enabled.

One MLflow run per trained model version (run name = the model version):
  params    the model conf flattened (model.backbone, model.train.cf_lr, ...), als_run_id, model_version, ds,
            pairs per set (pairs.text, pairs.cf, pairs.hold)
  metrics   per epoch (step = epoch): text_loss, text_valid_auc, cf_loss, cf_valid_auc;
            final: holdout_auc_text, holdout_auc_cf (the best epochs' holdout AUC, as in collm_models)
  artifacts train_report.json (the trainer's full report); the model "scorer": the checkpoint as a pyfunc
            model (collm_udf/mlflow_model.py, logged from code: nothing is pickled), so
            mlflow.pyfunc.load_model(uri).predict(frame) scores a pandas frame of history titles, candidate
            text and factors, and mlflow.pyfunc.spark_udf serves it on Spark
  tags      collm.model_version, collm.ds, collm.checkpoint (the registered checkpoint's path)
On Databricks nothing needs configuring: the runtime ships mlflow and its tracking URI and experiment are the
workspace's. Elsewhere give tracking_uri: a tracking server (http://...), sqlite:///mlflow.db (MLflow 3's
default; needs SQLAlchemy, i.e. the full mlflow package, not mlflow-skinny), or a file store (file:/path/mlruns;
recent MLflow 3 releases refuse it unless MLFLOW_ALLOW_FILE_STORE=true). Each of these is checked before training.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import urlparse
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    from collm_udf.config.model_conf import MlflowConfig

MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
MODEL_NAME = "scorer"


class TrackingError(RuntimeError):
    """MLflow tracking is enabled but cannot work as configured."""


def require_mlflow(mc: "MlflowConfig"):
    """The mlflow module, its tracking URI set from the conf; a clear error before any training when it cannot
    work (call it first: a failure after hours of training would lose the run's tracking)."""
    try:
        import mlflow
    except ImportError:
        raise TrackingError("model.train.mlflow.enabled is true but mlflow is not installed: pip install "
                            "'collm-udf[mlflow]' (or mlflow-skinny); Databricks runtimes include it") from None
    if mc.tracking_uri is not None:
        mlflow.set_tracking_uri(mc.tracking_uri)
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("sqlite:", "postgresql:", "mysql:", "mssql:")):
        try:
            import sqlalchemy  # noqa: F401 - the SQL tracking stores need it; mlflow-skinny lacks it
        except ImportError:
            raise TrackingError(f"MLflow tracking URI {uri!r} needs SQLAlchemy (the full mlflow package); set "
                                "model.train.mlflow.tracking_uri (e.g. databricks or http://host:5000) or "
                                "MLFLOW_TRACKING_URI") from None
    if urlparse(uri).scheme in ("", "file"):
        try:
            from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
        except ImportError:  # older MLflow uses the file store without asking
            return mlflow
        if not MLFLOW_ALLOW_FILE_STORE.get():
            raise TrackingError(f"MLflow tracking URI {uri!r} is a file store, which this MLflow refuses unless "
                                "the environment sets MLFLOW_ALLOW_FILE_STORE=true; set that, or use a tracking "
                                "server, databricks, or sqlite (with the full mlflow package)")
    return mlflow


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"cf_lr": 1e-3}} -> {"train.cf_lr": 1e-3}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def epoch_metrics(report: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """(name, value, step = epoch) for every finite per-epoch loss and holdout AUC in the trainer's report."""
    out = []
    for stage in ("text", "cf"):
        for rec in report.get(stage, {}).get("history", []):
            for name, key in (("loss", "loss"), ("valid_auc", "valid_auc")):
                v = rec.get(key)
                if v is not None and math.isfinite(v):
                    out.append((f"{stage}_{name}", float(v), int(rec["epoch"])))
    return out


def log_training(mc: "MlflowConfig", *, model_conf: Mapping[str, Any], als_run_id: Optional[str],
                 model_version: str, ds: str, report: Mapping[str, Any], checkpoint_dir: str) -> dict:
    """Log one trained model as an MLflow run; {"run_id", "experiment_id", "model_uri"}."""
    mlflow = require_mlflow(mc)
    if mc.experiment is not None:
        mlflow.set_experiment(mc.experiment)
    params = {f"model.{k}": v for k, v in flatten(model_conf).items()}
    params.update({"als_run_id": als_run_id, "model_version": model_version, "ds": ds})
    params.update({f"pairs.{k}": v for k, v in report.get("pairs", {}).items()})
    # MLflow caps a param value's length (6000 characters in 2.x); a custom template is the only long one.
    params = {k: (str(v)[:6000] if v is not None else "") for k, v in params.items()}
    final = {f"holdout_auc_{s}": report[s]["best_auc"] for s in ("text", "cf") if s in report}
    # nested: inside a run the caller (a notebook, a job's own tracking) already has open
    with mlflow.start_run(run_name=model_version, nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags({"collm.model_version": model_version, "collm.ds": ds,
                         "collm.checkpoint": os.fspath(checkpoint_dir)})
        mlflow.log_params(params)
        for name, value, step in epoch_metrics(report):
            mlflow.log_metric(name, value, step=step)
        mlflow.log_metrics({k: float(v) for k, v in final.items() if v is not None and math.isfinite(v)})
        mlflow.log_dict(dict(report), "train_report.json")
        info = _log_scorer(mlflow, os.fspath(checkpoint_dir), mc.registered_model)
    return {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "model_uri": info.model_uri}


def _log_scorer(mlflow, checkpoint_dir: str, registered_model: Optional[str]):
    from collm_udf import __version__

    kwargs: dict[str, Any] = {
        "python_model": str(MODEL_CODE), "artifacts": {"checkpoint": checkpoint_dir},
        # Explicit, so MLflow does not start a process that loads the model to infer them; collm-udf brings
        # torch, transformers and the embedded backbone.
        "pip_requirements": [f"collm-udf=={__version__}"],
        "registered_model_name": registered_model,
    }
    if int(mlflow.__version__.split(".")[0]) >= 3:
        kwargs["name"] = MODEL_NAME
    else:  # MLflow 2.x names the model by its artifact path
        kwargs["artifact_path"] = MODEL_NAME
    return mlflow.pyfunc.log_model(**kwargs)
