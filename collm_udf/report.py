"""The evaluation report: plots and an HTML page from small pandas frames (no pyspark here).

collm_udf/spark/report_data.py aggregates the Delta tables into a ReportData (a few hundred rows at most); this
module turns it into matplotlib Figures and writes index.html with PNG files next to it. Figures are built
with the object-oriented API on an explicit Agg canvas, never pyplot: no display, no global figure state, and a
notebook's own matplotlib backend is left alone (notebooks show figures through `figure_png`).
"""
from __future__ import annotations

import datetime as dt
import html
import io
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Display names of metrics-table scorers (an unknown scorer is shown as it is stored).
SCORER_NAMES = {"als": "ALS", "collm": "CoLLM", "text": "text-only", "popularity": "popularity",
                "recent_popularity": "recent popularity", "features": "features-only"}
SEGMENT_ORDER = ("all", "served", "warm", "cold", "cold_item", "warm_item", "no_factors", "active", "truth")
METRIC_NAMES = {"auc": "AUC", "uauc": "UAUC", "recall_at_k": "Recall@k", "ndcg_at_k": "NDCG@k",
                "coverage": "coverage", "overlap_at_k": "overlap@k", "top_item_share": "top item share",
                "cold_item_share": "cold items' share of the top-k", "cold_items": "cold items listed",
                "ndcg_lift_over_features": "NDCG@k - features-only", "recall_lift_over_features":
                "Recall@k - features-only",
                "alignment_residual": "alignment residual"}
# Training-popularity buckets: number of training interactions of an item, [lo, next lo).
POPULARITY_EDGES = (0, 1, 3, 10, 30, 100, 300)
COLORS = {"ALS": "#4C72B0", "CoLLM": "#DD8452", "text-only": "#55A868", "popularity": "#8C8C8C",
          "recent popularity": "#B5B5B5", "features-only": "#8172B3"}


def popularity_bucket_labels(edges: tuple[int, ...] = POPULARITY_EDGES) -> list[str]:
    out = []
    for lo, hi in zip(edges, edges[1:] + (None,)):
        if hi is None:
            out.append(f"{lo}+")
        elif hi - lo == 1:
            out.append(str(lo))
        else:
            out.append(f"{lo}-{hi - 1}")
    return out


@dataclass
class ReportData:
    """Everything the report shows; each frame is an aggregate (no per-pair or per-recommendation rows).

    metrics:    scorer, model_version, metric (auc/uauc/recall_at_k/ndcg_at_k/coverage), segment, k, value,
                n_pairs, n_users (scorer: the configured one, als, popularity, recent_popularity)
    hists:      panel, series, lo, hi, count  (histogram bins; series of one panel share their bins)
    popularity: bucket, catalog, recommended  (item counts / recommendation rows per popularity bucket)
    coverage:   catalog_items, candidate_items, recommended_items, users, rows, items_<source>, ...
    holdout:    validation holdout AUC of the trained model's stages, e.g. {"text-only": .., "CoLLM": ..}
    examples:   user_id, history, rank, item, score, lm_score, signal_score, als_score, source
    top_items:  item, text, recommendations, train_count
    gate:       ranker, serves, NDCG@k, Recall@k, served truth users: the promotion gate's held-out comparison
                behind what serves the day (gate_note: when it decided, what it chose and why)
    """

    name: str
    ds: str
    metrics: pd.DataFrame
    hists: pd.DataFrame
    popularity: pd.DataFrame
    coverage: dict
    run_id: Optional[str] = None
    model_version: Optional[str] = None
    holdout: dict = field(default_factory=dict)
    examples: Optional[pd.DataFrame] = None
    top_items: Optional[pd.DataFrame] = None
    backtest: str = ""  # what judged the day, or why it is not judged yet
    gate: Optional[pd.DataFrame] = None
    gate_note: str = ""


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}"
    return str(v)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg whatever backend the process (or notebook) uses
    return fig


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def _scorer_label(s: str) -> str:
    return SCORER_NAMES.get(s, s)


def _grouped_bars(ax, table: pd.DataFrame, title: str, ylabel: str, ylim: tuple | None = None) -> None:
    """Bars of table (rows = x groups, columns = series) with the value written above each bar."""
    if table.empty or table.isna().all().all():
        _empty(ax, f"{title}: no values")
        return
    n = len(table.columns)
    width = 0.8 / n
    x = np.arange(len(table.index))
    for i, col in enumerate(table.columns):
        vals = table[col].to_numpy(float)
        bars = ax.bar(x + (i - (n - 1) / 2) * width, np.nan_to_num(vals), width, label=col,
                      color=COLORS.get(col))
        for b, v in zip(bars, vals):
            if not np.isnan(v):
                ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(x, [str(i) for i in table.index])
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8, loc="lower right")


def _by_scorer(metrics: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """index x scorer values; only the combinations the table holds (a missing value stays NaN)."""
    t = metrics.groupby(index + ["scorer"], dropna=False)["value"].first().unstack("scorer")
    t.columns = [_scorer_label(c) for c in t.columns]
    return t


def metric_table(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """segment x scorer values of one metric (segments in the usual order, scorers by display name)."""
    m = metrics[metrics["metric"] == metric]
    if m.empty:
        return pd.DataFrame()
    t = _by_scorer(m, ["segment"])
    order = [s for s in SEGMENT_ORDER if s in t.index] + sorted(set(t.index) - set(SEGMENT_ORDER))
    return t.reindex(order)


def metrics_figure(metrics: pd.DataFrame, holdout: dict | None = None) -> Figure:
    """AUC and UAUC per segment and scorer, Recall/NDCG@k per scorer, and the holdout AUC of the model's
    training stages (text-only vs CoLLM) when a model was trained."""
    panels = 4 if holdout else 3
    fig = _new_figure(4.2 * panels, 3.6)
    axes = fig.subplots(1, panels)
    _grouped_bars(axes[0], metric_table(metrics, "auc"), "AUC on the day's truth pairs", "AUC", (0, 1.08))
    _grouped_bars(axes[1], metric_table(metrics, "uauc"), "UAUC on the day's truth pairs", "mean per-user AUC",
                  (0, 1.08))
    rank = metrics[metrics["metric"].isin(["recall_at_k", "ndcg_at_k"]) & (metrics["segment"] == "all")]
    if rank.empty:
        _empty(axes[2], "no ranking metrics")
    else:
        k = rank["k"].dropna().astype(int).iloc[0] if rank["k"].notna().any() else "k"
        t = _by_scorer(rank, ["metric"])
        t = t.reindex([m for m in ("recall_at_k", "ndcg_at_k") if m in t.index])
        t.index = [f"{'Recall' if i == 'recall_at_k' else 'NDCG'}@{k}" for i in t.index]
        top = float(np.nanmax(t.to_numpy(float))) if t.notna().any().any() else 1.0
        _grouped_bars(axes[2], t, f"The day's table vs baselines (k={k})", "mean over truth users",
                      (0, max(top * 1.25, 0.01)))
    if holdout:
        t = pd.DataFrame({"validation holdout": holdout}).T
        _grouped_bars(axes[3], t, "Model training: holdout AUC", "AUC", (0, 1.08))
    return fig


def score_figure(hists: pd.DataFrame) -> Figure:
    """One panel per histogram `panel`; its series overlaid as densities (so that sizes may differ)."""
    names = list(dict.fromkeys(hists["panel"])) if len(hists) else []
    fig = _new_figure(4.2 * max(len(names), 1), 3.4)
    axes = np.atleast_1d(fig.subplots(1, max(len(names), 1)))
    if not names:
        _empty(axes[0], "no scores for this day")
        return fig
    for ax, name in zip(axes, names):
        part = hists[hists["panel"] == name]
        for series, h in part.groupby("series", sort=True):
            h = h.sort_values("lo")
            edges = np.append(h["lo"].to_numpy(float), h["hi"].to_numpy(float)[-1])
            counts = h["count"].to_numpy(float)
            total = counts.sum()
            dens = counts / (total * np.diff(edges)) if total else counts
            ax.stairs(dens, edges, fill=True, alpha=0.45, label=f"{series} (n={int(total)})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("score")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    return fig


def coverage_figure(coverage: dict, popularity: pd.DataFrame) -> Figure:
    """Share of the catalog in the day's candidates and recommendations, and the training popularity of
    recommended items next to the catalog's (popularity bias shows as mass moving right)."""
    fig = _new_figure(10, 3.6)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.6])
    cat = coverage.get("catalog_items") or 0
    bars = {"candidates": coverage.get("candidate_items"), "recommended": coverage.get("recommended_items")}
    bars.update({f"rec. ({k.removeprefix('items_')})": v for k, v in sorted(coverage.items())
                 if k.startswith("items_")})
    bars = {k: v / cat for k, v in bars.items() if v is not None and cat}
    if bars:
        y = np.arange(len(bars))
        left.barh(y, list(bars.values()), color="#4C72B0")
        left.set_yticks(y, list(bars.keys()))
        left.invert_yaxis()
        for yi, v in zip(y, bars.values()):
            left.annotate(f"{v:.1%}", (v, yi), va="center", fontsize=8, xytext=(2, 0), textcoords="offset points")
        left.set_xlim(0, 1.15)
        left.set_xlabel(f"share of the catalog ({cat} items)")
        left.set_title("Catalog coverage")
    else:
        _empty(left, "no catalog or recommendations")
    if popularity.empty or popularity[["catalog", "recommended"]].to_numpy().sum() == 0:
        _empty(right, "no popularity data")
    else:
        shares = popularity.set_index("bucket")[["catalog", "recommended"]].astype(float)
        shares = shares / shares.sum().replace(0, np.nan)
        shares.columns = ["catalog items", "recommendations"]
        x = np.arange(len(shares))
        right.bar(x - 0.2, shares["catalog items"], 0.4, label="catalog items", color="#8C8C8C")
        right.bar(x + 0.2, shares["recommendations"], 0.4, label="recommendations", color="#DD8452")
        right.set_xticks(x, shares.index)
        right.set_xlabel("training interactions of the item")
        right.set_ylabel("share")
        right.set_title("Training popularity: catalog vs recommended")
        right.legend(fontsize=8)
    return fig


def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ HTML
def metrics_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """metric, segment, one column per scorer, truth pairs and users: the numbers behind the metrics figure."""
    if metrics.empty:
        return pd.DataFrame()
    t = _by_scorer(metrics, ["metric", "segment"])
    counts = metrics.groupby(["metric", "segment"])[["n_pairs", "n_users"]].max()
    t = t[[c for c in t.columns if t[c].notna().any()]]
    # counts as text: integers where known, a dash where the metric has none (ranking rows count no pairs)
    for col, name in (("n_pairs", "truth pairs"), ("n_users", "users")):
        t[name] = counts[col].reindex(t.index).map(lambda v: "–" if pd.isna(v) else str(int(v)))
    order = {m: i for i, m in enumerate(METRIC_NAMES)}
    seg = {s: i for i, s in enumerate(SEGMENT_ORDER)}
    t = t.reset_index()
    t = t.sort_values(["metric", "segment"], key=lambda c: c.map({**order, **seg}).fillna(99)).reset_index(drop=True)
    t["metric"] = t["metric"].map(lambda m: METRIC_NAMES.get(m, m))
    return t


def popularity_summary(popularity: pd.DataFrame) -> pd.DataFrame:
    p = popularity.copy()
    for col in ("catalog", "recommended"):
        total = p[col].sum()
        p[f"{col} share"] = p[col] / total if total else np.nan
    return p.rename(columns={"bucket": "training interactions", "catalog": "catalog items",
                             "recommended": "recommendations"})


def _table(df: pd.DataFrame | None, caption: str) -> str:
    if df is None or df.empty:
        return f"<p class='note'>{html.escape(caption)}: nothing to show.</p>"
    body = df.to_html(index=False, escape=True, na_rep="–", border=0, classes="nums",
                      formatters={c: _fmt for c in df.columns if df[c].dtype.kind == "f"})
    return f"<figure class='table'>{body}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _img(src: str, alt: str, caption: str) -> str:
    return (f"<figure><img src='{html.escape(src)}' alt='{html.escape(alt)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _examples_html(examples: pd.DataFrame | None) -> str:
    if examples is None or examples.empty:
        return "<p class='note'>No recommendations for this day.</p>"
    out = []
    for uid, g in examples.groupby("user_id", sort=True):
        hist = g["history"].iloc[0] or "(no positive history)"
        out.append(f"<h3>User {html.escape(str(uid))}</h3><p class='history'><b>History (oldest first):</b> "
                   f"{html.escape(hist)}</p>")
        out.append(_table(g.drop(columns=["user_id", "history"]), f"Top recommendations of user {uid}"))
    return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;color:#222}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.9em}
table.nums{border-collapse:collapse;font-size:.85em}table.nums td,table.nums th{padding:2px 8px;
border-bottom:1px solid #eee;text-align:right}.note{color:#777}.history{font-size:.9em}"""


def render_html(data: ReportData, out_dir: str) -> str:
    """Write index.html and its PNG figures into out_dir (created); returns the path of index.html."""
    os.makedirs(out_dir, exist_ok=True)
    figures = {
        "metrics.png": (metrics_figure(data.metrics, data.holdout),
                        "Bar charts of AUC and UAUC per segment and scorer, and ranking metrics",
                        "AUC and UAUC on the day's truth pairs per segment (warm: user and item seen often "
                        "enough by the day's ALS fit; cold: not warm; cold_item: item never seen), Recall/NDCG@k "
                        "of the day's table and of the baselines over the truth users"
                        + ("; holdout AUC of the model after stage 1 (text-only) and stage 2 (CoLLM)"
                           if data.holdout else "") + "."),
        "scores.png": (score_figure(data.hists), "Histograms of the score's parts and of ALS scores",
                       "Score distributions: the day's recommendations (the LM's and the signals' parts of the "
                       "score, and the ALS score) and the ALS score of the labelled truth pairs by label."),
        "coverage.png": (coverage_figure(data.coverage, data.popularity),
                         "Catalog coverage bars and popularity distribution of recommended items",
                         "Share of the catalog among the day's candidates and recommendations, and the training "
                         "popularity of recommended items vs all catalog items."),
    }
    for fname, (fig, _, _) in figures.items():
        fig.savefig(os.path.join(out_dir, fname))
    img = {k: _img(k, alt, cap) for k, (_, alt, cap) in figures.items()}
    # as text: counts stay integers next to the shares and means in the same column
    cov = pd.DataFrame([{"what": k.replace("_", " "), "value": _fmt(v)} for k, v in data.coverage.items()])
    holdout = pd.DataFrame([{"stage": k, "holdout AUC": v} for k, v in data.holdout.items()])
    title = f"CoLLM evaluation report — {data.name}, ds={data.ds}"
    meta = ", ".join(f"{k} {html.escape(str(v))}" for k, v in (("run", data.run_id),
                                                                ("ranked by", data.model_version)) if v)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="note">{meta}{'; ' if meta else ''}generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC</p>
<h2>Backtest</h2>
<p class="note">{html.escape(data.backtest or "")}</p>
{img['metrics.png']}
{_table(metrics_summary(data.metrics), "AUC/UAUC per segment, Recall/NDCG@k over all truth users (all), the "
        "served ones (served), the liked items that were cold / warm before the cutoff (cold_item / warm_item: "
        "fewer / at least candidates.min_item_interactions interactions) and the truth users without ALS factors "
        "(no_factors); coverage: users with a list over the day's active users (active) and over the truth users "
        "(truth); each list's cold items; by scorer and baseline")}
{_table(holdout, "Validation holdout AUC of the trained model") if data.holdout else ""}
<h2>What serves the day: the promotion gate</h2>
<p class="note">{html.escape(data.gate_note or "No promotion gate decided what serves this day (the ALS scorer, "
                             "the fixed split, or nothing trained yet).")}</p>
{_table(data.gate, "Each ranker's NDCG@k and Recall@k on the held-out users' candidate pool of the label window")
 if data.gate is not None else ""}
<h2>Score distributions</h2>
{img['scores.png']}
<h2>Coverage and popularity</h2>
{img['coverage.png']}
{_table(cov, "Catalog coverage of the day")}
{_table(popularity_summary(data.popularity), "Training popularity of catalog items and recommendations")}
{_table(data.top_items, "Most recommended items of the day")}
<h2>Example recommendations</h2>
{_examples_html(data.examples)}
</body></html>
"""
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
