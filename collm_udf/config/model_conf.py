"""Conf section `model`: the CoLLM scorer, how it is trained (model.train), in how many processes
(model.train.distributed) and whether runs are tracked (model.train.mlflow).

Same conventions as collm_udf/config.py: every field carries help text, __post_init__ validates, and the loader
there rejects unknown keys and wrong types with the key's dotted path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from collm_udf.config.base import ConfigError, help_field as _help
from collm_udf.core.spec import Architecture, ModelError, ModelSpec, StageSettings


@dataclass
class DistributedConfig:
    """Training in several processes (DistributedDataParallel) started by pyspark's TorchDistributor."""

    num_processes: int = _help("training processes, one per GPU (or CPU process); 0 or 1 = the single-process "
                               "trainer on the driver", 0)
    local_mode: bool = _help("true: every process on the driver (one multi-GPU machine); false: one Spark "
                             "barrier task per process on the executors (multi-node; tables.models_dir must be "
                             "storage every node reads, e.g. /Volumes/...)", True)
    use_gpu: Optional[bool] = _help("one GPU per process with nccl (true) or CPU processes with gloo (false); "
                                    "unset = GPUs when Spark has them for the driver (local_mode) or the tasks "
                                    "(spark.task.resource.gpu.amount)", None)

    def __post_init__(self):
        if self.num_processes < 0:
            raise ConfigError("num_processes must be >= 0 (0 or 1: one process)")


@dataclass
class MlflowConfig:
    """MLflow tracking of the train stage: params, per-epoch metrics and the scorer as a pyfunc model."""

    enabled: bool = _help("log each train-stage run to MLflow (needs the mlflow or mlflow-skinny package; "
                          "Databricks runtimes have it)", False)
    experiment: Optional[str] = _help("experiment name, e.g. /Users/me@example.com/collm on Databricks; unset = "
                                      "the active experiment (a Databricks notebook's own)", None)
    tracking_uri: Optional[str] = _help("tracking store, e.g. databricks, http://host:5000 or file:/path/mlruns; "
                                        "unset = MLFLOW_TRACKING_URI or the environment's default", None)
    registered_model: Optional[str] = _help("also register the logged scorer under this name (Unity Catalog: "
                                            "catalog.schema.model)", None)

    def __post_init__(self):
        if self.experiment is not None and not self.experiment.strip():
            raise ConfigError("experiment: empty name (leave it unset for the active experiment)")


@dataclass
class TrainingConfig:
    """How the CoLLM scorer is trained (stage 1 text-only, stage 2 projector only; see collm_udf/core/training.py)."""

    text_pairs: int = _help("pairs sampled for stage 1 (text-only tuning; 0 skips stage 1): split mode, the "
                            "training split; daily mode, the interactions before the label window", 5000)
    cf_pairs: int = _help("pairs for stage 2 whose labels the ALS fit behind their factors never saw (split mode: "
                          "the validation split; daily mode: the label window, asof.label_window_days), so the "
                          "projector cannot learn to trust factors fitted on its own targets", 8000)
    holdout_pairs: int = _help("pairs of the same part held out for early stopping", 1000)
    cf_train_share: float = _help("share of stage-2 pairs drawn from the stage-1 part instead", 0.0)
    text_epochs: int = _help("stage-1 epochs (early stopping on holdout AUC)", 2)
    cf_epochs: int = _help("stage-2 epochs", 2)
    text_lr: float = _help("stage-1 learning rate (AdamW)", 5e-5)
    cf_lr: float = _help("stage-2 learning rate (AdamW)", 1e-3)
    skip_lr: float = _help("stage-2 learning rate of the signals' skip (model.signals): a linear model on "
                           "standardised inputs, it needs larger steps than the projector", 0.05)
    skip_init: str = _help("where the signals' skip starts in stage 2: logistic (a logistic regression of the "
                           "stage-2 labels on the signals, fitted first), refit (that start, and the same fit "
                           "again after stage 2 on the trained model's LM logit: the skip and the LM's weights end "
                           "at the labels' optimum, not where stage 2's last steps left them) or zero. Fit it to "
                           "the table's task (cf_pool_positives): on like/dislike pairs against ignored candidates "
                           "alone it learns that a high u . v means ignored (README). features: refit's fits with "
                           "the features-only ranker's logit as the one signal, so the model is that ranker plus "
                           "the LM's part (with lm_warm false, warm pairs rank as the ranker ranks them); needs a "
                           "linear skip without skip_segments", "logistic")
    batch_size: int = _help("training batch size", 32)
    cf_dropout: float = _help("probability that a CF slot is dropped to its no-CF vector in stage 2 (most "
                              "users of a new day have no factors)", 0.2)
    patience: int = _help("epochs without holdout improvement before stopping", 1)
    bf16: str = _help("bf16 autocast: auto (GPU or CPUs with native bf16; ~15x slower on AVX2-only CPUs), "
                      "on, off", "auto")
    seed: int = _help("seed of sampling, initialisation and shuffling", 0)
    cf_negatives: int = _help("daily mode: stage 2 also learns the table's task from this many pairs that the "
                              "candidate sources offered, as of the label window's start, to users who then did not "
                              "like them in the window (ignored, or rated below the like threshold: label 0); a fifth "
                              "of them join the holdout", 0)
    cf_pool_positives: bool = _help("daily mode, with cf_negatives: the candidates of the same pool that their user "
                                    "then liked join as positives (label 1, up to cf_negatives), so that stage 2 "
                                    "learns the table's task from both labels of one pool: without them every "
                                    "positive comes from outside the pool, and a source's own score (u . v of the "
                                    "ALS top-K) looks like a sign of being ignored", True)
    text_negatives: int = _help("daily mode: stage 1 also learns the table's task from the text, on the candidate "
                                "pool one label window further back (offered at its start, labelled by the window "
                                "before the label window's start, so stage 2's labels stay unseen): this many "
                                "ignored candidates and up to as many liked ones join the text pairs", 0)
    pool_label: str = _help("daily mode: which likes label the candidate pool offered at the label window's start "
                            "(cf_negatives, text_negatives and the features-only ranker's rows): window (liked "
                            "anywhere in the label window) or horizon (liked within evaluate.horizon_days of its "
                            "start: the span a day's table is judged by)", "window")
    ranker_fit: str = _help("daily mode: how the features-only ranker's logistic fit sees its rows. pooled: every "
                            "pair as one sample (it also learns which users like more, and a signal that differs "
                            "between users' candidate sets can take the sign of that difference: a user with many "
                            "likes has seen the popular items, so his candidates are less popular); within_user: "
                            "each user's signals centred on his own candidates' mean, users with a like and an "
                            "ignored candidate only (a conditional logit's task: the order within each user, which "
                            "is what the table is judged on)", "pooled")
    objective: str = _help("the loss of both training stages. pointwise: each pair's binary cross-entropy against "
                           "its label (CoLLM's); pairwise: each liked pair's logit over an ignored pair of the same "
                           "user (BPR), which the user's own propensity cannot lower; one training process only",
                           "pointwise")
    stack_share: float = _help("with skip_init refit or features: the share of the stage-2 set's users (a seeded "
                               "draw) whose pairs stage 2's steps do not see and on which the refit after it weighs "
                               "the LM. 0: the refit sees the pairs the projector has just learned, where the LM "
                               "looks better than on a new user's (a bigger stage 2 gave the LM a warm weight of 0.74 "
                               "there and the gate's held-out NDCG fell from the ranker's 0.091 to 0.050)", 0.0)
    stack_fit: str = _help("how that refit (skip_init refit, features) sees its rows: pooled, or within_user (each "
                           "user's columns centred on his own pairs, users with both labels: the LM weighed by how "
                           "it orders a user's pairs, not by how it tells users who like more apart)", "pooled")
    pool_users: int = _help("daily mode: the label window's candidate pool (stage 2's and stage 1's pool pairs, the "
                            "features-only ranker's rows, the gate's held-out users) is built for at most this many "
                            "users of its day's audience, the lowest in a seeded hash of the user id; 0 for all. "
                            "ALS's exact top-K scores every pool user against every item, users x items: at 20M "
                            "interactions (200k users, 50k items) the uncapped pool did not finish in 25 minutes "
                            "(benchmarks/README.md, Scale)", 10_000)
    retrain_every_days: int = _help("daily mode: the train stage trains a new model when the newest one of this "
                                    "model conf is this many days older than the cutoff; in between, days are "
                                    "scored by it with the newest ALS fit's factors aligned into its space", 7)
    distributed: DistributedConfig = _help("several training processes through pyspark's TorchDistributor",
                                           factory=DistributedConfig)
    mlflow: MlflowConfig = _help("MLflow tracking of the train stage (off by default)", factory=MlflowConfig)

    def __post_init__(self):
        if min(self.cf_pairs, self.holdout_pairs, self.text_epochs, self.cf_epochs, self.batch_size) < 1 \
                or self.text_pairs < 0 or self.patience < 0:
            raise ConfigError("train: cf_pairs, holdout_pairs, epochs and batch_size must be >= 1, "
                              "text_pairs and patience >= 0")
        if not 0.0 <= self.cf_train_share <= 1.0 or not 0.0 <= self.cf_dropout < 1.0:
            raise ConfigError("train: cf_train_share must be in [0, 1] and cf_dropout in [0, 1)")
        if self.text_lr <= 0 or self.cf_lr <= 0 or self.skip_lr <= 0:
            raise ConfigError("train: learning rates must be > 0")
        if self.retrain_every_days < 1 or min(self.cf_negatives, self.text_negatives, self.pool_users) < 0:
            raise ConfigError("train: retrain_every_days must be >= 1, cf_negatives, text_negatives and pool_users "
                              ">= 0")
        if self.skip_init not in ("logistic", "refit", "features", "zero"):
            raise ConfigError(f"train.skip_init: {self.skip_init!r} is not logistic, refit, features or zero")
        if self.pool_label not in ("window", "horizon"):
            raise ConfigError(f"train.pool_label: {self.pool_label!r} is not window or horizon")
        if self.ranker_fit not in ("pooled", "within_user"):
            raise ConfigError(f"train.ranker_fit: {self.ranker_fit!r} is not pooled or within_user")
        if not 0.0 <= self.stack_share < 1.0:
            raise ConfigError(f"train.stack_share: {self.stack_share} is not in [0, 1)")
        if self.stack_fit not in ("pooled", "within_user"):
            raise ConfigError(f"train.stack_fit: {self.stack_fit!r} is not pooled or within_user")
        if self.objective not in ("pointwise", "pairwise"):
            raise ConfigError(f"train.objective: {self.objective!r} is not pointwise or pairwise")
        if self.objective == "pairwise" and self.distributed.num_processes > 1:
            raise ConfigError("train.objective pairwise trains in one process: its batches pair rows of a user, "
                              "which the distributed trainer's strided shares split (set "
                              "train.distributed.num_processes to 0 or 1)")
        if self.bf16 not in ("auto", "on", "off"):
            raise ConfigError(f"train.bf16: {self.bf16!r} is not auto, on or off")


@dataclass(frozen=True)
class ModelConfig(Architecture):
    """The conf's `model` section: the scorer's architecture (collm_udf/core/spec.py, checked there) and how it
    is trained. spec() and stages() are what the core's training takes from it."""

    train: TrainingConfig = _help("training", factory=TrainingConfig)

    def __post_init__(self):
        try:
            super().__post_init__()
        except ModelError as e:
            raise ConfigError(str(e)) from None
        if self.train.skip_init == "features" and (not self.signals or self.skip_hidden or self.skip_segments):
            raise ConfigError("model.train.skip_init features: the skip becomes a multiple of the features-only "
                              "ranker's logit; it needs model.signals, skip_hidden 0 and skip_segments false")

    def spec(self, factor_dim: int, als_run_id: Optional[str], cold_item_below: Optional[int] = None) -> ModelSpec:
        """The model this section describes, on factors of rank factor_dim from ALS run als_run_id; with
        lm_segments, items with fewer than cold_item_below interactions are its cold items."""
        return ModelSpec.of(self, factor_dim, als_run_id, cold_item_below)

    def stages(self) -> dict[str, StageSettings]:
        """How each training stage runs: text (stage 1) and cf (stage 2)."""
        t = self.train
        return {stage: StageSettings(lr=t.text_lr if stage == "text" else t.cf_lr, skip_lr=t.skip_lr,
                                     batch_size=t.batch_size, epochs=t.text_epochs if stage == "text" else t.cf_epochs,
                                     patience=t.patience, cf_dropout=t.cf_dropout, seed=t.seed, bf16=t.bf16,
                                     objective=t.objective, stack_share=t.stack_share,
                                     stack_fit=t.stack_fit)
                for stage in ("text", "cf")}
