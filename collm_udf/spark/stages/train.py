"""Stage 5, train: the CoLLM scorer on sampled pairs and their ALS factors; a checkpoint per version.

collm_models (collm_udf/spark/model_registry.py): a row and a checkpoint per model version.

Which pairs (collm_udf/spark/asof.py): stage 1 (text) samples the part before the label window, stage 2 (CF) and
the early-stopping holdout sample the label window, with the factors of an ALS fit that ends where the window
starts (daily mode: fitted here when it does not exist yet; split mode: the training split's fit). The labels of
stage 2 are thus never among the ALS fit's own targets. Daily mode trains when the newest model of the same model
conf is model.train.retrain_every_days older than the cutoff; a day uses the newest model whose cutoff is not after
its own (model_as_of), its factors rotated into the model's ALS space by the scorer.

Spark samples the pairs deterministically (a hash of the pair and the seed orders them, so a rerun picks the
same rows) and collects only those rows, the titles they mention and their factors; the torch core
(collm_udf.core.training.fit) trains on the driver, or, with model.train.distributed.num_processes > 1, in that many
DistributedDataParallel processes started by pyspark's TorchDistributor (collm_udf/spark/distributed.py). The
model version is derived from the model conf, the ALS run and the sample, so a rerun of the same inputs replaces
its own checkpoint and row. With model.train.mlflow.enabled the run is logged to MLflow (collm_udf/tracking.py).
Without a `model` section in the conf the stage does nothing.
"""

import dataclasses
import datetime as dt
import json
import os
import shutil
import tempfile

from collm_udf.core.pairs import PairSet
from collm_udf.core.signals import STATISTICS, column
from collm_udf.core.training import fit
from collm_udf.spark.asof import AsOf
from collm_udf.spark.context import StageContext
from collm_udf.spark.model_registry import (collm_dir, model_as_of, model_conf_json, model_version, register,
                                            register_checkpoint)
from collm_udf.spark.training_set import label_run, lookups, training_frames


def run(ctx: StageContext) -> dict:
    spark, cfg, tables, ds, log = ctx.spark, ctx.cfg, ctx.tables, ctx.ds, ctx.log
    if cfg.model is None:
        return {"skipped": "no model section in the conf"}
    asof = AsOf.of(cfg, ds)
    if asof.daily:
        prev = model_as_of(tables, asof, conf=model_conf_json(cfg), required=False)
        every = cfg.model.train.retrain_every_days
        if prev is not None and asof.cutoff - prev["cutoff"] < dt.timedelta(days=every):
            return {"model_version": prev["model_version"], "als_run_id": prev["als_run_id"],
                    "reused": f"model of {prev['ds']} (cutoff {prev['cutoff']:%Y-%m-%d %H:%M} UTC; "
                              f"model.train.retrain_every_days = {every})"}
    tracked = cfg.model.train.mlflow
    if tracked.enabled:
        from collm_udf import tracking

        tracking.require_mlflow(tracked)  # fail before training, not after it
    run = label_run(spark, cfg, tables, asof)
    run_id = run["als_run_id"]
    d = json.loads(run["params"])["rank"]
    frames = training_frames(cfg, tables, asof, run)
    text, U, V = lookups(spark, tables, frames, run_id)
    sets = {k: PairSet.from_ids(df["user_id"], df["item_id"], df["history"], df["label"], text=text,
                                user_factors=U, item_factors=V, factor_dim=d,
                                stats={n: df[column(n)] for n in cfg.model.signals if n in STATISTICS})
            for k, df in frames.items()}
    version = model_version(cfg, run_id, ds, frames)
    if cfg.model.train.distributed.num_processes > 1:
        from collm_udf.spark import distributed

        # Shared by every process, and named by the version: it is kept after a failure, so a rerun of the same
        # inputs resumes from the last finished epoch's state; removed after success.
        work = os.path.join(collm_dir(cfg), f"{version}.train")
        ckpt, report = distributed.fit_distributed(spark, cfg, sets, d, run_id, work, log=log)
        out = register_checkpoint(spark, cfg, tables, ckpt, version=version, asof=asof, report=report)
        shutil.rmtree(work, ignore_errors=True)
    else:
        with tempfile.TemporaryDirectory(prefix="collm-train-") as state:
            model, _, report = fit(cfg.model.spec(d, run_id), cfg.model.stages(), sets,
                                     skip_init=cfg.model.train.skip_init, state_dir=state, log=log)
        out = register(spark, cfg, tables, model, version=version, asof=asof, report=report)
    if tracked.enabled:
        out["mlflow"] = tracking.log_training(
            tracked, model_conf=dataclasses.asdict(cfg.model), als_run_id=run_id, model_version=version, ds=ds,
            report=report, checkpoint_dir=out["path"])
        log(f"[train] MLflow run {out['mlflow']['run_id']}: {out['mlflow']['model_uri']}")
    return out
