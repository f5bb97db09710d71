"""Stage 6, candidates: for each user of the day's audience, ALS's top-K unseen items, the recently popular
unseen items and the catalog's cold items.

candidates: ds DATE, user_id, item_id, source ('als' | 'popular' | 'text' | 'cold'), als_rank INT, pop_rank INT,
            als_run_id        (partitioned by ds; a rerun of a day replaces that day)

Everything is as of the day's cutoff (collm_udf/spark/asof.py): "seen" = the user's interactions before it.
- audience: the users with an interaction in the last candidates.active_within_days before the cutoff (every
  known user when unset). Each of them gets candidates, with or without ALS factors.
- als: ALSModel.recommendForAllUsers of the day's ALS fit (asof: the newest fit not after the cutoff), restricted
  to items with >= min_item_interactions known interactions, asked for K plus enough extra items to cover the
  seen ones it drops (capped by candidates.seen_buffer). Users the fit does not know get none.
- popular: the popular_k most interacted items of the last recent_days that the user has not seen (ties: all
  known interactions). It is what fills a user without factors, and what a user's list falls back to.
- text: the text_k items the user has not seen, among those ALS leaves out (fewer than min_item_interactions known
  interactions, never-seen ones included), whose texts are nearest to the user's history, the lately
  interacted ones first as far as text_recency says (collm_udf/spark/text_neighbours.py). Users without a
  positive history get none.
- cold: catalog items without any known interaction (text-only for a scorer), up to max_cold_items, by id.
A pair offered by several sources is kept once, named after the first of als, popular, text, cold, with both ranks.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.context import StageContext
from collm_udf.spark.stages import als, idmap
from collm_udf.spark.asof import AsOf, popular_unseen, popularity_order, recent_counts, served_users
from collm_udf.spark.tables import Tables
from collm_udf.spark.text_neighbours import text_candidates

SOURCES = ("als", "popular", "text", "cold")


def cold_items(cfg: Config, tables: Tables, known: DataFrame) -> DataFrame:
    cold = tables.read("items").select("item_id").join(known.select("item_id").distinct(), "item_id", "left_anti")
    return cold.orderBy("item_id").limit(cfg.candidates.max_cold_items)


def rare_items(cfg: Config, tables: Tables, known: DataFrame, asof: AsOf) -> DataFrame:
    """item_id, _recent: the catalog's items with fewer than min_item_interactions known interactions (none
    included), with their interactions in the last recent_days (0 for none)."""
    warm = known.groupBy("item_id").count().where(F.col("count") >= cfg.candidates.min_item_interactions)
    rare = tables.read("items").select("item_id").join(warm.select("item_id"), "item_id", "left_anti")
    return (rare.join(recent_counts(known, asof, cfg.candidates.recent_days), "item_id", "left")
            .fillna(0, ["_recent"]))


def als_candidates(cfg: Config, tables: Tables, run: dict, known: DataFrame, users: DataFrame) -> DataFrame:
    """user_id, item_id, als_rank (1..top_k): each user's first top_k items of ALS's ranking that are eligible
    (>= min_item_interactions) and unseen.

    MLlib's top-k grows costly with k (at 5M interactions: 2.6 s for k = 20, 18 s for k = 587), and a user's list
    may drop up to (the items the user has seen + the ineligible items) of it. So every user is first asked for a
    short list (2 * top_k); each ranked array is filtered in place against the user's seen and the ineligible
    items, and only users left with fewer than top_k are asked again, for the long list (top_k + the most
    interactions of a user + the ineligible items, capped by seen_buffer). Both lists are prefixes of the same
    ranking, so the result is the long list's for every user."""
    c = cfg.candidates
    item_idx = idmap.indices(tables, "item", "item")
    user_idx = idmap.indices(tables, "user", "user").join(users, "user_id")
    counts = known.groupBy("item_id").count()
    # the item indices a user may not be offered: the ones the user has seen, and the ones too rare for anyone
    rare = (counts.where(F.col("count") < c.min_item_interactions).join(item_idx, "item_id")
            .agg(F.collect_list("item_idx").alias("_rare")))
    most = (known.join(users, "user_id").groupBy("user_id").count().agg(F.max("count").alias("seen"))
            .crossJoin(rare.select(F.size("_rare").alias("rare"))).first())
    k_long = c.top_k + min((most["seen"] or 0) + most["rare"], c.seen_buffer)
    seen = (known.select("user_id", "item_id").join(users, "user_id").join(item_idx, "item_id")
            .groupBy("user_id").agg(F.collect_set("item_idx").alias("_seen")))
    exclude = (user_idx.join(seen, "user_id", "left").crossJoin(F.broadcast(rare))
               .select("user_idx", "user_id",
                       F.concat(F.coalesce("_seen", F.array().cast("array<long>")), "_rare").alias("_excluded")))

    def kept(k: int, who: DataFrame) -> DataFrame:
        """user_id, _kept: the user's first (up to top_k) allowed items of ALS's top k, best first."""
        recs = als.load_model(run).recommendForUserSubset(who.select("user_idx"), k)
        ranked = F.col("recommendations.item_idx").cast("array<long>")
        # array_except keeps its first array's order (Spark iterates it); tests check the ranks against scores
        return recs.join(who, "user_idx").select(
            "user_id", F.slice(F.array_except(ranked, "_excluded"), 1, c.top_k).alias("_kept"))

    k_short = min(2 * c.top_k, k_long)
    lists = kept(k_short, exclude)
    if k_short < k_long:
        done = F.size("_kept") >= c.top_k
        lists = lists.where(done).unionByName(kept(k_long, exclude.join(lists.where(~done).select("user_id"),
                                                                          "user_id")))
    flat = lists.select("user_id", F.posexplode("_kept").alias("_pos", "item_idx"))
    return flat.join(item_idx, "item_idx").select("user_id", "item_id",
                                                  (F.col("_pos") + 1).cast("int").alias("als_rank"))


def capped_users(users: DataFrame, max_users: int, seed: int) -> DataFrame:
    """`users` (user_id), or when they are more than max_users > 0, the max_users lowest in a seeded hash of the
    user id: the same users on every run, and a user kept at a cap is kept at any larger one."""
    if max_users <= 0 or users.count() <= max_users:
        return users
    key = F.xxhash64(F.lit("collm-pool"), F.lit(seed), F.col("user_id"))
    return users.select("user_id", key.alias("_h")).orderBy("_h", "user_id").limit(max_users).select("user_id")


def build(cfg: Config, tables: Tables, asof: AsOf, run: dict, max_users: int = 0) -> DataFrame:
    """user_id, item_id, source, als_rank, pop_rank: the day's candidates (one row per pair); with max_users, for
    at most that many users of the audience (capped_users); a user's candidates are the same either way."""
    known = asof.known(tables.read("pairs"))
    users = capped_users(served_users(cfg, asof, known), max_users, cfg.model.train.seed if cfg.model else 0)
    c = cfg.candidates
    warm = als_candidates(cfg, tables, run, known, users)
    popular = popular_unseen(users, known, popularity_order(known, asof, c.recent_days), c.popular_k, c.seen_buffer)
    cold = users.crossJoin(F.broadcast(cold_items(cfg, tables, known)))
    text = (text_candidates(cfg, tables.read("items"), known, users, rare_items(cfg, tables, known, asof),
                           c.text_k)
            if c.text_k else cold.limit(0))
    tagged = (warm.select("user_id", "item_id", F.lit(0).alias("_src"), "als_rank",
                          F.lit(None).cast("int").alias("pop_rank"))
              .unionByName(popular.select("user_id", "item_id", F.lit(1).alias("_src"),
                                          F.lit(None).cast("int").alias("als_rank"), "pop_rank"))
              .unionByName(text.select("user_id", "item_id", F.lit(2).alias("_src"),
                                       F.lit(None).cast("int").alias("als_rank"),
                                       F.lit(None).cast("int").alias("pop_rank")))
              .unionByName(cold.select("user_id", "item_id", F.lit(3).alias("_src"),
                                       F.lit(None).cast("int").alias("als_rank"),
                                       F.lit(None).cast("int").alias("pop_rank"))))
    names = F.element_at(F.array(*[F.lit(s) for s in SOURCES]), F.col("_src") + 1)
    return (tagged.groupBy("user_id", "item_id")
            .agg(F.min("_src").alias("_src"), F.min("als_rank").alias("als_rank"), F.min("pop_rank").alias("pop_rank"))
            .select("user_id", "item_id", names.alias("source"), "als_rank", "pop_rank"))


def run(ctx: StageContext) -> dict:
    cfg, tables, ds = ctx.cfg, ctx.tables, ctx.ds
    asof = AsOf.of(cfg, ds)
    run_ = als.run_as_of(tables, asof)
    out = build(cfg, tables, asof, run_).select(
        F.lit(ds).cast("date").alias("ds"), "user_id", "item_id", "source", "als_rank", "pop_rank",
        F.lit(run_["als_run_id"]).alias("als_run_id"))
    tables.replace_partition(out, "candidates", "ds", ds)
    c = tables.read("candidates").where(F.col("ds") == F.lit(ds).cast("date"))
    by_source = {r["source"]: r["count"] for r in c.groupBy("source").count().collect()}
    return {"candidates": sum(by_source.values()), **{f"{s}_candidates": by_source.get(s, 0) for s in SOURCES},
            "users": c.select("user_id").distinct().count(), "als_run_id": run_["als_run_id"]}
