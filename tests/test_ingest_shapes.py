"""Data shapes that used to pass unflagged (issue 18): a small real slice of ML-100K copied as CSV and read through
the shipped conf/local.yaml, with bad rows planted; every planted row is counted with an example, or refused with
a one-line message. Also implicit ALS's weights and the ingest count against a backfilled day's cutoff."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from pyspark.sql import functions as F

from collm_udf.config import config_from_dict, load_config
from collm_udf.spark.context import StageContext
from collm_udf.spark.data_quality import Finding
from helpers import ROOT

pytestmark = pytest.mark.slow
N = 3000            # rows of u.data in the slice
DS = "1998-03-01"   # a backfilled day: ML-100K runs to 1998-04-22
PLANTED = {         # row indices of the slice -> what is planted there
    "user_decimal": range(0, 10), "item_decimal": range(10, 20), "negative_ts": range(20, 25),
    "extra_field": range(25, 30), "rating_99": range(30, 35), "rating_text": range(35, 40)}
NUL_ITEMS, QUOTED_ITEM, EXTRA_ITEM, DECIMAL_ITEM, BAD_FLAG_ITEM = ("1", "2"), "3", "4", "5", "17"
GENRES = ["unknown", "action", "adventure", "animation", "childrens", "comedy", "crime", "documentary", "drama",
          "fantasy", "film_noir", "horror", "musical", "mystery", "romance", "sci_fi", "thriller", "war", "western"]


def plant(ml100k, out):
    """u.data's first N rows and all of u.item, with the PLANTED rows garbled; returns the clean slice."""
    rows = [line.split("\t") for line in (ml100k / "u.data").read_text().splitlines()[:N]]
    clean = pd.DataFrame([r[:] for r in rows], columns=["user", "item", "rating", "ts"])
    for k in PLANTED["user_decimal"]:
        rows[k][0] += ".0"
    for k in PLANTED["item_decimal"]:
        rows[k][1] += ".0"
    for k in PLANTED["negative_ts"]:
        rows[k][3] = "-" + rows[k][3]
    for k in PLANTED["extra_field"]:
        rows[k].append("extra")
    for k in PLANTED["rating_99"]:
        rows[k][2] = "99"
    for k in PLANTED["rating_text"]:
        rows[k][2] = "five"
    (out / "u.data").write_text("".join("\t".join(r) + "\n" for r in rows))
    items = [line.split("|") for line in (ml100k / "u.item").read_bytes().decode("latin-1").splitlines() if line]
    for it in items:
        if it[0] in NUL_ITEMS:
            it[1] = it[1].replace(" ", "\x00", 1)
        elif it[0] == QUOTED_ITEM:
            it[1] = '"Four Rooms ""Director\'s Cut"" (1995)"'
        elif it[0] == EXTRA_ITEM:
            it.append("extra")
        elif it[0] == DECIMAL_ITEM:
            it[0] = "5.0"
        elif it[0] == BAD_FLAG_ITEM:
            it[6] = "2"  # genre_action
    (out / "u.item").write_bytes("".join("|".join(it) + "\n" for it in items).encode("latin-1"))
    return clean


def local_conf(src, root, flags=False, **interactions):
    genres = {"columns": {"flags": [f"genre_{g}" for g in GENRES], "flag_prefix": "genre_"}} if flags else {}
    return load_config(ROOT / "conf" / "local.yaml", {
        "tables": {"root": str(root)},
        "interactions": {"source": {"path": str(src / "u.data")}, **interactions},
        "items": {"source": {"path": str(src / "u.item")}, **genres}})


@pytest.fixture(scope="module")
def planted(spark, ml100k, tmp_path_factory):
    from collm_udf.spark import pipeline
    from collm_udf.spark.tables import Tables

    src = tmp_path_factory.mktemp("planted-src")
    clean = plant(ml100k, src)
    cfg = local_conf(src, tmp_path_factory.mktemp("planted-wh"), flags=True)
    summary = pipeline.run(spark, cfg, stages=["ingest"], ds=DS, run_id="planted")
    found = {(f["table"].split(" ")[0], f["check"]): Finding(**f) for f in summary["data_quality"]}
    return clean, found, Tables(spark, cfg.tables), summary


def rows_of(kind, clean):
    return clean.iloc[list(PLANTED[kind])]


def test_ids_written_as_n_point_0_are_the_same_entity_and_counted(planted):
    clean, found, tables, _ = planted
    u = found[("interactions", "user id written as a decimal, N.0 read as N")]
    i = found[("interactions", "item id written as a decimal, N.0 read as N")]
    assert (u.rows, u.column, u.action) == (10, "user_id", "canonicalised")
    assert u.example in {f"{x}.0" for x in rows_of("user_decimal", clean)["user"]}
    assert i.rows == 10 and i.example in {f"{x}.0" for x in rows_of("item_decimal", clean)["item"]}
    assert "10 rows user id written as a decimal, N.0 read as N (e.g. " in u.describe()
    catalog = found[("items", "item id written as a decimal, N.0 read as N")]
    assert (catalog.rows, catalog.example, catalog.column) == (1, "5.0", "movie_id")
    kept = clean.drop(index=list(range(20, 40)))
    inter = tables.read("interactions")
    assert inter.select("user_id").distinct().count() == kept["user"].nunique()  # not 10 users more
    assert inter.select("item_id").distinct().count() == kept["item"].nunique()
    assert inter.where(F.col("user_id").contains(".")).count() == 0
    assert tables.read("items").count() == 1682 and tables.read("items").where("item_id = '5'").count() == 1


def test_negative_unix_timestamps_are_dropped_and_counted(planted):
    clean, found, tables, _ = planted
    f = found[("interactions", "timestamp at or before 1970-01-01 00:00 UTC (zero or negative Unix time)")]
    assert (f.rows, f.column, f.action) == (5, "unix_ts", "dropped")
    raw = {f"-{t}" for t in rows_of("negative_ts", clean)["ts"]}
    assert f.example.split(" ")[0] in raw and "(read as 19" in f.example
    assert tables.read("interactions").where(F.year("ts") < 1990).count() == 0


def test_csv_rows_with_extra_fields_are_counted_with_their_line(planted):
    clean, found, tables, _ = planted
    f = found[("interactions", "malformed CSV row (a field too many or too few, or a value that does not parse "
                               "as its schema type)")]
    assert (f.rows, f.action) == (10, "dropped")  # 5 with an extra field, 5 with a rating that is no number
    extra = {"\t".join([*r, "extra"]) for r in rows_of("extra_field", clean).values.tolist()}
    texts = {"\t".join([u, i, "five", t]) for u, i, _, t in rows_of("rating_text", clean).values.tolist()}
    assert f.example in extra | texts
    assert f.describe().startswith("table interactions (") and "10 rows malformed CSV row" in f.describe()
    item = found[("items", f.check)]
    assert (item.rows, item.action) == (1, "kept") and item.example.startswith(f"{EXTRA_ITEM}|Get Shorty")
    assert item.example.endswith("|extra")


def test_nul_bytes_in_item_text_are_removed_and_counted(planted):
    _, found, tables, _ = planted
    f = found[("items", "text with NUL or other control characters (item id: text, \\0 = NUL)")]
    assert (f.rows, f.action, f.column) == (2, "removed", "title")
    assert f.example in {"1: Toy\\0Story (1995) | animation, childrens, comedy",
                         "2: GoldenEye\\0(1995) | action, adventure, thriller"}
    texts = tables.read("items").where(F.col("item_id").isin(*NUL_ITEMS)).orderBy("item_id").collect()
    assert [r["text"] for r in texts] == ["ToyStory (1995) | animation, childrens, comedy",  # the genre flags too
                                          "GoldenEye(1995) | action, adventure, thriller"]


def test_genre_flags_end_each_items_text_and_a_bad_flag_is_counted(planted, ml100k):
    _, found, tables, _ = planted
    raw = pd.read_csv(ml100k / "u.item", sep="|", header=None, encoding="latin-1", dtype=str)
    names = [g.replace("_", " ") for g in GENRES]
    want = {r[0]: " | ".join([r[1]] + ([", ".join(n for n, v in zip(names, r[5:24]) if v == "1")]
                                       if "1" in r[5:24] else []))
            for r in raw.itertuples(index=False)}
    got = {r["item_id"]: r["text"] for r in tables.read("items").collect()}
    planted_items = {*NUL_ITEMS, QUOTED_ITEM, EXTRA_ITEM, DECIMAL_ITEM, BAD_FLAG_ITEM}
    assert {i: t for i, t in got.items() if i not in planted_items} == {
        i: t for i, t in want.items() if i not in planted_items}
    assert got["7"] == "Twelve Monkeys (1995) | drama, sci fi"
    f = found[("items", "flag neither 0 nor 1, read as unset (item id: value)")]
    assert (f.rows, f.example, f.column, f.action) == (1, "17: 2", "genre_action", "kept")
    assert got[BAD_FLAG_ITEM] == "From Dusk Till Dawn (1996) | comedy, crime, horror, thriller"  # action: 2


def test_the_shipped_conf_bounds_ratings_so_99_never_reaches_als(planted):
    _, found, tables, _ = planted
    cfg = load_config(ROOT / "conf" / "local.yaml")
    assert (cfg.interactions.rating_min, cfg.interactions.rating_max) == (1.0, 5.0)
    f = found[("interactions", "rating above 5")]
    assert (f.rows, f.example, f.column, f.action) == (5, "99.0", "rating", "dropped")
    assert tables.read("interactions").agg(F.max("rating")).first()[0] == 5.0


def test_doubled_quotes_in_titles_are_flagged(planted):
    _, found, tables, _ = planted
    f = [v for (t, c), v in found.items() if t == "items" and c.startswith('text with doubled quotes ""')]
    assert len(f) == 1 and (f[0].rows, f[0].action) == (1, "kept")
    assert f[0].example == '3: "Four Rooms ""Director\'s Cut"" (1995)" | thriller' and "escape: '\"'" in f[0].check


def test_a_value_the_cast_made_null_still_shows_in_the_example(planted):
    clean, found, _, _ = planted
    f = found[("interactions", "rating null or NaN")]
    assert f.rows == 5 and f.example.startswith("row ") and "\tfive\t" in f.example
    assert f.example[4:].split("\t")[:2] in rows_of("rating_text", clean)[["user", "item"]].values.tolist()


def test_rows_after_a_backfilled_days_cutoff_are_counted_against_that_cutoff(planted):
    """The day's cutoff, not the wall clock: ML-100K's rows after 1998-03-01 are years before today, and they are
    kept (the day's backtest needs them) but counted."""
    clean, found, tables, summary = planted
    kept = clean.drop(index=list(range(20, 40)))
    ts = pd.to_datetime(kept["ts"].astype(int), unit="s")
    late = ts[ts >= pd.Timestamp(DS)]
    f = [v for (t, c), v in found.items() if c.startswith(f"at or after the cutoff of ds={DS}")]
    assert len(f) == 1 and f[0].rows == len(late) > 100 and f[0].action == "kept"
    assert f[0].example == str(late.min()) and "(1998-03-01 00:00 UTC; kept for backtests" in f[0].check
    assert tables.read("interactions").count() == summary["stages"]["ingest"]["interactions"] == N - 20
    assert not any(c.startswith("timestamp in the future") for _, c in found)


def test_input_errors_print_one_line_naming_the_conf_key(spark, ml100k, tmp_path, capsys):
    """A missing source file and a data-quality failure: `collm: ...` on one line and exit 1, no traceback."""
    from collm_udf import cli

    src = tmp_path / "src"
    src.mkdir()
    plant(ml100k, src)
    conf = yaml.safe_load((ROOT / "conf" / "local.yaml").read_text())
    conf["tables"]["root"] = str(tmp_path / "wh")
    conf["interactions"]["source"]["path"] = str(src / "nope" / "u.data")
    conf["items"]["source"]["path"] = str(src / "u.item")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(conf))
    args = ["run", "--conf", str(tmp_path / "c.yaml"), "--stage", "ingest", "--ds", DS]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1] == f"collm: source {src / 'nope' / 'u.data'} not found (conf key interactions.source.path)"

    conf["interactions"]["source"]["path"] = str(src / "u.data")
    conf["interactions"]["max_bad_fraction"] = 0.001  # the 20 planted rows are 0.7%
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(conf))
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and err[-1].startswith("collm: source ")
    assert "20 of 3000 interaction rows are unusable" in err[-1] and "rating above 5 (e.g. 99.0)" in err[-1]


def test_a_missing_item_file_names_the_items_key(spark, ml100k, tmp_path):
    from collm_udf.spark.stages import ingest

    src = tmp_path / "src"
    src.mkdir()
    plant(ml100k, src)
    cfg = local_conf(src, tmp_path / "wh")
    cfg.items.source.path = str(src / "u.itemz")
    with pytest.raises(ingest.SourceError, match=r"u\.itemz not found \(conf key items\.source\.path\)"):
        ingest.run(StageContext.of(spark, cfg))


# ------------------------------------------------------------------------------------------- implicit ALS
def listens(tmp_path):
    """300 listen events: 30 users x 40 items, counts 1..50."""
    n = 300
    ev = pd.DataFrame({"u": [f"u{i % 30}" for i in range(n)], "i": [f"i{(i * 7) % 40}" for i in range(n)],
                       "t": [pd.Timestamp("2024-01-01") + pd.Timedelta(minutes=i) for i in range(n)],
                       "plays": [float(1 + (i * 13) % 50) for i in range(n)]})
    ev.to_parquet(tmp_path / "listens.parquet", index=False, coerce_timestamps="us")
    pd.DataFrame({"item": [f"i{k}" for k in range(40)], "title": [f"Song {k}" for k in range(40)]}) \
        .to_parquet(tmp_path / "songs.parquet", index=False)
    return ev


def implicit_conf(tmp_path, **als):
    return config_from_dict({
        "name": "listens", "tables": {"root": str(tmp_path / "wh")},
        "interactions": {"source": {"path": str(tmp_path / "listens.parquet"), "format": "parquet"},
                         "columns": {"user": "u", "item": "i", "timestamp": "t", "rating": "plays"}},
        "items": {"source": {"path": str(tmp_path / "songs.parquet"), "format": "parquet"},
                  "columns": {"item": "item", "text": ["title"]}},
        "als": {"implicit": True, "rank": 4, "max_iter": 5, "alpha": 2.0, **als}})


def test_implicit_als_weighs_each_interaction_by_the_mapped_count(spark, tmp_path):
    from collm_udf.spark import pipeline
    from collm_udf.spark.tables import Tables

    ev = listens(tmp_path)
    stages = ["ingest", "prepare", "idmap", "als"]
    cfg = implicit_conf(tmp_path)
    assert cfg.als.target == "rating"  # unset + implicit + a mapped count: the count
    pipeline.run(spark, cfg, stages=stages, ds="2024-02-01", run_id="implicit_counts")
    runs = Tables(spark, cfg.tables).read("als_runs").orderBy("trained_at").collect()
    assert json.loads(runs[-1]["params"])["target"] == "rating" and json.loads(runs[-1]["params"])["implicit"]
    assert runs[-1]["target_mean"] == pytest.approx(ev["plays"].mean())  # the counts reached ratingCol
    counts_fit = runs[-1]["als_run_id"]

    cfg = implicit_conf(tmp_path, target="label")  # asked for: the 0/1 like (plays >= like_threshold)
    pipeline.run(spark, cfg, stages=["als"], ds="2024-02-01", run_id="implicit_label")
    runs = Tables(spark, cfg.tables).read("als_runs").orderBy("trained_at").collect()
    assert json.loads(runs[-1]["params"])["target"] == "label" and runs[-1]["als_run_id"] != counts_fit
    assert runs[-1]["target_mean"] == pytest.approx((ev["plays"] >= 4).mean())
