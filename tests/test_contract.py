"""The table contract read back from Delta (path and catalog tables), today's table for consumers (the latest
view, `collm latest`) and retention (tables.retention_days), on the ML-100K slice through the real stages."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml
from pyspark.sql import functions as F

from collm_udf import cli
from collm_udf.config import config_from_dict
from collm_udf.spark.contract import CONTRACT, SCHEMA_VERSION, VERSION_PROPERTY
from collm_udf.spark.tables import Tables
from helpers import ROOT, assert_contract, daily_conf, delta_contract, slice_conf

pytestmark = pytest.mark.slow
DAYS = ("1998-03-25", "1998-04-01", "1998-04-08")  # a week apart: with retention_days 7 the third drops the first
KEY = ["user_id", "rank", "item_id", "score"]


def test_every_table_the_pipeline_wrote_carries_its_contract(pipeline_run):
    _, tables, _ = pipeline_run
    written = [n for n in CONTRACT if tables.exists(n)]
    assert {"interactions", "items", "pairs", "id_map", "als_runs", "user_factors", "item_factors", "candidates",
            "recommendations", "metrics"} <= set(written)
    for name in written:
        assert_contract(tables, name)


def test_the_readme_lists_each_table_with_the_contracts_columns():
    text = (ROOT / "README.md").read_text()
    rows = {}
    for line in text.split("## The table contract", 1)[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].strip("*`") in CONTRACT:
            rows[cells[1].strip("*`")] = cells[2]
    assert set(rows) == set(CONTRACT)
    for name, cell in rows.items():
        for column in CONTRACT[name].columns:
            assert f"`{column}`" in cell or column in cell.replace("`", "").replace(",", " ").split(), (name, column)


def test_a_table_an_older_version_wrote_without_comments_gets_them(spark, tmp_path):
    """Appends keep the stored schema: the first write of a process adds what is missing, once."""
    tables = Tables(spark, config_from_dict(slice_conf(tmp_path / "src", tmp_path / "wh")).tables)
    old = spark.createDataFrame([("i1", "a film")], "item_id string, text string")
    old.write.format("delta").save(tables.location("items"))  # no comments, no version: as before the contract
    assert delta_contract(tables, "items")[1] is None
    tables.append(spark.createDataFrame([("i2", "another")], "item_id string, text string"), "items")
    assert_contract(tables, "items")
    assert tables.read("items").count() == 2


# ------------------------------------------------------------------------------- retention on path tables
@pytest.fixture(scope="module")
def retained(spark, slice_dir, tmp_path_factory):
    """Three days a week apart with tables.retention_days 7 (ALS scorer; ALS refits every 10 days)."""
    from collm_udf.spark import pipeline

    root = tmp_path_factory.mktemp("retention-wh")
    cfg = daily_conf(slice_dir, root, tables={"root": str(root), "retention_days": 7})
    runs, snapshots = {}, {}
    for i, ds in enumerate(DAYS):
        stages = (["ingest", "prepare"] if i == 0 else []) + ["idmap", "als", "candidates", "score"]
        runs[ds] = pipeline.run(spark, cfg, stages=stages, ds=ds)
        tables = Tables(spark, cfg.tables)
        snapshots[ds] = tables.read("recommendations").toPandas()
    return cfg, Tables(spark, cfg.tables), runs, snapshots


def days_of(tables: Tables, name: str) -> list[str]:
    return sorted(r[0].isoformat() for r in tables.read(name).select("ds").distinct().collect())


def test_retention_drops_old_days_and_keeps_the_newest_and_what_it_uses(retained):
    cfg, tables, runs, snapshots = retained
    assert runs[DAYS[1]]["stages"]["score"]["retention"]["dropped"] == {"candidates": [], "recommendations": []}
    assert sorted(snapshots[DAYS[1]]["ds"].astype(str).unique()) == list(DAYS[:2])  # nothing older than 7 days yet
    last = runs[DAYS[2]]["stages"]["score"]["retention"]
    assert last == {"retention_days": 7, "kept_from": DAYS[1],
                    "dropped": {"candidates": [DAYS[0]], "recommendations": [DAYS[0]]}}
    for name in ("candidates", "recommendations"):
        assert days_of(tables, name) == list(DAYS[1:])
        ops = [r["operation"] for r in tables.delta(name).history().select("operation").collect()]
        assert "DELETE" in ops and "VACUUM END" in ops, (name, ops)
    # the kept days are as they were written
    now = tables.read("recommendations").toPandas()
    for ds in DAYS[1:]:
        pick = lambda df: df[df["ds"].astype(str) == ds][KEY].sort_values(KEY).reset_index(drop=True)  # noqa: E731
        pd.testing.assert_frame_equal(pick(now), pick(snapshots[ds]))
    # every fit stays, its factors and its saved model too, the newest day's among them
    runs_tab = tables.read("als_runs").toPandas()
    newest_fit = runs[DAYS[2]]["stages"]["candidates"]["als_run_id"]
    assert newest_fit in set(runs_tab["als_run_id"]) and len(runs_tab) == 2
    assert all(os.path.isdir(p.removeprefix("file:")) for p in runs_tab["model_path"])
    assert set(tables.read("user_factors").select("als_run_id").distinct().toPandas()["als_run_id"]) == \
        set(runs_tab["als_run_id"])


def test_a_rerun_of_a_kept_day_is_unchanged_and_drops_nothing_more(spark, retained):
    from collm_udf.spark import pipeline

    cfg, tables, runs, _ = retained
    before = tables.read("recommendations").toPandas()[["ds"] + KEY]
    again = pipeline.run(spark, cfg, stages=["idmap", "als", "candidates", "score"], ds=DAYS[1])
    assert again["stages"]["score"]["retention"]["dropped"] == {"candidates": [], "recommendations": []}
    after = tables.read("recommendations").toPandas()[["ds"] + KEY]
    order = ["ds"] + KEY
    pd.testing.assert_frame_equal(before.sort_values(order).reset_index(drop=True),
                                  after.sort_values(order).reset_index(drop=True))


def test_collm_latest_prints_the_newest_day_and_its_path(retained, tmp_path, capsys):
    cfg, tables, _, _ = retained
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(slice_conf(tmp_path / "src", tmp_path / "not-used")))
    assert cli.main(["latest", "--conf", str(conf), "--root", cfg.tables.root]) == 0
    assert capsys.readouterr().out.strip() == f"{DAYS[2]}\t{tables.location('recommendations')}"
    assert cli.main(["latest", "--conf", str(conf), "--root", cfg.tables.root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ds": DAYS[2], "table": tables.location("recommendations"),
                                                   "view": None}
    assert cli.main(["latest", "--conf", str(conf), "--root", str(tmp_path / "empty")]) == 1
    assert "has no day yet" in capsys.readouterr().err


@pytest.mark.parametrize("days, says", [(0, ">= 7"), (6, ">= 7"), ("7", "integer"), (True, "")])
def test_retention_below_a_week_or_not_a_number_is_refused(tmp_path, days, says):
    from collm_udf.config import ConfigError

    with pytest.raises(ConfigError, match=rf"tables\.retention_days: .*{says}"):
        config_from_dict(slice_conf(tmp_path, tmp_path, tables={"root": str(tmp_path), "retention_days": days}))


# -------------------------------------------------------------------- catalog tables and the latest view
@pytest.fixture(scope="module")
def catalog_run(spark, slice_dir, tmp_path_factory):
    """Sources and tables in the catalog (schema shop; schema collm_contract, prefix t_): two days, then a rerun
    of the first (the third write of each day-partitioned table)."""
    from collm_udf.spark import pipeline

    for db in ("shop", "collm_contract"):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    for name, file in (("shop.events", "events.parquet"), ("shop.catalog", "catalog.parquet")):
        spark.read.parquet(str(slice_dir / file)).write.format("delta").mode("overwrite").saveAsTable(name)
    models = tmp_path_factory.mktemp("catalog-models")
    src = slice_conf(slice_dir, None)
    src["interactions"]["source"], src["items"]["source"] = {"table": "shop.events"}, {"table": "shop.catalog"}
    cfg = daily_conf(slice_dir, None, tables={"schema": "collm_contract", "prefix": "t_", "models_dir": str(models)},
                     interactions=src["interactions"], items=src["items"])
    pipeline.run(spark, cfg, stages=["ingest", "prepare", "idmap", "als", "candidates", "score"], ds=DAYS[1])
    newest = pipeline.run(spark, cfg, stages=["candidates", "score"], ds=DAYS[2])  # the first day's fit and ids
    view_after_newest = spark.table(Tables(spark, cfg.tables).latest_view()).toPandas()
    rerun = pipeline.run(spark, cfg, stages=["candidates", "score"], ds=DAYS[1])
    return cfg, Tables(spark, cfg.tables), newest, rerun, view_after_newest


def test_catalog_tables_carry_comments_and_version_in_the_catalog(spark, catalog_run, slice_dir):
    cfg, tables, *_ = catalog_run
    assert tables.location("pairs") == "collm_contract.t_pairs"
    n = len(pd.read_parquet(slice_dir / "events.parquet"))
    assert spark.table("collm_contract.t_pairs").count() == n  # every source row, read from the catalog
    for name in ("interactions", "pairs", "candidates", "recommendations", "als_runs"):
        assert_contract(tables, name)
    loc = tables.location("recommendations")
    described = {r["col_name"]: r for r in spark.sql(f"DESCRIBE TABLE EXTENDED {loc}").collect()}
    assert described["Comment"]["data_type"] == CONTRACT["recommendations"].comment
    assert described["rank"]["comment"] == CONTRACT["recommendations"].columns["rank"]
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {loc}").collect()}
    assert props[VERSION_PROPERTY] == str(SCHEMA_VERSION)


def test_the_latest_view_follows_the_newest_day_not_a_rerun(spark, catalog_run):
    cfg, tables, newest, rerun, view_after_newest = catalog_run
    view = tables.latest_view()
    assert view == "collm_contract.t_recommendations_latest"
    assert newest["stages"]["score"]["latest_view"] == view == rerun["stages"]["score"]["latest_view"]
    day = tables.read("recommendations").where(F.col("ds") == F.lit(DAYS[2]).cast("date")).toPandas()
    now = spark.table(view).toPandas()
    assert set(now["ds"].astype(str)) == {DAYS[2]}  # the rerun of the older day did not move it
    for got in (now, view_after_newest):
        pd.testing.assert_frame_equal(got[KEY].sort_values(KEY).reset_index(drop=True),
                                      day[KEY].sort_values(KEY).reset_index(drop=True))
    assert "newest complete day" in spark.sql(f"DESCRIBE TABLE EXTENDED {view}").where(
        F.col("col_name") == "Comment").first()["data_type"]
