"""The fixtures: one local Spark session with Delta for the whole test run, small real slices of MovieLens 100K,
the pipeline run once on a slice, and tiny random backbones. What tests import lives in tests/helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from collm_udf.config import config_from_dict
from collm_udf.datasets import dataset_dir
from helpers import DAYS, GATE_DAY, TEST_DS, daily_conf, gate_conf, load_ml100k, save_tiny_bert, save_tiny_qwen2, slice_conf


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from collm_udf.spark.session import local_session

    wh = tmp_path_factory.mktemp("spark-warehouse")  # managed (catalog) tables of the tests go here
    # local[2,2]: two cores, and a failed task is retried once (as on a cluster), which the retry test needs
    s = local_session("local[2,2]", {"spark.sql.shuffle.partitions": "2", "spark.sql.warehouse.dir": str(wh)},
                      app_name="collm-tests")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def ml100k() -> Path:
    try:
        return dataset_dir("ml-100k", download=False)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"MovieLens 100K not found: {e}. `make test` sets COLLM_DATA_DIR from ../shared/datasets.")


@pytest.fixture(scope="session")
def slice_dir(tmp_path_factory, ml100k) -> Path:
    """A third of ML-100K's users (every user id divisible by 3), written as Parquet with warehouse-style
    column names and a TIMESTAMP column: the pipeline sees it as any other source, not as MovieLens."""
    import pandas as pd

    ratings, items = load_ml100k(ml100k)
    part = ratings[ratings["user"] % 3 == 0].copy()
    out = tmp_path_factory.mktemp("slice")
    events = pd.DataFrame({
        "customer": part["user"].astype("int64"),
        "product": part["item"].map(lambda i: f"sku-{i:04d}"),
        "stars": part["rating"].astype(float),
        "event_time": pd.to_datetime(part["unix_ts"], unit="s"),
    })
    catalog = pd.DataFrame({"sku": items["movie_id"].map(lambda i: f"sku-{i:04d}"), "name": items["title"],
                            "kind": "movie"})
    events.to_parquet(out / "events.parquet", index=False, coerce_timestamps="us")
    catalog.to_parquet(out / "catalog.parquet", index=False)
    return out


@pytest.fixture(scope="session")
def pipeline_run(spark, slice_dir, tmp_path_factory):
    """The whole pipeline once on the slice; tests read its tables."""
    from collm_udf.spark import pipeline
    from collm_udf.spark.session import set_checkpoint_dir
    from collm_udf.spark.tables import Tables

    root = tmp_path_factory.mktemp("warehouse")
    cfg = config_from_dict(slice_conf(slice_dir, root))
    set_checkpoint_dir(spark, cfg)
    summary = pipeline.run(spark, cfg, ds=TEST_DS, run_id="run_test_1")
    return cfg, Tables(spark, cfg.tables), summary


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random Qwen2 causal LM with MiniLM's tokenizer."""
    return save_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def gated(spark, slice_dir, tiny_encoder, tmp_path_factory):
    """The whole daily pipeline for GATE_DAY with a tiny CoLLM model and the gate (half the users held out):
    tests/test_gate.py judges it, tests/test_cluster.py scores copies of it."""
    from collm_udf.spark import pipeline
    from collm_udf.spark.session import set_checkpoint_dir
    from collm_udf.spark.tables import Tables

    cfg = gate_conf(slice_dir, tmp_path_factory.mktemp("gate-wh"), tiny_encoder)
    set_checkpoint_dir(spark, cfg)
    summary = pipeline.run(spark, cfg, ds=GATE_DAY, run_id="run_gate_1")
    return cfg, Tables(spark, cfg.tables), summary


@pytest.fixture(scope="session")
def events(slice_dir):
    """The slice as the pipeline sees it: string ids, label = rating >= 4."""
    import pandas as pd

    e = pd.read_parquet(slice_dir / "events.parquet")
    return pd.DataFrame({"user_id": e["customer"].astype(str), "item_id": e["product"], "ts": e["event_time"],
                         "rating": e["stars"], "label": (e["stars"] >= 4).astype(int)})


@pytest.fixture(scope="session")
def daily(spark, slice_dir, tmp_path_factory):
    """`collm replay` of DAYS in the daily mode (ALS scorer; ALS refits every 10 days, so the second day reuses the
    first day's fit and the users who arrived in between have no factors): tests/test_daily.py and
    tests/test_text_source.py."""
    from collm_udf.spark import replay
    from collm_udf.spark.tables import Tables

    cfg = daily_conf(slice_dir, tmp_path_factory.mktemp("daily-wh"))
    lines: list[str] = []
    summary = replay.run(spark, cfg, start=DAYS[0], end=DAYS[1], every=7, out=lines.append)
    return cfg, Tables(spark, cfg.tables), summary, lines
