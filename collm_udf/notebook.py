"""What notebooks/*.ipynb call: they hold no logic of their own, only these helpers and collm_udf.report.

The same notebook runs on Databricks and locally. On Databricks the notebook already has a `spark` session and
passes it in (session(cfg, globals().get("spark"))); collm never reconfigures it. Locally, session() starts one
with the project's helper (local[*] with Delta), as `collm run` would. Every helper returns a pandas frame, a
dict or a matplotlib Figure, which the notebook displays.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml

from collm_udf.config import Config, ConfigError, load_config

DEFAULT_CONF = "conf/local.yaml"


def find_conf(path: str) -> Path:
    """`path` as given, else relative to the working directory's parents: a notebook runs in notebooks/
    (locally and in a Databricks repo), while confs are named from the project root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.is_file():
        return p.resolve()
    for parent in Path.cwd().parents:
        if (parent / p).is_file():
            return (parent / p).resolve()
    raise ConfigError(f"conf file not found: {path} (looked in {Path.cwd()} and its parents)")


def load_conf(conf: Optional[str] = None, root: Optional[str] = None, overrides: Any = None) -> Config:
    """The run's Config: `conf` (default conf/local.yaml), tables.root replaced by `root` when given, and
    `overrides` (a mapping, or its JSON text as an environment variable holds it) merged on top.

    A relative tables.root in the conf is taken relative to the project directory (the conf folder's parent),
    as `make demo` run from the project root resolves it, not relative to notebooks/."""
    path = find_conf(conf or DEFAULT_CONF)
    extra = json.loads(overrides) if isinstance(overrides, str) else dict(overrides or {})
    if not isinstance(extra, dict):
        raise ConfigError(f"overrides: expected a JSON object, got {overrides!r}")
    if root:
        extra.setdefault("tables", {})["root"] = root
    else:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        conf_root = (raw.get("tables") or {}).get("root")
        project = path.parent.parent if path.parent.name == "conf" else path.parent
        if isinstance(conf_root, str) and "://" not in conf_root and not os.path.isabs(conf_root) \
                and "root" not in (extra.get("tables") or {}):
            extra.setdefault("tables", {})["root"] = str(project / conf_root)
    return load_config(path, extra)


def run_date(ds: Optional[str] = None, spark=None, cfg: Optional[Config] = None) -> Optional[str]:
    """The day to show: `ds` when given; else (with spark and cfg) the newest evaluated day in `metrics`; else
    None, which run_pipeline turns into the newest day whose backtest the interactions already cover."""
    from collm_udf.spark.tables import check_ds

    if ds:
        return check_ds(ds)
    if spark is not None and cfg is not None:
        t = tables(spark, cfg)
        if t.exists("metrics"):
            last = t.read("metrics").agg({"ds": "max"}).first()[0]
            if last is not None:
                return str(last)
    return None


def session(cfg: Config, existing=None):
    """The notebook's own session when it has one (Databricks: the global `spark`), else the project's."""
    from collm_udf.spark.session import get_spark, set_checkpoint_dir

    if existing is not None:
        set_checkpoint_dir(existing, cfg)
        return existing
    return get_spark(cfg, app_name=f"collm-notebook-{cfg.name}")


def tables(spark, cfg: Config):
    from collm_udf.spark.tables import Tables

    return Tables(spark, cfg.tables)


def run_pipeline(spark, cfg: Config, ds: Optional[str] = None, stages: Optional[list[str]] = None) -> dict:
    """Run the stages (default: all) for day `ds`, printing progress; returns the run summary (its "ds" is the
    day). Without a ds (daily mode): ingest and prepare first, then the newest day whose backtest horizon the
    interactions cover, so that the evaluation has a truth to show."""
    from collm_udf.spark import pipeline, replay
    from collm_udf.spark.runs import default_ds

    if ds is None and cfg.asof.mode == "daily" and stages is None:
        first = pipeline.run(spark, cfg, stages=list(replay.ONCE), ds=default_ds(), progress=print)
        ds = replay.last_backtest_day(cfg, tables(spark, cfg))
        summary = pipeline.run(spark, cfg, stages=list(replay.DAILY), ds=ds, progress=print)
        summary["stages"] = {**first["stages"], **summary["stages"]}
        return summary
    return pipeline.run(spark, cfg, stages=stages, ds=ds, progress=print)


def ensure_pipeline(spark, cfg: Config, ds: Optional[str]) -> str:
    """The day to show: `ds` when it has an evaluation, else after running the pipeline for it (a notebook
    opened after a run only reads). Without a ds: the newest evaluated day, or the day run_pipeline picks."""
    from pyspark.sql import functions as F

    t = tables(spark, cfg)
    if ds is None:
        ds = run_date(None, spark, cfg)
    if ds is not None and t.exists("metrics") and \
            t.read("metrics").where(F.col("ds") == F.lit(ds).cast("date")).limit(1).count():
        return ds
    return run_pipeline(spark, cfg, ds)["ds"]


def backtests(spark, cfg: Config) -> pd.DataFrame:
    """Every evaluated day's ranking backtest (its latest evaluation): ds, ranker, NDCG@k and Recall@k over the
    truth users, coverage of the truth users; and a mean row per ranker."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    t = tables(spark, cfg)
    cols = ["ds", "ranker", "ndcg", "recall", "coverage_truth"]
    if not t.exists("metrics"):
        return pd.DataFrame(columns=cols)
    m = t.read("metrics")
    last = F.max("evaluated_at").over(Window.partitionBy("ds"))
    m = m.withColumn("_last", last).where(F.col("evaluated_at") == F.col("_last"))
    rows = (m.where(((F.col("metric").isin("ndcg_at_k", "recall_at_k")) & (F.col("segment") == "all"))
                    | ((F.col("metric") == "coverage") & (F.col("segment") == "truth")))
            .select("ds", "scorer", "metric", "value").toPandas())
    if rows.empty:
        return pd.DataFrame(columns=cols)
    wide = rows.pivot_table(index=["ds", "scorer"], columns="metric", values="value").reset_index()
    wide = wide.rename(columns={"scorer": "ranker", "ndcg_at_k": "ndcg", "recall_at_k": "recall",
                                "coverage": "coverage_truth"})
    wide["ds"] = wide["ds"].astype(str)
    mean = wide.groupby("ranker", as_index=False)[[c for c in cols[2:] if c in wide]].mean().assign(ds="mean")
    return pd.concat([wide, mean], ignore_index=True).reindex(columns=cols)


def stage_times(summary: dict) -> pd.DataFrame:
    """stage, seconds and what each stage reported, from a run summary."""
    rows = [{"stage": s, "seconds": r.get("wall_s"),
             "result": json.dumps({k: v for k, v in r.items() if k != "wall_s"}, default=str)[:160]}
            for s, r in summary.get("stages", {}).items()]
    return pd.DataFrame(rows)


def table_overview(spark, cfg: Config, ds: str) -> pd.DataFrame:
    """table, rows (the day's rows for day-partitioned tables), location."""
    from collm_udf.spark.pipeline import table_report

    rep = table_report(tables(spark, cfg), ds)
    return pd.DataFrame([{"table": k, "rows": v["rows"], "location": v["location"]} for k, v in rep.items()])


def head(spark, cfg: Config, name: str, ds: Optional[str] = None, n: int = 5, order_by: Optional[list] = None) \
        -> pd.DataFrame:
    """The first n rows of a table (of day `ds` for tables with a ds column), ordered for a stable display."""
    from pyspark.sql import functions as F

    df = tables(spark, cfg).read(name)
    if ds is not None and "ds" in df.columns:
        df = df.where(F.col("ds") == F.lit(ds).cast("date"))
    keys = order_by or [c for c in ("user_id", "rank", "item_id") if c in df.columns]
    return df.orderBy(*keys).limit(n).toPandas() if keys else df.limit(n).toPandas()


def report_data(spark, cfg: Config, ds: str):
    """The frames of the day's evaluation report (collm_udf.report.ReportData)."""
    from collm_udf.spark.report_data import collect

    return collect(spark, cfg, tables(spark, cfg), ds)


def examples(spark, cfg: Config, ds: str, users: int = 3, per_user: int = 5) -> pd.DataFrame:
    from collm_udf.spark.report_data import example_recommendations

    return example_recommendations(cfg, tables(spark, cfg), ds, users, per_user)


def write_report(spark, cfg: Config, ds: str, out_dir: Optional[str] = None, data=None) -> str:
    """The day's HTML report; `data`: report_data's frames of that day, rendered as they are (no second pass)."""
    from collm_udf.spark.report_data import write_report as write

    return write(spark, cfg, tables(spark, cfg), ds, out_dir, data=data)


def show(fig) -> None:
    """Display a Figure as PNG. collm's figures are not pyplot's, so the notebook backend would not show
    them by itself; a PNG displays the same in Jupyter and on Databricks."""
    from IPython.display import Image, display

    from collm_udf.report import figure_png

    display(Image(data=figure_png(fig)))
