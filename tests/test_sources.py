"""Ingest from each kind of source: the shipped MovieLens CSV conf (catalog sources and tables: test_contract.py)."""

import pytest
from pyspark.sql import functions as F

from collm_udf.config import config_from_dict, load_config
from collm_udf.spark.context import StageContext
from collm_udf.spark.stages import ingest
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


def test_missing_mapped_column_names_source_and_column(spark, slice_dir, tmp_path):
    conf = slice_conf(slice_dir, tmp_path)
    conf["interactions"]["columns"]["rating"] = "score_typo"
    cfg = config_from_dict(conf)
    with pytest.raises(ingest.SourceError, match=r"events\.parquet: mapped column rating='score_typo' not found"):
        ingest.run(StageContext.of(spark, cfg))
    assert not Tables(spark, cfg.tables).exists("interactions")
