"""The day's table and the baselines a team would ship without it, ranked against the same truth.

truth:  per user, the items liked in the day's truth part (daily: [cutoff, cutoff + horizon); split: the test
        split) that the user had no interaction with before the cutoff (a table never recommends those).
served: the day's audience (asof.served_users: the users active in the last candidates.active_within_days).
rankers, each a top-k list per served user, all as of the cutoff:
  <scorer>           the day's recommendations table (what the configured scorer ranked)
  als                the day's candidates ranked by ALS (u . v; pairs without factors in recent-popularity order),
                     i.e. the table `score.scorer: als` writes (left out when ALS is the scorer)
  popularity         the most interacted items before the cutoff that the user has not seen
  recent_popularity  the same over the last candidates.recent_days
  features           the day's candidates ranked by the features-only ranker of the day's gate decision (the
                     model's signals as a logistic ranker, no language model), when the conf trains one
Recall@k and NDCG@k are MLlib RankingMetrics' (binary gains), computed per user in one pass (user_figures) and averaged
over every truth user (segment "all": a user without a
list counts zero, so coverage gaps show) and over the served truth users (segment "served"). Coverage: users with
a list over the served users ("active") and over the truth users ("truth"). Personalisation, over the users with
a list: overlap@k = the mean share of two users' top-k lists that they have in common (sum_i c_i (c_i - 1) /
(n (n - 1) k), c_i = users whose list holds item i), and top_item_share = the share of users whose list holds
the day's most listed item.
Segments (evaluate_lists with Segments): the same figures over the truth restricted to cold items (fewer than
candidates.min_item_interactions interactions before the cutoff), to warm items, and over the truth users without
ALS factors; a user with no truth in a segment is not in it. Exposure: the share of a ranker's top-k rows that are
cold items, and how many distinct cold items it lists.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from collm_udf.config import Config
from collm_udf.spark.asof import AsOf, popular_unseen, popularity_order, served_users
from collm_udf.spark.tables import Tables

BASELINES = ("als", "popularity", "recent_popularity")


@dataclass
class Backtest:
    """The frames every ranker is judged on (all cached by `prepare`; call `close` when done)."""

    truth: DataFrame  # user_id, truth array<string>
    served: DataFrame  # user_id
    known: DataFrame  # the pairs before the cutoff

    def close(self) -> None:
        for df in (self.truth, self.served, self.known):
            df.unpersist()


def prepare(cfg: Config, tables: Tables, asof: AsOf, users: Optional[Column] = None) -> Backtest:
    """The day's truth, audience and known pairs; `users`: only the users for which this is true (the gate's
    held-out users), in truth and audience alike."""
    pairs = tables.read("pairs")
    known = asof.known(pairs).select("user_id", "item_id", "ts").cache()
    seen = known.select("user_id", "item_id").distinct()
    truth = (asof.truth(pairs).where(F.col("label") == 1).select("user_id", "item_id").distinct()
             .join(seen, ["user_id", "item_id"], "left_anti")
             .groupBy("user_id").agg(F.array_sort(F.collect_set("item_id")).alias("truth")))
    served = served_users(cfg, asof, known)
    if users is not None:
        truth, served = truth.where(users), served.where(users)
    return Backtest(truth.cache(), served.cache(), known)


def baseline_lists(cfg: Config, bt: Backtest, asof: AsOf, k: int) -> dict[str, DataFrame]:
    """{popularity, recent_popularity}: user_id, item_id, rank for every served user."""
    out = {}
    for name, days in (("popularity", None), ("recent_popularity", cfg.candidates.recent_days)):
        order = popularity_order(bt.known, asof, days)
        out[name] = popular_unseen(bt.served, bt.known, order, k, cfg.candidates.seen_buffer) \
            .withColumnRenamed("pop_rank", "rank")
    return out


SEGMENTS = ("cold_item", "warm_item", "no_factors")


@dataclass
class Segments:
    """The truth's segments: each truth user's liked items restricted to the cold items (fewer than `min_items`
    interactions before the cutoff, never seen ones included) or the warm ones (users with none there are left out),
    and the truth users without ALS factors (their whole truth; left out when `factor_users` is None)."""

    counts: DataFrame  # item_id, n: the item's interactions before the cutoff
    min_items: int
    factor_users: Optional[DataFrame] = None  # user_id of every user with factors in the day's ALS fit

    @classmethod
    def of(cls, bt: Backtest, min_items: int, factor_users: Optional[DataFrame] = None) -> "Segments":
        return cls(bt.known.groupBy("item_id").agg(F.count(F.lit(1)).alias("n")), min_items, factor_users)

    def cold(self) -> Column:
        """The condition on a left join with `counts` that the item is cold."""
        return F.coalesce(F.col("n"), F.lit(0)) < self.min_items

    def truth(self, bt: Backtest) -> DataFrame:
        """segment, user_id, truth (sorted) for SEGMENTS."""
        pairs = bt.truth.select("user_id", F.explode("truth").alias("item_id")).join(self.counts, "item_id", "left")
        cold = self.cold()
        by_user = pairs.groupBy("user_id").agg(
            F.array_sort(F.collect_list(F.when(cold, F.col("item_id")))).alias("cold_item"),
            F.array_sort(F.collect_list(F.when(~cold, F.col("item_id")))).alias("warm_item"))
        out = [by_user.select(F.lit(seg).alias("segment"), "user_id", F.col(seg).alias("truth"))
               .where(F.size("truth") > 0) for seg in ("cold_item", "warm_item")]
        if self.factor_users is not None:
            out.append(bt.truth.join(self.factor_users, "user_id", "left_anti")
                       .select(F.lit("no_factors").alias("segment"), "user_id", "truth"))
        return functools.reduce(DataFrame.unionByName, out)


def evaluate_lists(bt: Backtest, lists: dict[str, DataFrame], k: int, per_user: Optional[dict] = None,
                   segments: Optional[Segments] = None) -> dict[str, dict]:
    """Per ranker: recall/ndcg over all and served truth users, coverage, and the counts behind them; with
    `segments`, also recall/ndcg over each segment's truth users (r["segments"][seg]: truth_users, truth_pairs,
    recall@k, ndcg@k) and the list's cold items (cold_item_share of its top-k rows, cold_items distinct).
    `per_user` gets each ranker's frame of segment, user_id, served, listed, ndcg, recall."""
    spark = bt.truth.sparkSession
    ranked = None
    for name, df in lists.items():
        part = df.where(F.col("rank") <= k).select(F.lit(name).alias("ranker"), "user_id", "item_id", "rank")
        ranked = part if ranked is None else ranked.unionByName(part)
    ranked = ranked.cache()
    truth = bt.truth.select(F.lit("all").alias("segment"), "user_id", "truth")
    if segments is not None:
        truth = truth.unionByName(segments.truth(bt))
    preds = (ranked.groupBy("ranker", "user_id")
             .agg(F.array_sort(F.collect_list(F.struct("rank", "item_id"))).alias("r"))
             .select("ranker", "user_id", F.col("r.item_id").alias("pred")))
    served = bt.served.select("user_id", F.lit(True).alias("served"))
    names = spark.createDataFrame([(n,) for n in lists], "ranker string")
    frame = (truth.crossJoin(names).join(preds, ["ranker", "user_id"], "left").join(served, "user_id", "left")
             .withColumn("pred", F.coalesce("pred", F.array().cast("array<string>")))
             .withColumn("served", F.coalesce("served", F.lit(False)))).cache()
    # every ranker's counts and mean figures over all and over the served truth users of every segment in one job
    # (the means of RankingEvaluator: tests/test_confidence.py checks user_figures against it)
    figures = user_figures(frame, k)
    by_seg = {(r["ranker"], r["segment"]): r.asDict() for r in figures.groupBy("ranker", "segment").agg(
        F.count(F.lit(1)).alias("truth_users"), F.count(F.when(F.col("served"), 1)).alias("served"),
        F.count(F.when(F.col("listed"), 1)).alias("with_list"), F.sum("truth_pairs").alias("truth_pairs"),
        F.avg("recall").alias("all_recall"), F.avg("ndcg").alias("all_ndcg"),
        F.avg(F.when(F.col("served"), F.col("recall"))).alias("served_recall"),
        F.avg(F.when(F.col("served"), F.col("ndcg"))).alias("served_ndcg")).collect()}
    mean = lambda r, f: None if r[f] is None else float(r[f])  # noqa: E731
    # the lists' spread (every list) and the served users with a list, in one more job
    listed = (ranked.select("ranker", "user_id").distinct().join(bt.served, "user_id")
              .groupBy("ranker").agg(F.count(F.lit(1)).alias("listed")))
    spread = (ranked.groupBy("ranker", "item_id").agg(F.count(F.lit(1)).alias("c")).groupBy("ranker")
              .agg(F.sum(F.col("c") * (F.col("c") - 1)).alias("pairs"), F.max("c").alias("top")))
    spread = {r["ranker"]: r for r in spread.join(listed, "ranker", "left").collect()}
    n_served = bt.served.count()
    exposure = {}
    if segments is not None:  # the cold items of each top-k list, in one more job
        cold = segments.cold()
        exposure = {r["ranker"]: r for r in ranked.join(segments.counts, "item_id", "left").groupBy("ranker").agg(
            F.count(F.lit(1)).alias("rows"), F.count(F.when(cold, 1)).alias("cold_rows"),
            F.countDistinct(F.when(cold, F.col("item_id"))).alias("cold_items")).collect()}
    out = {}
    for name in lists:
        got = by_seg.get((name, "all")) or {"truth_users": 0, "served": 0, "with_list": 0}
        got_spread = spread.get(name)
        n_list = (got_spread["listed"] or 0) if got_spread is not None else 0
        r = {"truth_users": got["truth_users"], "served_truth_users": got["served"],
             "truth_users_with_list": got["with_list"], "users_with_list": n_list, "served_users": n_served,
             "coverage_active": n_list / n_served if n_served else None,
             "coverage_truth": got["with_list"] / got["truth_users"] if got["truth_users"] else None}
        pairs_in_common, top = (int(got_spread["pairs"]), int(got_spread["top"])) if got_spread else (0, 0)
        r[f"overlap@{k}"] = pairs_in_common / (n_list * (n_list - 1) * k) if n_list > 1 else None
        r["top_item_share"] = top / n_list if n_list else None
        for seg, suffix, n in (("all", "", got["truth_users"]), ("served", "_served", got["served"])):
            for metric in ("recall", "ndcg"):
                r[f"{metric}@{k}{suffix}"] = mean(got, f"{seg}_{metric}") if n else None
        if segments is not None:
            r["segments"] = {}
            for seg in SEGMENTS:
                part = by_seg.get((name, seg))
                r["segments"][seg] = {"truth_users": part["truth_users"] if part else 0,
                                      "truth_pairs": int(part["truth_pairs"]) if part else 0,
                                      f"recall@{k}": mean(part, "all_recall") if part else None,
                                      f"ndcg@{k}": mean(part, "all_ndcg") if part else None}
            e = exposure.get(name) or {"rows": 0, "cold_rows": 0, "cold_items": 0}
            r["cold_item_share"] = e["cold_rows"] / e["rows"] if e["rows"] else None
            r["cold_items"] = int(e["cold_items"])
            all_pairs = int(got.get("truth_pairs") or 0)
            r["truth_cold_share"] = r["segments"]["cold_item"]["truth_pairs"] / all_pairs if all_pairs else None
        out[name] = r
    if per_user is not None:
        got = figures.drop("listed", "truth_pairs").toPandas()
        per_user.update({name: got[got["ranker"] == name].drop(columns="ranker").reset_index(drop=True)
                         for name in lists})
    frame.unpersist()
    ranked.unpersist()
    return out


def user_figures(frame: DataFrame, k: int) -> DataFrame:
    """ranker, [segment,] user_id, served, listed, truth_pairs, ndcg, recall: each truth user's NDCG@k and
    Recall@k (binary gains, as MLlib's RankingMetrics: their means over users are RankingEvaluator's figures), for
    paired comparisons of rankers over the same users (the benchmarks' bootstrap); listed: the ranker gave the user
    a list."""
    top = F.slice("pred", 1, k)
    dcg = F.aggregate(F.transform(top, lambda x, i: F.when(F.array_contains("truth", x), 1.0 / F.log2(i + 2))
                                  .otherwise(0.0)), F.lit(0.0), lambda a, x: a + x)
    idcg = F.aggregate(F.sequence(F.lit(0), F.least(F.size("truth"), F.lit(k)) - 1), F.lit(0.0),
                       lambda a, j: a + 1.0 / F.log2(j + 2))
    hits = F.size(F.filter(top, lambda x: F.array_contains("truth", x)))
    seg = ["segment"] if "segment" in frame.columns else []
    return frame.select("ranker", *seg, "user_id", "served", (F.size("pred") > 0).alias("listed"),
                        F.size("truth").alias("truth_pairs"), (dcg / idcg).alias("ndcg"),
                        (hits / F.size("truth")).cast("double").alias("recall"))


def metric_rows(name: str, r: dict, k: int) -> list[tuple]:
    """(metric, segment, value, n_pairs, n_users, k) rows of one ranker for the metrics table."""
    rows = []
    for seg, suffix, n in (("all", "", r["truth_users"]), ("served", "_served", r["served_truth_users"])):
        rows += [("recall_at_k", seg, r[f"recall@{k}{suffix}"], None, n, k),
                 ("ndcg_at_k", seg, r[f"ndcg@{k}{suffix}"], None, n, k)]
    for seg, part in (r.get("segments") or {}).items():
        rows += [("recall_at_k", seg, part[f"recall@{k}"], part["truth_pairs"], part["truth_users"], k),
                 ("ndcg_at_k", seg, part[f"ndcg@{k}"], part["truth_pairs"], part["truth_users"], k)]
    if "cold_item_share" in r:
        rows += [("cold_item_share", "served", r["cold_item_share"], None, r["users_with_list"], k),
                 ("cold_items", "served", float(r["cold_items"]), None, r["users_with_list"], k)]
    rows += [("coverage", "active", r["coverage_active"], None, r["served_users"], None),
             ("coverage", "truth", r["coverage_truth"], None, r["truth_users"], None),
             ("overlap_at_k", "served", r[f"overlap@{k}"], None, r["users_with_list"], k),
             ("top_item_share", "served", r["top_item_share"], None, r["users_with_list"], k)]
    return rows


def lift(table: dict, base: dict, k: int) -> dict:
    """{segment: {ndcg, recall, truth_users}}: the table's figure minus a baseline's (evaluate_lists results of the
    same users), over all truth users and each segment; with base = the features-only ranker, what the table adds
    to the same signals without a language model (0 on a day the gate served that ranker)."""
    def diff(a, b):
        return None if a is None or b is None else a - b

    out = {"all": {"ndcg": diff(table[f"ndcg@{k}"], base[f"ndcg@{k}"]),
                   "recall": diff(table[f"recall@{k}"], base[f"recall@{k}"]), "truth_users": table["truth_users"]}}
    for seg, part in (table.get("segments") or {}).items():
        other = base["segments"][seg]
        out[seg] = {"ndcg": diff(part[f"ndcg@{k}"], other[f"ndcg@{k}"]),
                    "recall": diff(part[f"recall@{k}"], other[f"recall@{k}"]), "truth_users": part["truth_users"]}
    return out


def lift_rows(lifted: dict, over: str, k: int) -> list[tuple]:
    """lift's figures as (metric, segment, value, n_pairs, n_users, k) rows: ndcg_lift_over_<over>, ..."""
    return [(f"{m}_lift_over_{over}", seg, r[m], None, r["truth_users"], k)
            for seg, r in lifted.items() for m in ("ndcg", "recall")]


METRICS_SCHEMA = ("run_id string, ds string, mode string, horizon_days int, als_run_id string, model_version string, "
                  "scorer string, metric string, segment string, k int, value double, n_pairs long, n_users long")


def write_metrics(tables: Tables, rows: list[tuple]) -> None:
    """Append rows (in METRICS_SCHEMA's order, ds as YYYY-MM-DD) to the metrics table."""
    df = tables.spark.createDataFrame(rows, METRICS_SCHEMA)
    df = df.withColumn("ds", F.col("ds").cast("date")).withColumn("evaluated_at", F.current_timestamp())
    tables.append(df, "metrics")
