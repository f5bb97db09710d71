"""Conf sections of the pipeline's stages and session: prepare, asof, als, candidates, score, evaluate, tables,
spark. Conventions: collm_udf/config/__init__.py."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from collm_udf.config.base import ConfigError, check_identifier, help_field as _help


@dataclass
class SplitConfig:
    train: float = _help("fraction of interactions, oldest first, in the training part", 0.8)
    valid: float = _help("next fraction, the validation part", 0.1)
    test: float = _help("newest fraction, the test part", 0.1)

    def __post_init__(self):
        for name in ("train", "valid", "test"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"prepare.split.{name}: {v} is not in [0, 1]")
        if abs(self.train + self.valid + self.test - 1.0) > 1e-9 or self.train <= 0:
            raise ConfigError(f"prepare.split: fractions must sum to 1 with train > 0, got "
                              f"{self.train}/{self.valid}/{self.test}")


@dataclass
class PrepareConfig:
    like_threshold: float = _help("label = 1 when rating >= this (CoLLM uses 4 on MovieLens)", 4.0)
    split: SplitConfig = _help("time-ordered split fractions (ignored with a given split column)",
                               factory=SplitConfig)
    warm_min_interactions: int = _help("a pair is warm when user and item each have this many training "
                                       "interactions", 3)
    history_len: int = _help("most recent positive items kept as a pair's history", 10)

    def __post_init__(self):
        if self.warm_min_interactions < 1 or self.history_len < 0:
            raise ConfigError("prepare: warm_min_interactions must be >= 1 and history_len >= 0")


@dataclass
class AsOfConfig:
    """What a run for day ds may see: the daily mode (production) or the paper's fixed split (benchmark)."""

    mode: str = _help("daily: every stage uses only interactions before ds's cutoff, and the evaluate stage "
                      "backtests the day against the interactions of [cutoff, cutoff + evaluate.horizon_days); "
                      "split: the paper's offline protocol, one fixed train/valid/test split (prepare.split or "
                      "a given split column) whatever ds is", "daily")
    cutoff_shift_hours: int = _help("cutoff = ds 00:00 UTC shifted by this many hours (e.g. -2: data up to "
                                    "22:00 of the day before)", 0)
    label_window_days: int = _help("daily: the CoLLM CF stage learns from the labels of [cutoff - this, cutoff), "
                                   "with factors of an ALS fit that ends where the window starts", 28)

    def __post_init__(self):
        if self.mode not in ("daily", "split"):
            raise ConfigError(f"asof.mode: {self.mode!r} is not daily or split")
        if self.label_window_days < 1 or abs(self.cutoff_shift_hours) > 24 * 7:
            raise ConfigError("asof: label_window_days must be >= 1 and |cutoff_shift_hours| <= 168")


@dataclass
class ALSConfig:
    implicit: bool = _help("implicit-feedback ALS (models 'interacted', weighted by the target as confidence "
                           "1 + alpha * target); explicit fits the target", False)
    target: Optional[str] = _help(
        "label (the 0/1 like) or rating (the mapped rating column: explicit ALS fits it, implicit ALS weighs each "
        "interaction by it, e.g. a listen count). Unset: rating for implicit ALS when a rating column is mapped, "
        "else label", None)
    rank: int = _help("factor dimension", 16)
    reg: float = _help("L2 regularisation (regParam)", 0.1)
    alpha: float = _help("implicit confidence scale", 1.0)
    max_iter: int = _help("ALS iterations", 15)
    nonnegative: bool = _help("non-negative factors", False)
    seed: int = _help("random seed (with deterministic input, a rerun gives the same factors)", 42)
    checkpoint_interval: int = _help("checkpoint every N iterations (cuts long lineage)", 5)
    retrain_every_days: int = _help("daily mode: the als stage refits when its newest fit with these params is "
                                    "this many days older than the cutoff (1: every day); in between, the "
                                    "candidates and the scorer use that fit", 1)

    def __post_init__(self):
        if self.retrain_every_days < 1:
            raise ConfigError("als.retrain_every_days must be >= 1")
        if self.target not in (None, "label", "rating"):
            raise ConfigError(f"als.target: {self.target!r} is not label or rating")
        if self.rank < 1 or self.max_iter < 1 or self.reg < 0 or self.alpha < 0:
            raise ConfigError("als: rank and max_iter must be >= 1, reg and alpha >= 0")


@dataclass
class CandidatesConfig:
    top_k: int = _help("ALS top-K unseen items per user", 50)
    max_cold_items: int = _help("cold catalog items (no training interactions) added for every user, by id", 200)
    text_k: int = _help("text-neighbour candidates per user: the cold items (fewer than min_item_interactions "
                        "interactions before the cutoff) whose texts are nearest to the user's history, by the "
                        "base backbone's embeddings (collm_udf/spark/text_neighbours.py); 0 = none", 0)
    text_recency: float = _help("the text source ranks a user's cold items by their standardised text cosine plus "
                                "this weight times log1p(the item's interactions in the last recent_days): a "
                                "cold item liked lately is more often liked next (0 = text only)", 0.0)
    seen_buffer: int = _help("most extra items of the popularity order read per user to cover the seen ones "
                             "it filters out", 2000)
    min_item_interactions: int = _help(
        "ALS candidates need this many training interactions: explicit ALS gives items with one or two "
        "ratings extreme scores, and they would fill every top-K (ML-100K: Recall@10 0.000 without it)", 10)

    active_within_days: Optional[int] = _help(
        "the day's audience: users with an interaction in the last N days before the cutoff (split mode: before "
        "the test part); each gets score.top_n rows. Unset = every user with an interaction before it", None)
    popular_k: int = _help("recent-popularity candidates per user: the most interacted items of the last "
                           "recent_days that the user has not interacted with (they also fill users without "
                           "ALS factors)", 30)
    recent_days: int = _help("window of recent popularity (candidates and the recent-popularity baseline)", 30)

    def __post_init__(self):
        if self.popular_k < 0 or self.recent_days < 1:
            raise ConfigError("candidates: popular_k must be >= 0 and recent_days >= 1")
        if self.active_within_days is not None and self.active_within_days < 1:
            raise ConfigError("candidates.active_within_days must be >= 1 (or unset)")
        if self.top_k < 1 or min(self.max_cold_items, self.text_k, self.seen_buffer, self.min_item_interactions,
                                 self.text_recency) < 0:
            raise ConfigError("candidates: top_k >= 1; max_cold_items, text_k, text_recency, seen_buffer, "
                              "min_item_interactions >= 0")


SCORERS = ("als", "collm", "features")
FALLBACKS = ("recent_popularity", "popularity", "als")


@dataclass
class TempoConfig:
    """Settings that depend on a warehouse's size and tempo, derived each day from the interactions known before
    its cutoff (daily mode) instead of fixed (collm_udf/spark/tempo.py). Off: the fixed values of asof and
    candidates are used as they are."""

    enabled: bool = _help("derive the label window, the audience, the recent-popularity window and the ALS "
                          "candidates' item threshold from the data as of each day (the run summary's `tempo` says "
                          "what they were)", False)
    label_likes: int = _help("the label window: the shortest multiple of asof.label_window_days before the cutoff "
                             "that holds this many likes (label 1); the recent-popularity window "
                             "(candidates.recent_days) is the same", 1000)
    max_label_window_days: int = _help("the label window grows no further: a day whose window holds too few likes "
                                       "even then trains nothing (its table: the last decision, or score.fallback)",
                                       364)
    audience_quantile: float = _help("the audience (candidates.active_within_days): users active within this "
                                     "quantile of the gaps between a user's consecutive active days (at least 7 "
                                     "days): the window in which that share of returning users come back", 0.9)
    item_quantile: float = _help("candidates.min_item_interactions: this quantile of the known items' interaction "
                                 "counts (at least 2): ALS candidates come from the better-known items", 0.5)

    def __post_init__(self):
        if self.label_likes < 1 or self.max_label_window_days < 7:
            raise ConfigError("tempo: label_likes must be >= 1 and max_label_window_days >= 7")
        if not (0 < self.audience_quantile <= 1 and 0 <= self.item_quantile < 1):
            raise ConfigError("tempo: audience_quantile must be in (0, 1] and item_quantile in [0, 1)")


@dataclass
class ScoreConfig:
    scorer: str = _help("what ranks the table: als (u . v of the day's ALS fit), collm (the CoLLM model the train "
                        "stage trains, served when the promotion gate passes it: see gate), or features (the "
                        "features-only ranker: a logistic ranker on model.signals, no language model, no GPU)", "als")
    fallback: str = _help("what the score stage serves when no trained ranker exists as of the day (a history too "
                          "short to train, the first days of a warehouse): recent_popularity, popularity or als; the "
                          "reason is in the run summary and the table's model_version", "recent_popularity")
    top_n: int = _help("rows per user in the daily recommendation table", 20)
    cold_slots: bool = _help("a floor for the cold sources' items (candidates text and cold) in each user's list: "
                             "slots as many as the cold items' share of the likes of the last evaluate.horizon_days "
                             "(items with fewer than min_item_interactions interactions before that span) times "
                             "top_n, spread evenly over the list; the i-th best-scored cold pair is listed at its "
                             "score's place or its slot, whichever is earlier (the run summary's `cold_slots`); "
                             "a popularity list that serves gets the day's cold-source candidates for its slots",
                             False)
    device: str = _help("collm: auto (the task's Spark-assigned GPU, else CUDA_VISIBLE_DEVICES, else CPU), "
                        "cpu, or cuda:N", "auto")
    bf16: str = _help("collm: bf16 autocast: auto (GPU or CPUs with native bf16), on, off", "auto")
    arrow_batch_rows: int = _help("collm: rows per Arrow batch into the UDF "
                                  "(spark.sql.execution.arrow.maxRecordsPerBatch)", 4096)
    max_row_tokens: int = _help("collm: tokens per packed row (a user's prefix once + candidates)", 512)
    batch_tokens: int = _help("collm: tokens per forward pass", 8192)
    partitions: int = _help("collm: partitions the pairs are spread over by user (0 = "
                            "spark.sql.shuffle.partitions); use at least the number of task slots", 0)
    align: bool = _help("collm: when the latest ALS run is not the model's, rotate its factors into the "
                        "model's run (orthogonal Procrustes on shared items) instead of refusing", True)
    max_alignment_residual: float = _help(
        "collm: refuse when the rotation leaves more than this relative residual on the shared items' factors "
        "(ML-100K: two explicit ALS fits of the same data with other seeds differ by 0.35, a fit 28 days older "
        "by 0.40, at no measured AUC cost; see README)", 0.5)
    min_rows_fraction: float = _help("output guard: fail before writing when the day's rows fall below this "
                                     "fraction of the latest earlier day's (0 = off; an empty output always fails)", 0.5)
    min_users_fraction: float = _help("output guard: the same for the number of users covered", 0.5)
    guard_min_users: int = _help("output guard: compare with the latest earlier day only when it covered at least "
                                 "this many users (a small audience halves from one day to the next by chance)", 100)

    def __post_init__(self):
        if self.scorer not in SCORERS:
            raise ConfigError(f"score.scorer: {self.scorer!r} is not one of: {', '.join(SCORERS)}")
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"score.fallback: {self.fallback!r} is not one of: {', '.join(FALLBACKS)}")
        if self.top_n < 1:
            raise ConfigError("score.top_n must be >= 1")
        if not (0 <= self.min_rows_fraction <= 1 and 0 <= self.min_users_fraction <= 1):
            raise ConfigError("score: min_rows_fraction and min_users_fraction must be in [0, 1]")
        if min(self.arrow_batch_rows, self.max_row_tokens, self.batch_tokens) < 1 or self.partitions < 0 \
                or self.guard_min_users < 0:
            raise ConfigError("score: arrow_batch_rows, max_row_tokens, batch_tokens >= 1; partitions, "
                              "guard_min_users >= 0")
        if self.bf16 not in ("auto", "on", "off"):
            raise ConfigError(f"score.bf16: {self.bf16!r} is not auto, on or off")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError(f"score.device: {self.device!r} is not auto, cpu, cuda or cuda:N")


@dataclass
class GateConfig:
    """The promotion gate of the train stage (daily mode): a new model serves only when it ranks a held-out part of
    its label window better than every ranker a team could serve instead (collm_udf/spark/gate.py)."""

    enabled: bool = _help("judge each trained model before it serves; off: the newest model always serves", True)
    holdout_users: float = _help("share of users (a stable hash of the id, the same on every day) whose label-window "
                                 "pairs no model or features-only ranker trains on; the gate ranks their candidate "
                                 "pool as of the window's start and judges the lists by what they then liked", 0.3)
    margin: float = _help("a new model is promoted only when its held-out NDCG@k exceeds the best other ranker's by "
                          "this relative margin (0.05: 5%; the proof rule: the better list's)", 0.0)
    confidence: float = _help("0: the point rule (the new ranker serves when its held-out NDCG@k beats the best "
                              "other's by gate.margin). Above 0, the proof rule at this level: the better list "
                              "without a model serves unless a ranker with a model proves better than it (a "
                              "paired-bootstrap interval of its per-user lead above 0 on NDCG@k or Recall@k); "
                              "measured, not the default: collm_udf/core/promotion.py, benchmarks/README.md", 0.0)
    seed: int = _help("seed of the held-out users' hash (changing it changes which users are held out)", 7)

    def __post_init__(self):
        if not 0.0 <= self.confidence < 1.0:
            raise ConfigError(f"gate.confidence: {self.confidence} is not in [0, 1)")
        if not 0.0 < self.holdout_users < 1.0:
            raise ConfigError(f"gate.holdout_users: {self.holdout_users} is not in (0, 1)")
        if not 0.0 <= self.margin < 1.0:
            raise ConfigError(f"gate.margin: {self.margin} is not in [0, 1)")


@dataclass
class EvaluateConfig:
    k: int = _help("cut-off of Recall@k and NDCG@k", 10)
    horizon_days: int = _help("daily mode: the day's table is judged by the interactions of [cutoff, cutoff + "
                              "horizon_days), once the interactions table reaches the end of that window", 7)
    catch_up_days: int = _help("daily mode: the evaluate stage also backtests the earlier days of the last N "
                               "days whose horizon has completed since and that have no backtest yet (0: off)",
                               14)
    user_figures: bool = _help("keep each truth user's NDCG@k and Recall@k per ranker in the run summary (small "
                               "warehouses: collm replay turns it on for its paired-bootstrap confidence intervals)",
                               False)
    shadow: bool = _help("when the gate did not promote the newest CoLLM model, backtest it anyway as ranker "
                         "`shadow`: the day's candidates ranked as the score stage would serve it (cold slots "
                         "included), beside the table that served; what the LM would have added, on every truth "
                         "user (a CoLLM scoring pass more per day)", False)
    report: bool = _help("the evaluate stage ends by writing the day's HTML report (off: `collm report --ds` writes "
                         "it on demand from the same tables)", True)
    report_dir: Optional[str] = _help("where the evaluate stage (and `collm report`) writes the HTML report, one "
                                      "folder ds=<ds> per day; a local or mounted path (e.g. /Volumes/...); "
                                      "default <tables.root>/reports, or <tables.models_dir>/reports", None)

    def __post_init__(self):
        if self.k < 1 or self.horizon_days < 1 or self.catch_up_days < 0:
            raise ConfigError("evaluate: k and horizon_days must be >= 1, catch_up_days >= 0")
        if self.report_dir is not None and "://" in self.report_dir and not self.report_dir.startswith("file:"):
            raise ConfigError(f"evaluate.report_dir: {self.report_dir!r} must be a local or mounted path "
                              "(e.g. /Volumes/...): the report is written with local file APIs")


@dataclass
class TablesConfig:
    root: Optional[str] = _help("directory holding path-based Delta tables (local runs)", None)
    catalog: Optional[str] = _help("catalog of managed tables (exclusive with root)", None)
    schema: Optional[str] = _help("schema (database) of managed tables", None)
    prefix: str = _help("prefix of every table name", "")
    models_dir: Optional[str] = _help("directory for saved models (ALS); default <root>/_models; required "
                                      "with catalog tables, e.g. a /Volumes/... path", None)
    retention_days: Optional[int] = _help(
        "keep this many days of candidates and recommendations before the newest ds: the score stage drops older "
        "partitions and VACUUMs both tables with the same horizon (never metrics, als_runs, collm_models). Off "
        "when unset; at least 7 (Delta's VACUUM safety margin for readers still on an older version)", None)

    def __post_init__(self):
        if self.retention_days is not None and (isinstance(self.retention_days, bool)
                                                or not isinstance(self.retention_days, int)
                                                or self.retention_days < 7):
            raise ConfigError(f"tables.retention_days: {self.retention_days!r} must be a whole number of days >= 7 "
                              "(Delta refuses to VACUUM files younger than 7 days), or unset to keep every day")
        if (self.root is None) == (self.schema is None):
            raise ConfigError("tables: set either 'root' (paths) or 'schema' (catalog tables)")
        if self.schema is not None and self.models_dir is None:
            raise ConfigError("tables.models_dir: required with catalog tables (where saved models go)")
        if self.catalog is not None:
            check_identifier(self.catalog, "tables.catalog")
        if self.schema is not None:
            check_identifier(self.schema, "tables.schema")
        if self.prefix:
            check_identifier(self.prefix, "tables.prefix")


@dataclass
class SparkConfig:
    master: str = _help("master used only when collm creates the session itself (never under "
                        "spark-submit or in a notebook)", "local[*]")
    conf: dict[str, str] = _help("extra settings for a session collm creates", factory=dict)
    checkpoint_dir: Optional[str] = _help("checkpoint dir for ALS; default <tables.root>/_checkpoints", None)
