"""One local Spark session with Delta for the whole test run, and small real slices of MovieLens 100K."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from collm_udf.config import config_from_dict
from collm_udf.datasets import dataset_dir

ROOT = Path(__file__).resolve().parents[1]
TEST_DS = "2026-01-15"


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


if TYPE_CHECKING:  # pandas only where a fixture needs it: the GPU machine's pytest -m gpu needs none
    import pandas as pd


def load_ml100k(d: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    import pandas as pd

    ratings = pd.read_csv(d / "u.data", sep="\t", names=["user", "item", "rating", "unix_ts"])
    items = pd.read_csv(d / "u.item", sep="|", header=None, encoding="latin-1", usecols=[0, 1],
                        names=["movie_id", "title"])
    return ratings, items


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


def slice_conf(slice_dir: Path, root: Path, **sections) -> dict:
    conf = {
        "name": "ml-slice",
        "tables": {"root": str(root)},
        "interactions": {
            "source": {"path": str(slice_dir / "events.parquet"), "format": "parquet"},
            "columns": {"user": "customer", "item": "product", "timestamp": "event_time", "rating": "stars"},
        },
        "items": {"source": {"path": str(slice_dir / "catalog.parquet"), "format": "parquet"},
                  "columns": {"item": "sku", "text": ["name", "kind"]}},
        "asof": {"mode": "split"},  # the benchmark mode's fixed split (tests/test_daily.py: the daily mode)
        "als": {"rank": 8, "max_iter": 8, "target": "rating"},
        "candidates": {"top_k": 20, "max_cold_items": 30, "min_item_interactions": 3, "popular_k": 0},
        "score": {"top_n": 10},
    }
    conf.update(sections)
    return conf


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


# ------------------------------------------------------------------------ tiny random backbones (no downloads)
def _tokenizer_files(dst: Path) -> None:
    """MiniLM's tokenizer files: from the installed wheel, else from $COLLM_TOKENIZER_DIR (the GPU machine has
    no collm wheel: benchmarks/gpu_device.sh points it at the tokenizer that make gpu-prep carries)."""
    try:
        from collm_udf.core.spec import default_backbone_dir

        src = default_backbone_dir()
    except ImportError:
        if not os.environ.get("COLLM_TOKENIZER_DIR"):
            raise
        src = os.environ["COLLM_TOKENIZER_DIR"]
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{src}/{f}", dst / f)


D = 4  # factor dim of the tiny models


def make(path, kind="encoder", tuning="none", signals=(), skip_hidden=0, skip_segments=False, lm_scale=False):
    """(CoLLM, tokenizer, PromptBuilder) on a tiny backbone directory, with the compact template."""
    from collm_udf.core.spec import ModelSpec
    from collm_udf.core.model import build
    from collm_udf.core.prompt import COMPACT_TEMPLATE, PromptBuilder

    spec = ModelSpec(backbone=path, kind=kind, factor_dim=D, tuning=tuning, template=COMPACT_TEMPLATE,
                     max_tokens=48, candidate_max_tokens=12, als_run_id="als_test", signals=list(signals),
                     skip_hidden=skip_hidden, skip_segments=skip_segments, lm_scale=lm_scale)
    model, tok = build(spec)
    return model, tok, PromptBuilder(tok, spec.template, spec.max_tokens, spec.candidate_max_tokens)


def save_tiny_bert(d: Path, **config) -> str:
    """A 2-layer, 32-wide random BERT (seed 0) with MiniLM's tokenizer in `d`; `config` overrides BertConfig."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(**{**dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=128), **config})).save_pretrained(d)
    _tokenizer_files(d)
    return str(d)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random Qwen2 causal LM with MiniLM's tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    d = tmp_path_factory.mktemp("tiny-qwen2")
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256,
                                 tie_word_embeddings=True)).save_pretrained(d)
    _tokenizer_files(d)
    return str(d)
