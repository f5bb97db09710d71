"""Stage 5, train: the CoLLM scorer on sampled pairs and their ALS factors; a checkpoint per version.

collm_models (collm_udf/spark/model_registry.py): a row and a checkpoint per model version.

Which pairs (collm_udf/spark/asof.py): stage 1 (text) samples the part before the label window, stage 2 (CF) and
the early-stopping holdout sample the label window, with the factors of an ALS fit that ends where the window
starts (daily mode: fitted here when it does not exist yet; split mode: the training split's fit). The labels of
stage 2 are thus never among the ALS fit's own targets. Daily mode trains when the newest model of the same model
conf is model.train.retrain_every_days older than the cutoff.

Beside the model the stage fits the features-only ranker (collm_udf/core/features.py: the model's signals, a
logistic ranker on the same stage-2 labels; with score.scorer: features it is all the stage trains). Daily mode
then runs the promotion gate (collm_udf/spark/gate.py): the label-window pairs of a stable share of users are kept
out of all training, and on them the new model must beat the features-only ranker, what served so far, ALS and the
popularity lists; table gate records what serves from this day on (collm_udf/spark/serving.py), which the score
stage reads. A day whose history is too short to train (no interactions before the label window, an empty window)
trains nothing and says why; the score stage then serves the last decision, or score.fallback.

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
import time
from typing import Optional

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame

from collm_udf.config import Config
from collm_udf.core.features import FeatureRanker
from collm_udf.core.pairs import PairSet
from collm_udf.core.signals import STATISTICS, column
from collm_udf.core.training import fit
from collm_udf.spark import gate, model_registry, serving
from collm_udf.spark.asof import AsOf, InsufficientHistory
from collm_udf.spark.context import StageContext
from collm_udf.spark.model_registry import (collm_dir, model_as_of, model_conf_json, model_version, register,
                                            register_checkpoint)
from collm_udf.spark.tables import Tables
from collm_udf.spark.training_set import candidate_pool, gated, label_run, lookups, ranker_rows, training_frames


def run(ctx: StageContext) -> dict:
    spark, cfg, tables, ds, log = ctx.spark, ctx.cfg, ctx.tables, ctx.ds, ctx.log
    if cfg.model is None:
        return {"skipped": "no model section in the conf"}
    asof = AsOf.of(cfg, ds)
    if asof.daily:
        prev = last_training(cfg, tables, asof)
        every = cfg.model.train.retrain_every_days
        if prev is not None and asof.cutoff - prev["cutoff"] < dt.timedelta(days=every):
            return {"model_version": prev.get("model_version"), "als_run_id": prev["als_run_id"],
                    "reused": f"training of {prev['ds']} (cutoff {prev['cutoff']:%Y-%m-%d %H:%M} UTC; "
                              f"model.train.retrain_every_days = {every})"}
    lm = cfg.score.scorer != "features"  # the features-only scorer trains no language model
    tracked = cfg.model.train.mlflow
    if tracked.enabled and lm:
        from collm_udf import tracking

        tracking.require_mlflow(tracked)  # fail before training, not after it
    notes: list[str] = []
    pool = None
    try:
        if ctx.tempo.get("label_short"):
            raise InsufficientHistory(
                f"the {ctx.tempo['label_window_days']} days before the cutoff hold {ctx.tempo['label_likes']} likes, "
                f"fewer than tempo.label_likes = {ctx.base_cfg.tempo.label_likes} (tempo.max_label_window_days)")
        run = label_run(spark, cfg, tables, asof)
        # The label window's candidate pool, built once for all who rank it: stage 2's pool pairs, the
        # features-only ranker's rows and the gate's held-out users (each a candidates build on the whole log).
        if asof.daily and ((lm and cfg.model.train.cf_negatives) or cfg.model.signals or gated(cfg, asof)):
            pool = candidate_pool(cfg, tables, asof, run).persist(StorageLevel.MEMORY_AND_DISK)
        return _train(ctx, asof, run, lm=lm, pool=pool, notes=notes)
    except InsufficientHistory as e:  # the day is still served: score.fallback, or the last decision
        log(f"[train] ds={ds}: nothing trained: {e}")
        return {"skipped": f"history too short to train: {e}"}
    finally:
        if pool is not None:
            pool.unpersist()


def _train(ctx: StageContext, asof: AsOf, run: dict, *, lm: bool, pool: Optional[DataFrame], notes: list) -> dict:
    """Fit what the day trains on the label fit `run` (the CoLLM model when `lm`; the features-only ranker), run
    the gate and record what serves. The features-only scorer in daily mode samples no pairs: its ranker learns
    from the pool alone."""
    spark, cfg, tables, ds, log = ctx.spark, ctx.cfg, ctx.tables, ctx.ds, ctx.log
    run_id = run["als_run_id"]
    d = json.loads(run["params"])["rank"]
    frames, sets = None, {}
    if lm or not asof.daily:
        frames = training_frames(cfg, tables, asof, run, notes=notes, pool=pool)
        text, U, V = lookups(spark, tables, frames, run_id)
        sets = {k: PairSet.from_ids(df["user_id"], df["item_id"], df["history"], df["label"], text=text,
                                    user_factors=U, item_factors=V, factor_dim=d,
                                    stats={n: df[column(n)] for n in cfg.model.signals if n in STATISTICS})
                for k, df in frames.items()}
    ranker, rows = features_ranker(cfg, tables, asof, run, sets.get("cf"), pool=pool)
    # named by the sample it learned from; the features-only scorer (it has signals: the conf checks) by its rows
    version = model_version(cfg, run_id, ds, frames if frames is not None else {"ranker": rows})
    out: dict = {"als_run_id": run_id}
    if lm:
        out.update(_fit_lm(ctx, cfg, sets, d=d, run_id=run_id, version=version, asof=asof, base=ranker))
        gate_id, model = version, model_registry.find_model(tables, version)
    else:
        gate_id, model = version.replace("collm_", "features_", 1), None
    if ranker is not None:
        out["features"] = {"weights": ranker.weights(), "intercept": round(ranker.intercept, 4), "fit": ranker.fit_by}
    if gated(cfg, asof):
        t0 = time.time()
        decision = gate.judge(ctx, asof, run, model=model, ranker=ranker, gate_id=gate_id, pool=pool)
        decision["wall_s"] = round(time.time() - t0, 1)
    else:
        why = "gate.enabled is off" if asof.daily else "split mode: no gate"
        decision = {"served": f"collm:{version}" if lm else f"features:{gate_id}", "promoted": True,
                    "reason": f"{why}: the new ranker serves"}
    serving.record(spark, cfg, tables, asof, dict(decision, gate_id=gate_id, model_version=version if lm else None,
                                                  als_run_id=run_id,
                                                  features=ranker.to_json() if ranker is not None else "{}"))
    out["gate"] = {k: decision[k] for k in ("served", "promoted", "reason", "wall_s") if k in decision}
    if "results" in decision:
        res = decision["results"]
        out["gate"]["ndcg"] = {n: r["ndcg"] for n, r in res.items()}
        out["gate"]["recall"] = {n: r["recall"] for n, r in res.items()}
        out["gate"]["proven"] = sorted(n for n, r in res.items() if r.get("proven"))
    if notes:
        out["notes"] = notes
    log(f"[train] ds={ds}: {out['gate']['reason']}")
    return out


def features_ranker(cfg: Config, tables: Tables, asof: AsOf, run: dict, cf: Optional[PairSet], *,
                    pool: Optional[DataFrame] = None) -> tuple[Optional[FeatureRanker], Optional[pd.DataFrame]]:
    """The features-only ranker and, in daily mode, the rows it learned from: the model's signals as a logistic
    ranker on the stage-2 labels, no language model. Daily mode: the whole candidate pool of the label window (its
    users that train; training_set.ranker_rows), fitted as model.train.ranker_fit says; split mode: the stage-2
    pairs `cf`, pooled. (None, None) without signals."""
    names = cfg.model.signals
    if not names:
        return None, None
    if not asof.daily:
        return FeatureRanker.fit(names, cf.signals(names), cf.label), None
    rows = ranker_rows(cfg, tables, asof, run, pool=pool)
    if not rows["label"].sum():
        raise InsufficientHistory(f"the label window's candidate pool holds {len(rows)} pairs of users that train "
                                  "and none they then liked: the features-only ranker has nothing to learn")
    groups = rows["user_id"].to_numpy() if cfg.model.train.ranker_fit == "within_user" else None
    return FeatureRanker.fit(names, rows[[column(n) for n in names]].to_numpy(), rows["label"].to_numpy(),
                             groups=groups), rows


def last_training(cfg: Config, tables: Tables, asof: AsOf) -> Optional[dict]:
    """The newest training of this conf as of the day: its gate decision, else (a warehouse trained before the
    gate existed) its newest model."""
    found = serving.decision_as_of(tables, asof, cfg)
    if found is None and cfg.score.scorer != "features":
        found = model_as_of(tables, asof, conf=model_conf_json(cfg), required=False)
    return found


def _fit_lm(ctx: StageContext, cfg: Config, sets: dict, *, d: int, run_id: str, version: str, asof: AsOf,
            base: Optional[FeatureRanker]) -> dict:
    """Train the CoLLM model on the sets (on the driver, or in several processes) and register it. `base`: the
    features-only ranker, which skip_init features stacks the model on."""
    spark, tables, ds, log = ctx.spark, ctx.tables, ctx.ds, ctx.log
    tracked = cfg.model.train.mlflow
    if cfg.model.train.distributed.num_processes > 1:
        from collm_udf.spark import distributed

        # Shared by every process, and named by the version: it is kept after a failure, so a rerun of the same
        # inputs resumes from the last finished epoch's state; removed after success.
        work = os.path.join(collm_dir(cfg), f"{version}.train")
        ckpt, report = distributed.fit_distributed(spark, cfg, sets, d, run_id, work, log=log, base=base)
        out = register_checkpoint(spark, cfg, tables, ckpt, version=version, asof=asof, report=report)
        shutil.rmtree(work, ignore_errors=True)
    else:
        with tempfile.TemporaryDirectory(prefix="collm-train-") as state:
            spec = cfg.model.spec(d, run_id, cfg.candidates.min_item_interactions)
            model, _, report = fit(spec, cfg.model.stages(), sets, skip_init=cfg.model.train.skip_init,
                                   state_dir=state, log=log, base=base)
        out = register(spark, cfg, tables, model, version=version, asof=asof, report=report)
        if model.lm_scale is not None:
            out["lm_scale"] = model.lm_weights()
    if tracked.enabled:
        from collm_udf import tracking

        out["mlflow"] = tracking.log_training(
            tracked, model_conf=dataclasses.asdict(cfg.model), als_run_id=run_id, model_version=version, ds=ds,
            report=report, checkpoint_dir=out["path"])
        log(f"[train] MLflow run {out['mlflow']['run_id']}: {out['mlflow']['model_uri']}")
    return out
