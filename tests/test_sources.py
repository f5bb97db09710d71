"""Ingest from each kind of source: the shipped MovieLens CSV conf, and catalog tables in and out."""

import pandas as pd
import pytest
from pyspark.sql import functions as F

from collm_udf.config import config_from_dict, load_config
from collm_udf.spark.context import StageContext
from collm_udf.spark.stages import ingest, prepare
from collm_udf.spark.tables import Tables
from helpers import ROOT, slice_conf

pytestmark = pytest.mark.slow


def test_movielens_csv_conf(spark, ml100k, tmp_path):
    cfg = load_config(ROOT / "conf" / "local.yaml", {"tables": {"root": str(tmp_path)}})
    tables = Tables(spark, cfg.tables)
    out = ingest.run(StageContext.of(spark, cfg, tables=tables))
    assert out["interactions"] == 100000 and out["items"] == 1682
    items = tables.read("items").toPandas().set_index("item_id")["text"]
    assert items["543"] == "Misérables, Les (1995)"  # latin-1 decoded
    first = tables.read("interactions").where((F.col("user_id") == "196") & (F.col("item_id") == "242")).first()
    assert first["rating"] == 3.0 and first["ts"].timestamp() == 881250949


def test_catalog_tables_in_and_out(spark, slice_dir, tmp_path):
    spark.sql("CREATE DATABASE IF NOT EXISTS shop")
    spark.read.parquet(str(slice_dir / "events.parquet")).write.format("delta").mode("overwrite") \
        .saveAsTable("shop.events")
    spark.read.parquet(str(slice_dir / "catalog.parquet")).write.format("delta").mode("overwrite") \
        .saveAsTable("shop.catalog")
    spark.sql("CREATE DATABASE IF NOT EXISTS recsys")
    conf = slice_conf(slice_dir, tmp_path)
    conf["tables"] = {"schema": "recsys", "prefix": "t_", "models_dir": str(tmp_path / "models")}
    conf["interactions"]["source"] = {"table": "shop.events"}
    conf["items"]["source"] = {"table": "shop.catalog"}
    cfg = config_from_dict(conf)
    tables = Tables(spark, cfg.tables)
    ingest.run(StageContext.of(spark, cfg, tables=tables))
    prepare.run(StageContext.of(spark, cfg, tables=tables))
    assert tables.location("pairs") == "recsys.t_pairs"
    assert spark.catalog.tableExists("recsys.t_pairs")
    n = len(pd.read_parquet(slice_dir / "events.parquet"))
    assert spark.read.table("recsys.t_pairs").count() == n


def test_missing_mapped_column_names_source_and_column(spark, slice_dir, tmp_path):
    conf = slice_conf(slice_dir, tmp_path)
    conf["interactions"]["columns"]["rating"] = "score_typo"
    cfg = config_from_dict(conf)
    with pytest.raises(ingest.SourceError, match=r"events\.parquet: mapped column rating='score_typo' not found"):
        ingest.run(StageContext.of(spark, cfg))
    assert not Tables(spark, cfg.tables).exists("interactions")
