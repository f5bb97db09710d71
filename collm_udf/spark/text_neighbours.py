"""The candidates' text source: each user's cold items nearest, in text, to the user's history.

Cold items are the ones ALS candidates leave out: fewer than candidates.min_item_interactions interactions before
the cutoff (never-seen catalog items included). CF cannot rank them; their text can. Per day:
1. embed: the texts of the cold items and of the audience's history items, once each, with the base backbone's
   encoder (collm_udf/core/text_embed.py) in a pandas UDF; the encoder is loaded once per Python worker
   (collm_udf/spark/scorers/model_cache.py), on the task's GPU when Spark gave it one, with the task's cores.
2. search: an exact search, distributed over users: each task holds the cold items' matrix (a broadcast, c x H
   floats) and, per user, ranks the cold items the user has not seen by cosine to the normalised mean of the
   user's history embeddings (the latest prepare.history_len positives before the cutoff, as the scorer's prompt).
   With candidates.text_recency w > 0 the rank is by the cosine standardised over the user's cold items plus
   w * log1p(the item's interactions in the last recent_days): on ML-100K's dev days (1998-03-25 + 7 days x 4)
   a cold item's recent interactions find more of the cold items users like next than their text does.
Everything is as of the cutoff: the history, the seen items and the cold set come from `known` only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from collm_udf.config import Config
from collm_udf.core.spec import ModelSpec
from collm_udf.core.text_embed import load_embed_fn, nearest, profile
from collm_udf.spark.asof import history_as_of
from collm_udf.spark.task import task_cpus, task_gpu_addresses

EMBEDDING = T.StructType([T.StructField("item_id", T.StringType()),
                          T.StructField("emb", T.ArrayType(T.FloatType()))])
NEIGHBOURS = T.StructType([T.StructField("user_id", T.StringType()), T.StructField("item_id", T.StringType()),
                           T.StructField("text_rank", T.IntegerType()), T.StructField("text_sim", T.FloatType())])


def embed_items(cfg: Config, items: DataFrame) -> DataFrame:
    """item_id, emb (unit vector): the base backbone's embedding of each item's text (the conf's model's backbone;
    the embedded default's when the conf has no model)."""
    spec = ModelSpec() if cfg.model is None else ModelSpec(backbone=cfg.model.backbone, kind=cfg.model.kind)
    device = None if cfg.score.device == "auto" else cfg.score.device
    key = ("text-encoder", spec.backbone_dir(), spec.kind)

    def fn(batches):
        import torch

        from collm_udf.core.inference import pick_device
        from collm_udf.spark.scorers import model_cache

        torch.set_num_threads(max(1, task_cpus()))
        dev = pick_device(device, task_gpu_addresses())
        embed = model_cache.get((key, str(dev)), lambda: load_embed_fn(spec, dev))
        for pdf in batches:
            if len(pdf):
                e = embed(["" if t is None else str(t) for t in pdf["text"]])
                yield pd.DataFrame({"item_id": pdf["item_id"].to_numpy(), "emb": list(e)})

    return items.select("item_id", "text").mapInPandas(fn, EMBEDDING)


def text_candidates(cfg: Config, items: DataFrame, known: DataFrame, users: DataFrame, cold: DataFrame,
                    k: int) -> DataFrame:
    """user_id, item_id, text_rank (1..k), text_sim: for each user of `users` with a positive history in `known`,
    the k cold items (item_id of `cold`) nearest in text that the user has not interacted with. `cold` has the
    items' recent interactions (_recent) when candidates.text_recency > 0; text_sim is then the ranked score."""
    spark = known.sparkSession
    hist = history_as_of(known.join(users, "user_id"), cfg.prepare.history_len)
    need = cold.select("item_id").unionByName(hist.select(F.explode("history").alias("item_id"))).distinct()
    emb = embed_items(cfg, items.join(need, "item_id")).localCheckpoint()  # embedded once, read twice
    w = cfg.candidates.text_recency
    cold_rows = emb.join(cold, "item_id").orderBy("item_id").collect()  # the broadcast side: c x H
    if not cold_rows:
        return spark.createDataFrame([], NEIGHBOURS)
    ids = np.array([r["item_id"] for r in cold_rows], dtype=object)
    mat = np.stack([np.asarray(r["emb"], np.float32) for r in cold_rows])
    prior = (w * np.log1p(np.array([r["_recent"] or 0 for r in cold_rows], np.float32))) if w > 0 else None
    bc = spark.sparkContext.broadcast((ids, mat, prior))
    hist_emb = (hist.select("user_id", F.explode("history").alias("item_id")).join(emb, "item_id")
                .groupBy("user_id").agg(F.collect_list("emb").alias("_h")))
    seen = (known.select("user_id", "item_id").join(F.broadcast(cold.select("item_id")), "item_id").distinct()
            .groupBy("user_id").agg(F.collect_list("item_id").alias("_seen")))

    def search(batches):
        ids_, mat_, prior_ = bc.value
        where = {it: i for i, it in enumerate(ids_)}
        for pdf in batches:
            rows = []
            for user, h, s in zip(pdf["user_id"], pdf["_h"], pdf["_seen"]):
                exclude = np.zeros(len(ids_), bool)
                exclude[[where[it] for it in (s if s is not None else ()) if it in where]] = True
                idx, sim = nearest(profile(np.stack(list(h))), mat_, k, exclude, prior_)
                rows += [(user, ids_[i], r + 1, float(c)) for r, (i, c) in enumerate(zip(idx, sim))]
            if rows:
                yield pd.DataFrame(rows, columns=[f.name for f in NEIGHBOURS.fields])

    return hist_emb.join(seen, "user_id", "left").mapInPandas(search, NEIGHBOURS)
