"""What the tests share besides fixtures (tests/conftest.py holds only those): paths, the ML-100K slice's
conf, tiny random backbones (no downloads) and the small models and inputs built on them. Imported by name
(`from helpers import ...`); no pyspark here (the GPU machine runs tests/test_gpu.py without it)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from collm_udf.core.batching import UserGroup, pack
from collm_udf.core.pairs import PairSet

if TYPE_CHECKING:  # pandas only where a helper needs it
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TEST_DS = "2026-01-15"


# ------------------------------------------------------------------------ MovieLens 100K and its slice
def load_ml100k(d: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    import pandas as pd

    ratings = pd.read_csv(d / "u.data", sep="\t", names=["user", "item", "rating", "unix_ts"])
    items = pd.read_csv(d / "u.item", sep="|", header=None, encoding="latin-1", usecols=[0, 1],
                        names=["movie_id", "title"])
    return ratings, items


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


K, TOP_N, ACTIVE, RECENT, POPULAR_K, TEXT_K, TEXT_RECENCY = 10, 10, 30, 30, 15, 5, 1.0  # the daily slice conf
DAYS = ("1998-04-08", "1998-04-15")  # the days conftest's `daily` replays


def daily_conf(slice_dir: Path, root: Path, **sections):
    """The slice in the daily mode (a Config): a 28-day label window, ALS refitted every 10 days, a 30-day
    audience, each day judged by its following week, no HTML report (tests/test_report.py renders the split
    run's); `sections` replace whole sections."""
    from collm_udf.config import config_from_dict

    base = dict(asof={"mode": "daily", "label_window_days": 28},
                als={"rank": 8, "max_iter": 8, "target": "rating", "retrain_every_days": 10},
                candidates={"top_k": 20, "max_cold_items": 10, "min_item_interactions": 3, "text_k": TEXT_K,
                            "text_recency": TEXT_RECENCY, "active_within_days": ACTIVE, "popular_k": POPULAR_K,
                            "recent_days": RECENT},
                evaluate={"k": K, "horizon_days": 7, "catch_up_days": 0, "report": False},
                score={"top_n": TOP_N})
    return config_from_dict(slice_conf(slice_dir, root, **{**base, **sections}))


GATE_DAY = "1998-04-08"  # the gated day (conftest's `gated`)


def gate_conf(slice_dir, root, tiny_encoder, scorer="collm"):
    model = {"backbone": tiny_encoder, "max_tokens": 48, "candidate_max_tokens": 12,
             "signals": ["als_dot", "als_missing", "item_recent", "item_like_rate", "user_count"], "lm_scale": True,
             "train": {"text_pairs": 64, "cf_pairs": 64, "holdout_pairs": 32, "text_epochs": 1, "cf_epochs": 1,
                       "retrain_every_days": 14, "cf_negatives": 60, "text_negatives": 30}}
    return daily_conf(slice_dir, root, model=model, gate={"holdout_users": 0.5},
                      score={"top_n": TOP_N, "scorer": scorer, "partitions": 2, "arrow_batch_rows": 500})


# ------------------------------------------------------------------------ tiny random backbones (no downloads)
def tokenizer_files(dst: Path) -> None:
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


def make(path, kind="encoder", tuning="none", *, signals=(), skip_hidden=0, skip_segments=False, lm_scale=False,
         lm_segments=False, cold_item_below=None, lm_warm=True):
    """(CoLLM, tokenizer, PromptBuilder) on a tiny backbone directory, with the compact template."""
    from collm_udf.core.spec import ModelSpec
    from collm_udf.core.model import build
    from collm_udf.core.prompt import COMPACT_TEMPLATE, PromptBuilder

    spec = ModelSpec(backbone=path, kind=kind, factor_dim=D, tuning=tuning, template=COMPACT_TEMPLATE,
                     max_tokens=48, candidate_max_tokens=12, als_run_id="als_test", signals=list(signals),
                     skip_hidden=skip_hidden, skip_segments=skip_segments, lm_scale=lm_scale, lm_segments=lm_segments,
                     cold_item_below=cold_item_below, lm_warm=lm_warm)
    model, tok = build(spec)
    return model, tok, PromptBuilder(tok, spec.template, spec.max_tokens, spec.candidate_max_tokens)


def save_tiny_bert(d: Path, **config) -> str:
    """A 2-layer, 32-wide random BERT (seed 0) with MiniLM's tokenizer in `d`; `config` overrides BertConfig."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(**{**dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=128), **config})).save_pretrained(d)
    tokenizer_files(d)
    return str(d)


def save_tiny_qwen2(d: Path) -> str:
    """A 2-layer, 32-wide random Qwen2 causal LM (seed 0) with MiniLM's tokenizer in `d`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256,
                                 tie_word_embeddings=True)).save_pretrained(d)
    tokenizer_files(d)
    return str(d)


def recall_ndcg(lists: dict, truth: dict, k: int) -> tuple[float, float]:
    """Reference Recall@k and NDCG@k (binary gains) of ranked lists {user: [items]} against {user: set(items)},
    averaged over the users of `truth`."""
    rec, ndcg = [], []
    for u, t in truth.items():
        pred = lists.get(u, [])[:k]
        hits = [1.0 if i in t else 0.0 for i in pred]
        rec.append(sum(hits) / len(t))
        idcg = sum(1 / np.log2(j + 2) for j in range(min(len(t), k)))
        ndcg.append(sum(h / np.log2(j + 2) for j, h in enumerate(hits)) / idcg)
    return float(np.mean(rec)), float(np.mean(ndcg))


# ------------------------------------------------------------------------ inputs of the tiny models
def pairs(n=64, seed=0) -> PairSet:
    rng = np.random.default_rng(seed)
    f_u, f_i = rng.normal(size=(n, D)).astype(np.float32), rng.normal(size=(n, D)).astype(np.float32)
    label = ((f_u * f_i).sum(1) > 0).astype(np.int64)  # learnable only through the CF tokens
    return PairSet([["A (1990)", "B (1991)"]] * n, [f"Item {i % 7}" for i in range(n)], f_u, f_i,
                   np.ones(n, bool), rng.random(n) > 0.2, label)


HISTORIES = [["Toy Story (1995)"], ["Toy Story (1995)", "Fargo (1996)", "Heat (1995)"], ["Alien (1979)", "Heat"]]


def rows_for(pb, pad_id, histories, per_user=5, max_row_tokens=110, seed=0):
    """Packed rows: each user's prefix, then candidate parts of different lengths, several rows per user."""
    rng = np.random.default_rng(seed)
    groups = []
    for u, hist in enumerate(histories):
        prefix, upos = pb.encode_prefix(hist)
        parts = [pb.encode_candidate(f"Candidate {u}-{c}" + " word" * int(rng.integers(0, 4))) for c in range(per_user)]
        groups.append(UserGroup(prefix, upos, rng.normal(size=D).astype(np.float32), u != 1, parts,
                                rng.normal(size=(per_user, D)).astype(np.float32), np.arange(per_user) % 3 != 0))
    rows, _ = pack(groups, pad_id, max_row_tokens)
    return rows


def scores(model, rows, kernel):
    model.block_kernel = kernel
    try:
        return model(**rows)
    finally:
        model.block_kernel = "auto"


# ------------------------------------------------------------------------------------------- the table contract
def delta_contract(tables, name: str) -> tuple[str, str, dict[str, str]]:
    """(table comment, schema version, {column: comment}) of a table as Delta holds them."""
    from collm_udf.spark.contract import VERSION_PROPERTY

    d = tables.delta(name).detail().select("description", "properties").first()
    cols = {f.name: f.metadata.get("comment") for f in tables.read(name).schema}
    return d["description"], d["properties"].get(VERSION_PROPERTY), cols


def assert_contract(tables, name: str) -> None:
    """Table `name` carries collm_udf/spark/contract.py's description: the same columns, each with its comment."""
    from collm_udf.spark.contract import CONTRACT, SCHEMA_VERSION

    comment, version, cols = delta_contract(tables, name)
    assert (comment, version) == (CONTRACT[name].comment, str(SCHEMA_VERSION)), name
    assert cols == CONTRACT[name].columns, name


# ------------------------------------------------------------------------ pandas references of the daily slice
def cutoff(ds: str) -> "pd.Timestamp":
    import pandas as pd

    return pd.Timestamp(ds)


def day(tables, name, ds) -> "pd.DataFrame":
    """Table `name`'s partition of day ds, in pandas."""
    return tables.read(name).where(f"ds = DATE'{ds}'").toPandas()


def known(events, ds):
    return events[events.ts < cutoff(ds)]


def active_users(events, ds) -> set:
    import pandas as pd

    k = known(events, ds)
    return set(k.loc[k.ts >= cutoff(ds) - pd.Timedelta(days=ACTIVE), "user_id"])


def popular_lists(events, ds, users, recent_days, n=K):
    """Each user's first n unseen items by (interactions in the last recent_days, all interactions, item_id)."""
    import pandas as pd

    k = known(events, ds)
    allc = k.groupby("item_id").size()
    rec = k[k.ts >= cutoff(ds) - pd.Timedelta(days=recent_days)].groupby("item_id").size() if recent_days \
        else allc
    order = pd.DataFrame({"all": allc, "recent": rec.reindex(allc.index).fillna(0)}).reset_index()
    order = order.sort_values(["recent", "all", "item_id"], ascending=[False, False, True])["item_id"].tolist()
    seen = k.groupby("user_id")["item_id"].apply(set)
    return {u: [i for i in order if i not in seen.get(u, set())][:n] for u in users}
