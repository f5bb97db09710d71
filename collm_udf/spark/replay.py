"""Replay the daily job over a range of days, oldest first, each day as of its own ds, and tabulate the backtests.

`collm replay` (and `make demo`): ingest and prepare once (they keep the whole history; nothing in them depends on
a day), then for every day the stages that do (idmap, als, train, candidates, score, evaluate) exactly as the
scheduled job runs them on that day. ALS refits per als.retrain_every_days, the CoLLM model per
model.train.retrain_every_days. Each day's evaluate stage backtests the day's table and the baselines against the
following evaluate.horizon_days; the replay prints one line per day and the mean over the days.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Callable, Optional

import pandas as pd
from pyspark.sql import SparkSession

from collm_udf.config import Config
from collm_udf.core.metrics import paired_bootstrap, weighted_mean, weighted_ratio
from collm_udf.spark import pipeline
from collm_udf.spark.asof import data_end
from collm_udf.spark.backtest import SEGMENTS
from collm_udf.spark.tables import Tables, check_ds
from collm_udf.spark.runs import default_ds
from collm_udf.spark.stages import STAGES

ONCE = ("ingest", "prepare")
DAILY = tuple(s for s in STAGES if s not in ONCE)
SEGMENT_FIGURES = tuple(f"{seg}_{m}" for seg in SEGMENTS for m in ("recall", "ndcg"))  # e.g. cold_item_recall
EXPOSURE = ("cold_item_share", "cold_items", "truth_cold_share")  # a list's cold items, the truth's cold share
FIGURES = ("recall", "ndcg", "coverage_active", "coverage_truth", "overlap", "top_item_share") + SEGMENT_FIGURES \
    + EXPOSURE
BASELINES = ("popularity", "recent_popularity", "als", "features")  # what a team ships without the table's ranker


class ReplayError(ValueError):
    pass


def day_range(start: str, end: str, every: int) -> list[str]:
    """start, start + every, ... up to end (inclusive), as YYYY-MM-DD."""
    a, b = dt.date.fromisoformat(check_ds(start)), dt.date.fromisoformat(check_ds(end))
    if b < a or every < 1:
        raise ReplayError(f"replay: empty range {start} .. {end} every {every} days")
    return [(a + dt.timedelta(days=i)).isoformat() for i in range(0, (b - a).days + 1, every)]


def last_backtest_day(cfg: Config, tables: Tables) -> str:
    """The newest ds whose backtest horizon the interactions already cover."""
    end = data_end(tables.read("pairs"))
    if end is None:
        raise ReplayError("table pairs is empty: nothing to replay")
    cut = end - dt.timedelta(days=cfg.evaluate.horizon_days, hours=cfg.asof.cutoff_shift_hours)
    return cut.date().isoformat()


def choose_days(cfg: Config, tables: Tables, start: Optional[str], end: Optional[str], days: Optional[int],
                every: int) -> list[str]:
    end = end or last_backtest_day(cfg, tables)
    if start is None:
        if not days:
            raise ReplayError("replay: give --start, or --days (the number of days ending at --end)")
        start = (dt.date.fromisoformat(end) - dt.timedelta(days=every * (days - 1))).isoformat()
    return day_range(start, end, every)


def backtest_rows(ds: str, metrics: dict, k: int) -> list[dict]:
    """One row per ranker of a day's evaluate result: ds, ranker, recall, ndcg, coverage, users."""
    rows = []
    bt = metrics.get("backtest", {})
    for name, r in (metrics.get("rankers") or {}).items():
        rows.append({"ds": ds, "ranker": name, "recall": r[f"recall@{k}"], "ndcg": r[f"ndcg@{k}"],
                     "coverage_active": r["coverage_active"], "coverage_truth": r["coverage_truth"],
                     "overlap": r[f"overlap@{k}"], "top_item_share": r["top_item_share"],
                     "truth_users": bt.get("truth_users"), "served_truth_users": bt.get("served_truth_users"),
                     **{f: r.get(f) for f in EXPOSURE}})
        for seg, part in (r.get("segments") or {}).items():
            rows[-1].update({f"{seg}_recall": part[f"recall@{k}"], f"{seg}_ndcg": part[f"ndcg@{k}"],
                             f"{seg}_truth_users": part["truth_users"]})
    return rows


def mean_rows(rows: list[dict]) -> list[dict]:
    """Per ranker, the mean of each figure over the days that have it."""
    out = []
    for name in dict.fromkeys(r["ranker"] for r in rows):
        mine = [r for r in rows if r["ranker"] == name]
        m = {"ds": "mean", "ranker": name, "days": len(mine)}
        for f in FIGURES:
            vals = [r[f] for r in mine if r[f] is not None]
            m[f] = sum(vals) / len(vals) if vals else None  # a segment's days: those with its truth users
        out.append(m)
    return out


def _finite(v):
    return None if v is None or v != v or v in (float("inf"), float("-inf")) else v


def confidence(per_user: list[dict], scorer: str, *, level: float = 0.95, seed: int = 0) -> dict:
    """Paired-bootstrap confidence intervals over the replay's truth users (every day's, pooled; weights 1 / the
    day's truth users, so each estimate is the mean of the days' means, as in the mean row):
    {rankers: {name: {ndcg: [est, lo, hi], recall: [...]}}, ratios: {baseline: {ndcg: [...], recall: [...]}},
    best_baseline: {ndcg: name, recall: name}, units: user-days, segments: {segment: the same over the segment's
    truth (backtest.SEGMENTS)}}. Ratios are the table's (`scorer`) over each baseline's; the best baseline is the
    one with the highest estimate. With evaluate.shadow, shadow_over_table: the model's list (served or not) over
    the table, on the days that had a model."""
    if not per_user:
        return {}
    df = pd.DataFrame(per_user)
    seg = df.pop("segment") if "segment" in df else pd.Series("all", index=df.index)
    out = _confidence(df[seg == "all"], scorer, level, seed)
    parts = {s: _confidence(df[seg == s], scorer, level, seed) for s in SEGMENTS if (seg == s).any()}
    if parts:
        out["segments"] = parts
    return out


def _confidence(df: pd.DataFrame, scorer: str, level: float, seed: int) -> dict:
    wide = {f: df.pivot_table(index=["ds", "user_id"], columns="ranker", values=f) for f in ("ndcg", "recall")}
    days = wide["ndcg"].index.get_level_values("ds")
    w = 1.0 / pd.Series(days).map(pd.Series(days).value_counts()).to_numpy()
    out: dict = {"units": int(len(w)), "level": level, "rankers": {}, "ratios": {}, "best_baseline": {}}
    for name in wide["ndcg"].columns:
        out["rankers"][name] = {f: [_finite(v) for v in paired_bootstrap(
            weighted_mean, (wide[f][name].fillna(0).to_numpy(), w), level=level, seed=seed)] for f in wide}
    bases = [b for b in BASELINES if b in wide["ndcg"].columns and b != scorer]
    if scorer not in wide["ndcg"].columns or not bases:
        return out
    for f in wide:
        est = {b: out["rankers"][b][f][0] or 0.0 for b in bases}
        out["best_baseline"][f] = max(bases, key=lambda b: est[b])

    def ratio(f: str, a: str, b: str, on=slice(None)) -> list:
        return [_finite(v) for v in paired_bootstrap(weighted_ratio, (
            wide[f][a].fillna(0).to_numpy()[on], wide[f][b].fillna(0).to_numpy()[on], w[on]), level=level, seed=seed)]

    for b in bases:
        out["ratios"][b] = {f: ratio(f, scorer, b) for f in wide}
    on = wide["ndcg"]["shadow"].notna().to_numpy() if "shadow" in wide["ndcg"].columns else None
    if on is not None and on.any():  # the model the gate passed over, over the table that served instead, on
        out["shadow_over_table"] = {f: ratio(f, "shadow", scorer, on) for f in wide}  # the days it was trained by
    return out


def format_confidence(ci: dict, scorer: str) -> list[str]:
    """The replay's closing lines: each ranker's pooled figures and the table's ratio to each baseline, with CIs."""
    if not ci.get("rankers"):
        return []
    f = lambda t: "  -  " if t[0] is None else (f"{t[0]:.3f} [{'-' if t[1] is None else f'{t[1]:.3f}'}, "  # noqa: E731
                                              f"{'-' if t[2] is None else f'{t[2]:.3f}'}]")
    pct = round(100 * ci["level"])
    lines = [f"[replay] {pct}% CI, paired bootstrap over {ci['units']} truth user-days | NDCG / Recall: " +
             " | ".join(f"{n} {f(r['ndcg'])} / {f(r['recall'])}" for n, r in ci["rankers"].items())]
    if ci["ratios"]:
        best = ci["best_baseline"]
        lines.append(f"[replay] {scorer} / baseline ({pct}% CI) | NDCG / Recall: " + " | ".join(
            f"{b}{'*' if b in best.values() else ''} x{f(r['ndcg'])} / x{f(r['recall'])}"
            for b, r in ci["ratios"].items()) + "   (* best baseline)")
    if ci.get("shadow_over_table"):
        r = ci["shadow_over_table"]
        lines.append(f"[replay] shadow (the model not served) / {scorer} ({pct}% CI) | NDCG / Recall: "
                     f"x{f(r['ndcg'])} / x{f(r['recall'])}")
    for seg, part in (ci.get("segments") or {}).items():  # the same over each segment's truth
        lines += [line.replace("[replay] ", f"[replay] {seg}: ", 1) for line in format_confidence(part, scorer)]
    return lines


def format_day(ds: str, rows: list[dict], k: int, note: str = "") -> str:
    if not rows:
        return f"[replay] {ds}: {note or 'no backtest'}"
    head = rows[0]
    users = "" if ds == "mean" else f" truth users {head['truth_users']} (served {head['served_truth_users']})"
    f = lambda v: "  -  " if v is None else f"{v:.3f}"  # noqa: E731
    parts = [f"{r['ranker']} {f(r['ndcg'])}/{f(r['recall'])}/{f(r['coverage_truth'])}/{f(r['overlap'])}"
             for r in rows]
    return f"[replay] {ds}{users} | NDCG@{k}/Recall@{k}/coverage/overlap@{k}: " + " | ".join(parts)


def run(spark: SparkSession, cfg: Config, *, start: Optional[str] = None, end: Optional[str] = None,
        days: Optional[int] = None, every: int = 7, skip_ingest: bool = False,
        progress: Optional[Callable[[str], None]] = None, out: Callable[[str], None] = print) -> dict:
    """Replay the days (see choose_days); `out` gets the backtest lines, `progress` the stages' progress."""
    if cfg.asof.mode != "daily":
        raise ReplayError("replay: asof.mode is split (the fixed-split benchmark mode); a replay is a daily job")
    t0 = time.time()
    # each truth user's figures, for the confidence intervals over the replay's users
    cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, user_figures=True))
    tables = Tables(spark, cfg.tables)
    once = None
    if not skip_ingest:
        once = pipeline.run(spark, cfg, stages=list(ONCE), ds=end or default_ds(), progress=progress)
    chosen = choose_days(cfg, tables, start, end, days, every)
    k = cfg.evaluate.k
    table, runs, per_user = [], {}, []
    for ds in chosen:
        s = pipeline.run(spark, cfg, stages=list(DAILY), ds=ds, progress=progress)
        m = s.get("metrics", {})
        for name, cols in (m.pop("per_user", None) or {}).items():
            per_user += [dict(ds=ds, ranker=name, **dict(zip(cols, v))) for v in zip(*cols.values())]
        rows = backtest_rows(ds, m, k)
        table += rows
        out(format_day(ds, rows, k, m.get("backtest", {}).get("truth", "")))
        runs[ds] = {x: s.get(x) for x in ("run_id", "als_run_id", "model_version", "wall_s", "tempo")}
        runs[ds]["stages"] = {name: {kk: v for kk, v in r.items() if kk in ("wall_s", "reused", "users", "skipped",
                                                                             "recommendations", "model_version",
                                                                             "gate", "features", "lm_scale", "scorer",
                                                                             "notes", "cold_slots", "text_candidates")}
                              for name, r in s["stages"].items()}
    mean = mean_rows(table)
    out(format_day("mean", mean, k))
    ci = confidence(per_user, cfg.score.scorer)
    for line in format_confidence(ci, cfg.score.scorer):
        out(line)
    wall = round(time.time() - t0, 1)
    out(f"[replay] {len(chosen)} days in {wall:.0f} s ({wall / 60:.1f} min)")
    return {"name": cfg.name, "replay": {"days": chosen, "every": every, "k": k, "horizon_days":
                                         cfg.evaluate.horizon_days, "table": table, "mean": mean, "ci": ci,
                                         "per_user": per_user},
            "ingest": None if once is None else {"stages": once["stages"], "data_quality": once["data_quality"]},
            "runs": runs, "tables": pipeline.table_report(tables, chosen[-1]), "wall_s": wall}
