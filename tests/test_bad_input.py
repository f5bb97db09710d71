"""Bad input: every case either fails before writing, naming table/column/value, or is a counted repair."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from pyspark.sql import functions as F

from collm_udf.config import config_from_dict
from collm_udf.spark.context import StageContext
from collm_udf.spark.data_quality import DataQualityError
from collm_udf.spark.stages.ingest import SourceError

pytestmark = pytest.mark.slow
T0 = pd.Timestamp("2024-01-01")


def good_events(n=300):
    return pd.DataFrame({"u": [f"u{i % 30}" for i in range(n)], "i": [f"i{(i * 7) % 40}" for i in range(n)],
                         "t": [T0 + pd.Timedelta(minutes=i) for i in range(n)],
                         "r": [float(1 + i % 5) for i in range(n)]})


def catalog():
    return pd.DataFrame({"item": [f"i{k}" for k in range(40)], "title": [f"Movie {k}" for k in range(40)]})


def conf(tmp_path, events, items=None, **interactions):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    events.to_parquet(src / "events.parquet", index=False, coerce_timestamps="us")
    (items if items is not None else catalog()).to_parquet(src / "items.parquet", index=False)
    return config_from_dict({
        "name": "bad", "tables": {"root": str(tmp_path / "wh")},
        "interactions": {"source": {"path": str(src / "events.parquet"), "format": "parquet"},
                         "columns": {"user": "u", "item": "i", "timestamp": "t", "rating": "r"}, **interactions},
        "items": {"source": {"path": str(src / "items.parquet"), "format": "parquet"},
                  "columns": {"item": "item", "text": ["title"]}, "max_text_chars": 500},
    })


def ingest(spark, cfg):
    from collm_udf.spark.stages import ingest as stage
    from collm_udf.spark.data_quality import DataQuality
    from collm_udf.spark.tables import Tables

    dq = DataQuality()
    t = Tables(spark, cfg.tables)
    return stage.run(StageContext.of(spark, cfg, tables=t, dq=dq)), dq, t


def test_repairs_are_counted_with_examples(spark, tmp_path):
    ev = good_events()
    bad = pd.DataFrame({
        "u": [None, "  ", "u1", "u2", "u3", "u4", "u5", "u6"],
        "i": ["i1", "i1", "", "i2", "i3", "i4", "i5", "i999"],
        "t": [T0] * 5 + [pd.Timestamp("2200-01-01"), T0, T0],
        "r": [4.0, 4.0, 4.0, float("nan"), -1.0, 4.0, 9.0, 3.0]})
    dup = ev.iloc[:4]
    items = pd.concat([catalog(), pd.DataFrame({"item": ["i5", "i998"], "title": ["dup text", "x" * 100_000]})])
    items.loc[items["item"] == "i7", "title"] = ""
    items.loc[items["item"] == "i8", "title"] = "caf\ufffd"  # what Spark makes of undecodable bytes
    cfg = conf(tmp_path, pd.concat([ev, bad, dup], ignore_index=True), items, rating_max=5.0, max_bad_fraction=0.1)
    result, dq, t = ingest(spark, cfg)
    found = {f.check: f for f in dq.findings}
    assert found["null or blank user id"].rows == 2 and found["null or blank user id"].column == "u"
    assert found["null or blank item id"].rows == 1
    assert found["rating null or NaN"].rows == 1
    assert found["rating below 0"].rows == 1 and found["rating below 0"].example == "-1.0"
    assert found["rating above 5"].rows == 1 and found["rating above 5"].example == "9.0"
    assert found["timestamp in the future (mixed units?)"].rows == 1
    assert "2200-01-01" in found["timestamp in the future (mixed units?)"].example
    assert found["duplicate item id"].rows == 1
    assert found["text longer than 500 characters (item id)"].example == "i998"
    assert found["empty text (item id)"].example == "i7"
    assert found["text with invalid bytes, decoded as U+FFFD (item id)"].example == "i8"
    assert found["item ids missing from the item table (scored with empty text)"].rows == 1
    assert result["dropped_rows"] == 7 and result["interactions"] == len(ev) + len(dup) + 1
    assert t.read("items").agg(F.max(F.length("text"))).first()[0] == 500
    from collm_udf.spark.stages import prepare

    prepare.run(StageContext.of(spark, cfg, tables=t, dq=dq))
    assert [f.rows for f in dq.findings if f.stage == "prepare"] == [4]  # the duplicated events merged


def test_too_many_bad_rows_fail_before_writing(spark, tmp_path):
    cfg = conf(tmp_path, good_events())
    ingest(spark, cfg)
    ev = good_events()
    ev.loc[:20, "t"] = pd.Timestamp("2250-06-01")  # a clock error, or a smaller unit read as a larger one
    cfg2 = conf(tmp_path, ev)
    with pytest.raises(DataQualityError, match=r"21 of 300 interaction rows are unusable.*column t: 21 rows "
                                               r"timestamp in the future \(mixed units\?\) \(e.g. 2250"):
        ingest(spark, cfg2)
    from collm_udf.spark.tables import Tables

    assert Tables(spark, cfg.tables).read("interactions").count() == 300  # the good table stays


def test_empty_source_and_lost_column_fail_clearly(spark, tmp_path):
    cfg = conf(tmp_path, good_events())
    ingest(spark, cfg)
    with pytest.raises(SourceError, match="no usable interactions"):
        ingest(spark, conf(tmp_path, good_events().iloc[:0]))
    with pytest.raises(SourceError, match=r"mapped column rating='r' not found; columns are: u, i, t, stars"):
        ingest(spark, conf(tmp_path, good_events().rename(columns={"r": "stars"})))
    from collm_udf.spark.tables import Tables

    assert Tables(spark, cfg.tables).read("interactions").count() == 300


def test_numeric_timestamps_in_mixed_units_are_caught(spark, tmp_path):
    ev = good_events()
    secs = (ev["t"] - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    ev["t"] = secs.where(ev.index >= 3, secs * 1000)  # three rows in milliseconds
    ev["t"] = ev["t"].astype("int64")
    result, dq, _ = ingest(spark, conf(tmp_path, ev, max_bad_fraction=0.05))
    f = [x for x in dq.findings if x.check.startswith("timestamp in the future")][0]
    assert f.rows == 3 and result["interactions"] == 297
    raw, read_as = f.example.split(" (read as ")  # the source's number, and the date it was read as
    assert int(raw) == secs.iloc[0] * 1000 and int(read_as[:5]) > dt.date.today().year


def test_the_failure_over_the_threshold_shows_the_raw_value_that_the_cast_made_null(spark, tmp_path):
    ev = good_events()
    ev["r"] = ev["r"].astype(str)  # a STRING rating column, cast to double by ingest
    ev.loc[:20, "r"] = "five"
    with pytest.raises(DataQualityError, match=r"21 of 300 interaction rows are unusable.*table interactions "
                                               r"\(.*events\.parquet\), column r: 21 rows rating null or NaN "
                                               r"\(e\.g\. five\) -> dropped"):
        ingest(spark, conf(tmp_path, ev))


def test_undecodable_item_text_is_counted(spark, tmp_path):
    """A Latin-1 catalog read as UTF-8 (the default): Spark decodes the bad bytes as U+FFFD; counted, kept."""
    cfg = conf(tmp_path, good_events())
    csv = tmp_path / "src" / "items.csv"
    csv.write_bytes("item,title\n".encode() + "".join(f"i{k},Movie {k}\n" for k in range(39)).encode()
                    + "i39,Caf\xe9 Society\n".encode("latin-1"))
    d = config_from_dict({**_as_dict(cfg), "items": {
        "source": {"path": str(csv), "format": "csv", "options": {"header": "true"}},
        "columns": {"item": "item", "text": ["title"]}}})
    _, dq, t = ingest(spark, d)
    f = [x for x in dq.findings if "U+FFFD" in x.check]
    assert len(f) == 1 and f[0].rows == 1 and f[0].example == "i39"
    assert t.read("items").where(F.col("item_id") == "i39").first()["text"] == "Caf\ufffd Society"


def test_an_empty_day_fails_before_writing(spark, pipeline_run):
    from collm_udf.spark.stages import score

    cfg, tables, _ = pipeline_run
    with pytest.raises(ValueError, match="table candidates: no rows for ds=2030-01-01"):
        score.run(StageContext.of(spark, cfg, "2030-01-01", tables=tables))
    assert tables.read("recommendations").where(F.col("ds") == F.lit("2030-01-01").cast("date")).count() == 0


def _as_dict(cfg):
    import dataclasses

    d = dataclasses.asdict(cfg)
    d.pop("source_path", None)
    return d


def test_findings_reach_the_data_quality_table_and_summary_even_when_the_run_fails(spark, tmp_path):
    from collm_udf.spark import pipeline
    from collm_udf.spark.tables import Tables

    ev = pd.concat([good_events(), pd.DataFrame({"u": [None], "i": ["i1"], "t": [T0], "r": [4.0]})],
                   ignore_index=True)
    cfg = conf(tmp_path, ev)
    summary = pipeline.run(spark, cfg, stages=["ingest"], ds="2026-02-01", run_id="dq_ok")
    assert [(f["check"], f["rows"], f["action"]) for f in summary["data_quality"]] == \
        [("null or blank user id", 1, "dropped")]
    bad = good_events()
    bad.loc[:20, "r"] = -3.0  # 7% of the rows: over max_bad_fraction, so the run fails before writing
    with pytest.raises(DataQualityError, match="rating below 0"):
        pipeline.run(spark, conf(tmp_path, bad), stages=["ingest"], ds="2026-02-02", run_id="dq_failed")
    rows = Tables(spark, cfg.tables).read("data_quality").orderBy("run_id").toPandas()
    assert rows[["run_id", "column_name", "check_name", "rows"]].values.tolist() == [
        ["dq_failed", "r", "rating below 0", 21], ["dq_ok", "u", "null or blank user id", 1]]
    assert str(rows["ds"].iloc[0]) == "2026-02-02"
