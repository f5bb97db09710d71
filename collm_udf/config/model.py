"""Conf section `model`: the CoLLM scorer, how it is trained (model.train), in how many processes
(model.train.distributed) and whether runs are tracked (model.train.mlflow).

Same conventions as collm_udf/config.py: every field carries help text, __post_init__ validates, and the loader
there rejects unknown keys and wrong types with the key's dotted path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from collm_udf.config.base import ConfigError, help_field as _help


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
                           "stage-2 labels on the signals, fitted first) or zero. Fit it to the table's task "
                           "(cf_pool_positives): on like/dislike pairs against ignored candidates alone it learns "
                           "that a high u . v means ignored (README)", "logistic")
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
        if self.retrain_every_days < 1 or self.cf_negatives < 0 or self.text_negatives < 0:
            raise ConfigError("train: retrain_every_days must be >= 1, cf_negatives and text_negatives >= 0")
        if self.skip_init not in ("logistic", "zero"):
            raise ConfigError(f"train.skip_init: {self.skip_init!r} is not logistic or zero")
        if self.bf16 not in ("auto", "on", "off"):
            raise ConfigError(f"train.bf16: {self.bf16!r} is not auto, on or off")


@dataclass
class ModelConfig:
    """The CoLLM scorer: backbone, prompt, projector, and how it is trained."""

    backbone: str = _help("'minilm' (the embedded all-MiniLM-L6-v2) or a local Hugging Face model directory; "
                          "nothing is downloaded", "minilm")
    kind: str = _help("encoder (mean-pooled head) or causal (logit of the answer token, as CoLLM)", "encoder")
    template: str = _help("prompt: 'collm' (the paper's), 'compact' (~10 fixed tokens, for small encoders on "
                          "CPU) or a template with {history} {user_cf} {candidate} {item_cf}", "compact")
    max_tokens: int = _help("prompt length cap; whole history titles are dropped oldest first", 64)
    candidate_max_tokens: int = _help("cap on the candidate text's tokens (reserved in every prompt)", 16)
    tuning: str = _help("stage-1 tuning of the backbone: full, lora or none", "full")
    lora_r: int = _help("LoRA rank (tuning: lora)", 8)
    lora_alpha: int = _help("LoRA alpha (tuning: lora)", 16)
    answer_token: str = _help("causal backbones: the token whose logit is the score", "Yes")
    projector_mult: int = _help("projector hidden width = projector_mult x ALS rank (CoLLM: 10)", 10)
    signals: list[str] = _help("per-pair signals added to the score by a learned linear skip, trained in stage 2 "
                               "with the projector: als_dot, als_missing, item_recent, item_count, item_like_rate, "
                               "user_count (collm_udf/core/signals.py); all computed as of the cutoff", factory=list)
    skip_hidden: int = _help("hidden width of the signals' skip: 0 = linear; > 0 = one ReLU layer, so that a "
                             "signal's weight can depend on another (u . v counts for more where both sides have "
                             "many interactions)", 0)
    skip_segments: bool = _help("the linear skip weighs each signal apart for warm pairs (user and item both have "
                                "ALS factors) and the rest; needs als_missing among the signals", False)
    lm_scale: bool = _help("stage 2 also learns a scalar weight of the LM's logit against the signals' skip (with "
                           "train.skip_init logistic it starts at a logistic fit of the LM's logit beside the "
                           "signals); needs signals", False)
    attention: str = _help("encoder: block (the history prefix never sees the candidate: a user's candidates "
                           "are scored in one packed pass, exactly) or full (one prompt per pair)", "block")
    train: TrainingConfig = _help("training", factory=TrainingConfig)

    def __post_init__(self):
        if self.kind not in ("encoder", "causal"):
            raise ConfigError(f"model.kind: {self.kind!r} is not encoder or causal")
        if self.tuning not in ("full", "lora", "none"):
            raise ConfigError(f"model.tuning: {self.tuning!r} is not full, lora or none")
        if self.attention not in ("block", "full"):
            raise ConfigError(f"model.attention: {self.attention!r} is not block or full")
        if self.max_tokens < 8 or not 1 <= self.candidate_max_tokens < self.max_tokens:
            raise ConfigError("model: max_tokens must be >= 8 and 1 <= candidate_max_tokens < max_tokens")
        if self.projector_mult < 1 or self.lora_r < 1 or self.skip_hidden < 0:
            raise ConfigError("model: projector_mult and lora_r must be >= 1, skip_hidden >= 0")
        from collm_udf.core.prompt import TEMPLATES, PromptError, parse_template
        from collm_udf.core.signals import SignalError, check_names

        try:
            check_names(self.signals)
        except SignalError as e:
            raise ConfigError(f"model.{e}") from None
        if self.skip_segments and "als_missing" not in self.signals:
            raise ConfigError("model.skip_segments: the warm/cold split reads the signal als_missing; add it to "
                              "model.signals")
        if self.lm_scale and not self.signals:
            raise ConfigError("model.lm_scale: the LM's scale is learned beside the signals' skip; name "
                              "model.signals")

        if self.template not in TEMPLATES:
            try:
                parse_template(self.template)
            except PromptError as e:
                raise ConfigError(f"model.template: {e} (or name one of: {', '.join(TEMPLATES)})") from None
        if self.backbone != "minilm" and "://" in self.backbone:
            raise ConfigError(f"model.backbone: {self.backbone!r} must be a local directory (nothing is "
                              "downloaded at run time)")
