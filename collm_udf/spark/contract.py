"""The table contract: every table collm writes, its description, its columns' descriptions, its keys and how it
is written. The one description of the tables: tables.py writes these comments and the `collm.schema_version`
property into Delta (path and catalog tables alike), the README's table list states the same columns, and
tests/test_contract.py reads them back from Delta.

SCHEMA_VERSION goes up by one whenever a column is removed, renamed or changes meaning (added columns keep it):
a consumer that checks `collm.schema_version` knows the columns below mean what they say.
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 2  # 2: recommendations.lm_score is the LM's part of score (was the whole CoLLM logit)
VERSION_PROPERTY = "collm.schema_version"


@dataclass(frozen=True)
class TableContract:
    comment: str  # the table's description (Delta: the table comment)
    columns: dict[str, str]  # column -> its comment, in the table's column order
    keys: tuple[str, ...]  # what identifies a row
    partition: str | None = None  # the partition column; None: not partitioned


def _t(comment: str, keys: tuple[str, ...], partition: str | None = None, **columns: str) -> TableContract:
    return TableContract(comment, dict(columns), keys, partition)


_ALS_RUN = "the ALS fit (als_runs.als_run_id)"


def _factors(entity: str) -> TableContract:
    """user_factors / item_factors: one shape, two entities."""
    columns = {"als_run_id": _ALS_RUN, f"{entity}_id": f"the {entity}'s id", f"{entity}_idx": "its id_map index",
               "features": "the factor vector (als.rank floats)", "trained_at": "when the fit ran"}
    return TableContract(f"collm: the {entity}s' ALS factors of each fit.", columns, ("als_run_id", f"{entity}_id"),
                         "als_run_id")
_DS = "the run date: everything in the row is as of this day's cutoff"

CONTRACT: dict[str, TableContract] = {
    "interactions": _t(
        "collm: the interaction sources, normalised (ids as strings, unusable rows dropped and counted in "
        "data_quality). Replaced whole by the ingest stage.", ("user_id", "item_id", "ts"),
        user_id="the user's warehouse id, as a string", item_id="the item's warehouse id, as a string",
        ts="when the interaction happened (UTC)", rating="the rating (null when the source has none)",
        label="the source's 0/1 label column (null when the conf maps none)",
        split="the source's split column (benchmark mode; null otherwise)"),
    "items": _t(
        "collm: the item catalog with the text the language model reads. Replaced whole by the ingest stage.",
        ("item_id",), item_id="the item's warehouse id, as a string",
        text="the conf's text columns joined (duplicates merged, control characters removed, truncated)"),
    "pairs": _t(
        "collm: labelled interactions with each one's history (the prepare stage). Replaced whole.",
        ("user_id", "item_id", "ts"), user_id="the user's id", item_id="the item's id", ts="when (UTC)",
        rating="the rating (null when the source has none)",
        label="1 = liked (rating >= prepare.like_threshold, or the source's label), 0 = not",
        split="train / valid / test (benchmark mode); null in daily mode",
        history="up to prepare.history_len most recent liked item ids strictly before ts, oldest first"),
    "id_map": _t(
        "collm: warehouse ids to ALS's dense integer indices. Append-only: an id keeps its index forever.",
        ("entity", "id"), entity="'user' or 'item'", id="the warehouse id", idx="its dense index (ALS)",
        added_at="when the id was first mapped"),
    "als_runs": _t(
        "collm: one row per ALS fit, with what it saw. Ids derive from the params and the input's fingerprint, so "
        "the same input gives the same id and a fit that exists is reused.", ("als_run_id",), "als_run_id",
        als_run_id="the fit's id", ds="the day that fitted it", mode="daily or split",
        params="the ALS settings (JSON)", input_fingerprint="a hash of the fitted rows",
        train_rows="interactions fitted", users="users with factors", items="items with factors",
        target_mean="mean of the fitted target (explicit ALS: the rating)",
        model_path="the saved MLlib ALSModel (directory)", cutoff="the fit saw only interactions before this (UTC)",
        trained_at="when it was fitted"),
    "user_factors": _factors("user"),
    "item_factors": _factors("item"),
    "collm_models": _t(
        "collm: one row per trained CoLLM model (the train stage); the checkpoint lives at `path`.",
        ("model_version",), "model_version", model_version="the model's id",
        ds="the day that trained it", mode="daily or split",
        als_run_id="the ALS fit whose factor space the projector learned",
        path="the checkpoint directory", spec="the model's description (JSON: architecture, signals, settings)",
        train="the conf's model section it was trained with (JSON)",
        holdout_auc_text="holdout AUC after the text-only stage", holdout_auc_cf="holdout AUC after the CF stage",
        pairs="training pairs per stage (JSON)", cutoff="it learned only from interactions before this (UTC)",
        trained_at="when it was trained"),
    "gate": _t(
        "collm: the promotion gate's decision of each training: what serves the daily table from then on.",
        ("gate_id",), "gate_id", gate_id="the training's id", ds="the day that trained",
        mode="daily or split", conf="the model section and scorer the decision belongs to (JSON)",
        model_version="the CoLLM model trained (null for score.scorer: features)",
        als_run_id="the label window's ALS fit", features="the features-only ranker fitted beside it (JSON)",
        served="what serves: collm:<version>, features:<gate_id>, als, popularity or recent_popularity",
        promoted="true when the newly trained ranker serves", reason="why, in words",
        k="the list length judged (evaluate.k)", margin="gate.margin",
        truth_users="held-out users with a liked item in the window",
        results="each ranker's held-out NDCG@k and Recall@k; for a ranker with a model, its lead over the better "
                "list without one, with its interval, and whether it was proven (JSON)",
        cutoff="the training day's cutoff (UTC)",
        trained_at="when the decision was made"),
    "candidates": _t(
        "collm: each audience user's candidate items of a day. One partition per ds, replaced whole when the "
        "day reruns.", ("ds", "user_id", "item_id"), "ds",
        ds=_DS, user_id="the user's id", item_id="the item's id (never one the user had seen before the cutoff)",
        source="the first source that offered the pair: als, popular or cold",
        als_rank="its rank in the user's ALS top-K (null: not offered by ALS)",
        pop_rank="its rank in the recently popular items (null: not offered by popularity)",
        als_run_id=_ALS_RUN),
    "recommendations": _t(
        "collm: the daily recommendation table. Key (ds, user_id, item_id); one partition per ds, replaced whole "
        "when the day reruns (never duplicated, never mixed); each audience user gets score.top_n rows with rank "
        "dense from 1 (1 = best). The newest complete day: view <prefix>recommendations_latest (catalog tables) "
        "or `collm latest --conf CONF` (path tables).", ("ds", "user_id", "item_id"), "ds",
        ds=_DS, user_id="the user's id", item_id="the recommended item's id (never one the user had seen)",
        rank="1 = best; dense from 1 within (ds, user_id)",
        score="what ranked the row (higher = better): lm_score (0 when null) + signal_score",
        lm_score="the language model's part of score (the CoLLM scorer's LM logit times its learned weight); "
                 "null when no LM ranked the row",
        signal_score="the rest of score: the CoLLM skip's part over the signals, bias included, or the whole "
                     "score of a ranker without an LM (features, ALS, popularity)",
        als_score="u . v of the day's ALS fit (null when the user or item has no factors)",
        source="the candidate source: als, popular or cold", als_run_id=_ALS_RUN,
        model_version="what ranked the day: collm:<version>, features:<gate_id>, als:<run>, popularity:<ds> "
                      "or recent_popularity:<ds>",
        generated_at="when the row was written"),
    "metrics": _t(
        "collm: every evaluation figure (the evaluate stage's backtests and the gate's held-out comparison). "
        "Append-only.", ("run_id", "ds", "scorer", "metric", "segment", "k"),
        run_id="the run that measured it", ds="the day judged", mode="daily or split",
        horizon_days="the days after the cutoff that judged it", als_run_id=_ALS_RUN,
        model_version="what ranked (as in recommendations)",
        scorer="the ranker: the conf's scorer, or a baseline (als, popularity, recent_popularity, features)",
        metric="auc, uauc, recall_at_k, ndcg_at_k, coverage, overlap_at_k, top_item_share, cold_item_share, "
               "cold_items or alignment_residual",
        segment="the population: all, warm, cold, cold_item, warm_item, no_factors, served, active, truth, gate, "
                "...",
        k="the list length (ranking metrics)", value="the figure", n_pairs="pairs behind it",
        n_users="users behind it", evaluated_at="when it was measured"),
    "data_quality": _t(
        "collm: every repair a run made to its input (one row per check that found something). Append-only.",
        ("run_id", "stage", "table_name", "column_name", "check_name"),
        run_id="the run", ds="its run date", stage="the stage that checked", table_name="the source table",
        column_name="the column", check_name="what was wrong", rows="rows affected",
        action="dropped, canonicalised, merged, truncated, removed or kept",
        example="one offending raw value", checked_at="when"),
}


def table_comment(name: str) -> str:
    return CONTRACT[name].comment


def column_comments(name: str) -> dict[str, str]:
    return CONTRACT[name].columns
