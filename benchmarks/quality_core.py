"""The parts of bench-quality that need no Spark, shared by benchmarks/quality.py (CPU, Spark-prepared frames) and
benchmarks/gpu_train.py (the GPU machine: no pyspark, frames carried as an .npz that gpu_prep.py writes).

Frames are pandas frames with quality.prepare's columns: user_id, item_id, label, history (item ids), the
signals' statistics as `_sig_<name>` (collm_udf/signals.column), and for the test split warm, cold_item,
prior.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from collm_udf.core.metrics import auc_uauc
from collm_udf.core.signals import STATISTICS, column
from collm_udf.core.pairs import PairSet

RANKERS = ("prior", "als", "text_only", "collm")  # prior: the item's like rate before the test split
SPLITS = ("text", "cf", "hold", "test")


def pair_sets(frames: Mapping[str, pd.DataFrame], text: Mapping, U: Mapping, V: Mapping, d: int, *,
              use_history: bool, signals: Sequence[str]) -> dict[str, PairSet]:
    return {k: PairSet.from_ids(df["user_id"], df["item_id"], df["history"], df["label"], text=text,
                                user_factors=U, item_factors=V, factor_dim=d, use_history=use_history,
                                stats={n: df[column(n)] for n in signals if n in STATISTICS})
            for k, df in frames.items()}


def als_scores(df: pd.DataFrame, U: Mapping, V: Mapping, fallback: float) -> list:
    """u . v, or the fit's target mean where a factor is missing."""
    return [float(U[u] @ V[i]) if (u in U and i in V) else fallback for u, i in zip(df.user_id, df.item_id)]


def results_table(test_df: pd.DataFrame, title: str) -> tuple[dict, list[str]]:
    """({ranker: auc_uauc}, markdown lines) for the rankers present among RANKERS."""
    results = {m: auc_uauc(test_df, m) for m in RANKERS if m in test_df}
    lines = [f"# {title}", "",
             "| model | AUC all | AUC warm | AUC cold | AUC cold_item | UAUC all | UAUC warm | UAUC cold |",
             "|---|---|---|---|---|---|---|---|"]
    f = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    for m, r in results.items():
        lines.append(f"| {m} | {f(r['all']['auc'])} | {f(r['warm']['auc'])} | {f(r['cold']['auc'])} | "
                     f"{f(r['cold_item']['auc'])} | {f(r['all']['uauc'])} | {f(r['warm']['uauc'])} | "
                     f"{f(r['cold']['uauc'])} |")
    return results, lines


# ------------------------------------------------------------------ frames carried to the GPU machine (.npz)
def save_npz(path: Path, frames: Mapping[str, pd.DataFrame], text: Mapping, U: Mapping, V: Mapping,
             meta: dict) -> None:
    """Plain arrays only (no pickle, no parquet: the GPU machine may lack pyarrow); histories as flat ids +
    offsets."""
    arrays: dict = {"meta": np.array(json.dumps(meta))}
    for k, df in frames.items():
        hist = [list(h) if h is not None else [] for h in df["history"]]
        arrays[f"{k}.hist_ids"] = np.array([i for h in hist for i in h], dtype=str)
        arrays[f"{k}.hist_off"] = np.cumsum([0] + [len(h) for h in hist]).astype(np.int64)
        for c in df.columns:
            if c != "history":
                col = df[c].to_numpy()
                arrays[f"{k}.{c}"] = col.astype(str) if col.dtype == object else col
    for name, m in (("text", text), ("U", U), ("V", V)):
        ids = sorted(m)
        arrays[f"map_{name}.ids"] = np.array(ids, dtype=str)
        arrays[f"map_{name}.values"] = np.array([m[i] for i in ids], dtype=str if name == "text" else np.float32)
    np.savez_compressed(path, **arrays)


def load_npz(path: Path) -> tuple[dict, dict, dict, dict, dict]:
    """(frames, text, U, V, meta) as save_npz got them."""
    z = np.load(path, allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    frames = {}
    for k in meta["splits"]:
        cols = {n.split(".", 1)[1]: z[n] for n in z.files if n.startswith(k + ".") and ".hist_" not in n}
        ids, off = z[f"{k}.hist_ids"].tolist(), z[f"{k}.hist_off"]
        cols["history"] = [ids[off[r]:off[r + 1]] for r in range(len(off) - 1)]
        frames[k] = pd.DataFrame(cols)
    maps = {}
    for name in ("text", "U", "V"):
        vals = z[f"map_{name}.values"]
        maps[name] = dict(zip(z[f"map_{name}.ids"].tolist(), vals.tolist() if name == "text" else vals))
    return frames, maps["text"], maps["U"], maps["V"], meta
