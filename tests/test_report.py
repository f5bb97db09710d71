"""The evaluation report: the pandas/matplotlib core on synthetic frames, and the page the evaluate stage wrote
for the pipeline's real run, opened in headless Chromium."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collm_udf.report import ReportData, popularity_bucket_labels, render_html
from helpers import TEST_DS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("metrics.png", "scores.png", "coverage.png")
HEADINGS = ["Backtest", "What serves the day: the promotion gate", "Score distributions", "Coverage and popularity", "Example recommendations"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def synthetic() -> ReportData:
    rows = []
    for scorer, base in (("als", 0.70), ("collm", 0.60), ("recent_popularity", 0.50)):
        if scorer != "recent_popularity":  # a baseline ranks; it scores no pairs
            for i, seg in enumerate(("all", "warm", "cold", "cold_item")):
                rows.append((scorer, f"{scorer}:v1", "auc", seg, None, base + 0.0123 + i / 100, 1000 - i, 90))
                rows.append((scorer, f"{scorer}:v1", "uauc", seg, None, base - 0.0456 + i / 100, 1000 - i, 40))
        for seg, f in (("all", 1.0), ("served", 2.0)):
            rows += [(scorer, f"{scorer}:v1", "recall_at_k", seg, 10, f * base / 10, None, 80),
                     (scorer, f"{scorer}:v1", "ndcg_at_k", seg, 10, f * base / 20, None, 80)]
        rows += [(scorer, f"{scorer}:v1", "coverage", "truth", None, 0.4567, None, 80)]
    metrics = pd.DataFrame(rows, columns=["scorer", "model_version", "metric", "segment", "k", "value", "n_pairs",
                                          "n_users"])
    rng = np.random.default_rng(0)
    hists = []
    for panel, series in (("LM score", ["als", "cold"]), ("ALS score of test pairs", ["label 0", "label 1"])):
        edges = np.linspace(-2, 2, 11)
        for j, s in enumerate(series):
            counts, _ = np.histogram(rng.normal(j, 0.5, 300), edges)
            hists.append(pd.DataFrame({"panel": panel, "series": s, "lo": edges[:-1], "hi": edges[1:],
                                       "count": counts}))
    pop = pd.DataFrame({"bucket": popularity_bucket_labels(), "catalog": [50, 20, 15, 10, 3, 2, 0],
                        "recommended": [30, 0, 0, 10, 40, 20, 0]})
    examples = pd.DataFrame({"user_id": ["u1", "u1"], "history": ["Heat (1995); <Alien> & Co"] * 2,
                             "rank": [1, 2], "item": ["Toy Story (1995)", "Fargo (1996)"],
                             "score": [0.91, 0.42], "lm_score": [0.61, 0.12], "signal_score": [0.3, 0.3],
                             "als_score": [3.5, None],
                             "source": ["als", "cold"]})
    return ReportData(name="synthetic", ds="2026-01-15", metrics=metrics, hists=pd.concat(hists), popularity=pop,
                      coverage={"catalog_items": 100, "candidate_items": 60, "recommended_items": 25,
                                "items_als": 20, "items_cold": 5, "users": 9, "rows": 100},
                      run_id="run_x", model_version="collm:v1", holdout={"text-only": 0.6111, "CoLLM": 0.6789},
                      examples=examples, backtest="ds=2026-01-15, judged by the interactions of [a, b) UTC")


def test_render_html_writes_figures_and_their_numbers(tmp_path):
    index = Path(render_html(synthetic(), str(tmp_path / "r")))
    assert index == tmp_path / "r" / "index.html"
    page = index.read_text(encoding="utf-8")
    for name in FIGURES:
        w, h = png_size(index.parent / name)
        assert w > 300 and h > 200
        assert f"<img src='{name}' alt='" in page
    assert page.count("<figcaption>") >= len(FIGURES)
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    # the numbers behind the figures: AUC/UAUC per segment and scorer, ranking, holdout, coverage, popularity
    for value in ("0.712", "0.722", "0.654", "0.612", "0.554", "0.070", "0.030", "0.611", "0.679", "0.457",
                  "0.100", "0.050"):
        assert value in page, value
    assert "ALS" in page and "CoLLM" in page and "cold_item" in page and "recent popularity" in page
    assert "judged by the interactions of [a, b) UTC" in page
    assert "<td>25</td>" in page and "<td>100</td>" in page
    assert "0.300" in page  # 30 of 100 recommendations in the "0" popularity bucket
    # titles are escaped, never pasted as markup
    assert "&lt;Alien&gt; &amp; Co" in page and "<Alien>" not in page


def test_report_without_model_or_recommendations_still_renders(tmp_path):
    d = synthetic()
    d.metrics = d.metrics[d.metrics.scorer == "als"]
    d.holdout, d.examples = {}, None
    d.hists = d.hists.iloc[0:0]
    d.popularity = d.popularity.assign(recommended=0)
    index = Path(render_html(d, str(tmp_path)))
    page = index.read_text(encoding="utf-8")
    assert "Validation holdout AUC" not in page and "No recommendations for this day" in page
    assert all(png_size(tmp_path / f)[0] > 0 for f in FIGURES)


def test_report_core_imports_without_pyspark():
    code = ("import sys, collm_udf.report, collm_udf.notebook; "
            "print(sorted(m for m in sys.modules if m.startswith('pyspark')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------- real run, real browser
def page_state(index: Path) -> dict:
    """Open the page over file:// in headless Chromium; the state of its images and headings."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found (the report test opens the page in the system's Chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(index.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.getAttribute('src'), alt: e.alt, complete: e.complete,"
                       " width: e.naturalWidth}))")
            h1 = page.inner_text("h1")
            h2 = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
            text = page.inner_text("body")
        finally:
            browser.close()
    return {"images": images, "h1": h1, "h2": h2, "text": text}


def broken(images: list[dict]) -> list[str]:
    return [i["src"] for i in images if not (i["complete"] and i["width"] > 0)]


@pytest.mark.slow
def test_evaluate_stage_writes_a_report_that_renders_in_chromium(pipeline_run, tmp_path):
    cfg, _, summary = pipeline_run
    assert "report_error" not in summary["metrics"], summary["metrics"].get("report_error")
    index = Path(summary["metrics"]["report"])
    assert index == Path(cfg.tables.root) / "reports" / f"ds={TEST_DS}" / "index.html"

    state = page_state(index)
    assert sorted(i["src"] for i in state["images"]) == sorted(FIGURES)
    assert broken(state["images"]) == []
    assert all(i["alt"] for i in state["images"])
    assert state["h1"].startswith("CoLLM evaluation report") and TEST_DS in state["h1"]
    assert state["h2"] == HEADINGS
    # the page shows the stage's own figures (ALS ranks this run)
    m = summary["metrics"]
    for seg in ("all", "warm", "cold"):
        assert f"{m['auc'][seg]:.3f}" in state["text"], seg
    assert f"{m['recall@10']:.3f}" in state["text"]
    assert "Most recommended items of the day" in state["text"]

    # the check can fail: the same page with a figure missing
    copy = tmp_path / "copy"
    shutil.copytree(index.parent, copy)
    (copy / "scores.png").unlink()
    assert broken(page_state(copy / "index.html")["images"]) == ["scores.png"]


@pytest.mark.slow
def test_write_report_to_a_given_folder(spark, pipeline_run, tmp_path):
    from collm_udf.spark.report_data import write_report

    cfg, tables, summary = pipeline_run
    path = Path(write_report(spark, cfg, tables, TEST_DS, str(tmp_path / "out")))
    assert path == tmp_path / "out" / "index.html" and all((path.parent / f).is_file() for f in FIGURES)
    page = path.read_text(encoding="utf-8")
    n_recs = summary["tables"]["recommendations"]["rows"]
    assert f"<td>{n_recs}</td>" in page  # coverage: the day's recommendation rows
    # frames collected once (a notebook's) render as they are; frames of another day are refused
    import dataclasses

    from collm_udf.spark.report_data import collect

    data = collect(spark, cfg, tables, TEST_DS)
    again = Path(write_report(spark, cfg, tables, TEST_DS, str(tmp_path / "again"), data=data))
    assert f"<td>{n_recs}</td>" in again.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="report data is of ds=2020-01-01"):
        write_report(spark, cfg, tables, TEST_DS, str(tmp_path / "x"), data=dataclasses.replace(data, ds="2020-01-01"))


@pytest.mark.slow
def test_coverage_equals_a_pandas_reference(spark, pipeline_run):
    """The report's coverage figures, aggregated in a few Spark passes, against pandas on the same tables."""
    from pyspark.sql import functions as F

    from collm_udf.report import POPULARITY_EDGES
    from collm_udf.spark.asof import AsOf
    from collm_udf.spark.report_data import coverage

    cfg, tables, _ = pipeline_run
    recs = tables.read("recommendations").where(F.col("ds") == F.lit(TEST_DS).cast("date"))
    cov, buckets, top = coverage(tables, TEST_DS, recs, AsOf.of(cfg, TEST_DS))

    r = recs.toPandas()
    pairs = tables.read("pairs").toPandas()
    counts = pairs[pairs["split"] == "train"].groupby("item_id").size()  # split mode: the training split
    catalog = tables.read("items").toPandas().drop_duplicates("item_id")
    catalog_n = catalog["item_id"].map(counts).fillna(0)
    rec_n = r["item_id"].map(counts).fillna(0)
    want = {"catalog_items": len(catalog), "recommended_items": r["item_id"].nunique(),
            "users": r["user_id"].nunique(), "rows": len(r), **{f"items_{s}": g["item_id"].nunique() for s, g in r.groupby("source")},
            "mean_train_count_catalog": round(catalog_n.mean(), 2), "mean_train_count_recommended": round(rec_n.mean(), 2)}
    assert {k: cov[k] for k in want} == pytest.approx(want)
    assert len(want) > 6  # at least two sources: the per-source rows are checked
    edges = list(POPULARITY_EDGES) + [np.inf]
    labels = popularity_bucket_labels()
    for name, n in (("catalog", catalog_n), ("recommended", rec_n)):
        ref = pd.cut(n, edges, right=False, labels=labels).value_counts().reindex(labels).fillna(0)
        assert buckets[name].tolist() == ref.astype(int).tolist(), name
    assert top["recommendations"].tolist() == r["item_id"].value_counts().sort_values(ascending=False).head(10).tolist()
