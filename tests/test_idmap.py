import pytest
from pyspark.sql import functions as F

from collm_udf.config import TablesConfig
from collm_udf.spark.stages import idmap
from collm_udf.spark.tables import Tables


def ids(spark, values):
    return spark.createDataFrame([(v,) for v in values], "id string")


def mapping(tables, entity):
    rows = tables.read("id_map").where(F.col("entity") == entity).collect()
    return {r["id"]: r["idx"] for r in rows}


def test_indices_are_stable_across_runs(spark, tmp_path):
    tables = Tables(spark, TablesConfig(root=str(tmp_path)))
    big = [str(2**31 - 1), str(2**31), str(2**63 - 1)]  # ids beyond ALS's int range are fine: they are mapped
    idmap.update(spark, tables, ids(spark, ["u9", "u1"] + big), ids(spark, ["sku-b", "sku-a"]))
    first = mapping(tables, "user")
    assert sorted(first.values()) == list(range(5))
    assert first["u1"] < first["u9"]  # id order within a batch: reruns assign the same indices

    out = idmap.update(spark, tables, ids(spark, ["u1", "u0", "new-user"]), ids(spark, ["sku-a", "sku-c"]))
    assert out == {"new_users": 2, "new_items": 1}
    second = mapping(tables, "user")
    assert {k: second[k] for k in first} == first  # existing ids keep their index
    assert sorted(second[k] for k in ("u0", "new-user")) == [5, 6]
    assert mapping(tables, "item") == {"sku-a": 0, "sku-b": 1, "sku-c": 2}

    # same input again: nothing new, nothing duplicated
    assert idmap.update(spark, tables, ids(spark, ["u1"]), ids(spark, ["sku-a"])) == {"new_users": 0,
                                                                                     "new_items": 0}
    assert tables.read("id_map").count() == 7 + 3


def test_index_overflow_is_refused(spark, tmp_path):
    tables = Tables(spark, TablesConfig(root=str(tmp_path)))
    seed = spark.createDataFrame([("user", "last", 2**31 - 2)], "entity string, id string, idx int") \
        .withColumn("added_at", F.current_timestamp())
    tables.append(seed, "id_map")
    idmap.update(spark, tables, ids(spark, ["one-more"]), ids(spark, []))  # takes 2^31-1, the last int
    with pytest.raises(idmap.IdMapError, match="id_map: index 2147483648 would exceed"):
        idmap.update(spark, tables, ids(spark, ["too-many"]), ids(spark, []))
    assert tables.read("id_map").count() == 2  # nothing written by the refused update
