"""A synthetic warehouse shaped like real interaction logs, for benchmarks at sizes no shared dataset has
(`make bench-scale`, issue 27). Seeded: the same arguments write the same rows.

    python benchmarks/synth.py --users 200000 --items 50000 --interactions 20000000 --out benchmarks/.work/synth-20m

writes OUT/interactions.parquet (user_id, item_id, rating 1..5, ts TIMESTAMP; written in row groups, so 20M rows
never sit in memory as one pandas frame) and OUT/items.parquet (item_id, title, topic), and OUT/meta.json (the
arguments and what was written). conf_for(out) is a collm conf dict that reads them.

The shape, and why:
- items are released over the window (a fifth are there at its start); one is never rated before its release;
- item popularity is Zipf (weight 1 / rank^zipf over a random order): a few items take most interactions;
- a share of each user's picks (`novelty`) goes to items released in the last 30 days: trends, so recent
  popularity is a real baseline;
- users arrive over the window and rate in bursts: sessions separated by exponential gaps (mean 20 days), a few
  minutes between the ratings of a session; the number of ratings per user is lognormal (a long tail);
- each item has a topic and each user prefers one or two topics; titles are words of the item's topic's own
  vocabulary plus shared words, so the text carries signal a language model can use for cold items;
- ratings come from user bias + item quality + topic affinity + noise, rounded to 1..5.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

START = np.datetime64("2020-01-01T00:00:00", "s")
DAY = 86_400
SESSION = 8  # ratings per burst
REPICKS = 8  # rounds of picking a repeated (user, item) again
WORDS = ("amber arrow autumn beacon blue bridge canyon castle cedar cinder city cloud coast comet copper coral crown "
         "crystal dawn delta desert dream dune echo ember falcon field fire forest frost garden ghost glacier gold "
         "harbor harvest hollow horizon iron island ivory jade jungle lake lantern legend light lion lotus marble "
         "meadow mirror moon mountain night north oak ocean orchid pearl pine planet prairie quartz rain raven reef "
         "river rose ruby saga sand shadow silver sky snow song spark spring star stone storm summer sun thunder "
         "tide tiger tower valley velvet violet voyage wave whisper willow wind winter wolf wonder").split()
SHARED = ("the of a return last first secret lost new little great dark".split())


def items(rng: np.random.Generator, n_items: int, days: int, topics: int, zipf: float):
    """release (n,) seconds after START, weight (n,) Zipf, topic (n,), quality (n,), title (n,) str."""
    release = np.where(rng.random(n_items) < 0.2, 0, rng.integers(0, days * DAY, n_items))
    weight = 1.0 / np.arange(1, n_items + 1) ** zipf
    weight = weight[rng.permutation(n_items)]
    topic = rng.integers(0, topics, n_items)
    vocab = np.array_split(rng.permutation(len(WORDS)), topics)  # each topic its own words
    titles = []
    for t in topic:
        own = [WORDS[i] for i in rng.choice(vocab[t], size=rng.integers(1, 4))]
        titles.append(" ".join(([rng.choice(SHARED)] if rng.random() < 0.4 else []) + own).title())
    return release, weight, topic, rng.normal(0, 0.6, n_items), np.array(titles, dtype=object)


def user_counts(rng: np.random.Generator, n_users: int, n_interactions: int) -> np.ndarray:
    """Ratings per user: lognormal shares of the total, at least 1 each, summing to n_interactions."""
    share = rng.lognormal(0.0, 1.2, n_users)
    extra = rng.multinomial(n_interactions - n_users, share / share.sum())
    return 1 + extra


def times(rng: np.random.Generator, counts: np.ndarray, days: int) -> tuple[np.ndarray, np.ndarray]:
    """(user index, ts seconds) of every rating: the user's arrival, then sessions of SESSION ratings a few
    minutes apart, sessions ~20 days apart (exponential gaps), clipped to the window."""
    users = np.repeat(np.arange(len(counts)), counts)
    first = np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)  # the user's first rating's index
    pos = np.arange(len(users)) - first  # the rating's index within its user
    gaps = np.where((pos % SESSION == 0) & (pos > 0), rng.exponential(20 * DAY, len(users)), 0.0)
    cum = np.cumsum(gaps)
    session_start = cum - cum[first]  # each session's offset from the user's arrival
    arrive = rng.integers(0, int(days * DAY * 0.9), len(counts))
    ts = arrive[users] + session_start + (pos % SESSION) * rng.exponential(300, len(users))
    return users, np.minimum(ts, days * DAY - 1).astype(np.int64)


def pick(rng: np.random.Generator, ts: np.ndarray, utopic: np.ndarray, release: np.ndarray, weight: np.ndarray,
         topic: np.ndarray, *, novelty: float) -> np.ndarray:
    """An item per rating: of the user's topic, released by ts, Zipf-weighted; a `novelty` share among the
    items released in the 30 days before ts (any released item when the topic has none)."""
    out = np.empty(len(ts), np.int64)
    new = rng.random(len(ts)) < novelty
    for t in range(topic.max() + 1):
        ids = np.flatnonzero(topic == t)
        ids = ids[np.argsort(release[ids], kind="stable")]
        rel, cum = release[ids], np.cumsum(weight[ids])
        rows = np.flatnonzero(utopic == t)
        hi = np.searchsorted(rel, ts[rows], side="right")  # items released by then: ids[:hi]
        lo = np.where(new[rows], np.searchsorted(rel, ts[rows] - 30 * DAY, side="left"), 0)
        lo = np.where(lo >= hi, 0, lo)  # nothing new: any released item
        hi = np.maximum(hi, 1)  # a topic with nothing released yet: its first item (its release moves, below)
        base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        u = base + rng.random(len(rows)) * (cum[hi - 1] - base)
        out[rows] = ids[np.minimum(np.searchsorted(cum, u, side="left"), hi - 1)]
    return out


def _repeats(u: np.ndarray, it: np.ndarray, n_items: int) -> np.ndarray:
    """True for each rating whose (user, item) pair came earlier in the arrays."""
    key = u.astype(np.int64) * n_items + it
    seen = np.zeros(len(key), bool)
    seen[np.unique(key, return_index=True)[1]] = True
    return ~seen


def generate(out: Path, users: int, items_n: int, interactions: int, *, seed: int = 0, days: int = 730,
             topics: int = 20, zipf: float = 1.0, novelty: float = 0.3, chunk_users: int = 20_000) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    release, weight, topic, quality, titles = items(rng, items_n, days, topics, zipf)
    counts = user_counts(rng, users, interactions)
    prefs = rng.integers(0, topics, (users, 2))  # each user's two topics
    bias = rng.normal(0, 0.5, users)
    out.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("rating", pa.float64()),
                        ("ts", pa.timestamp("us"))])
    written = 0
    first_seen = np.full(items_n, np.iinfo(np.int64).max)
    with pq.ParquetWriter(out / "interactions.parquet", schema) as w:
        for lo in range(0, users, chunk_users):
            c = counts[lo:lo + chunk_users]
            u, ts = times(rng, c, days)
            u += lo
            utopic = np.where(rng.random(len(u)) < 0.75, prefs[u, 0], prefs[u, 1])
            it = pick(rng, ts, utopic, release, weight, topic, novelty=novelty)
            for r in range(REPICKS):  # one rating per (user, item): a repeat is picked again, flatter each round
                dup = _repeats(u, it, items_n)
                if not dup.any():
                    break
                t = np.where(rng.random(dup.sum()) < 0.5, utopic[dup], rng.integers(0, topics, dup.sum()))
                it[dup] = pick(rng, ts[dup], t, release, weight ** (1.0 / (2 + r)), topic, novelty=novelty)
            keep = ~_repeats(u, it, items_n)
            u, ts, it = u[keep], ts[keep], it[keep]
            affinity = np.where(topic[it] == prefs[u, 0], 0.5, 0.0)
            rating = np.clip(np.rint(3.4 + bias[u] + quality[it] + affinity + rng.normal(0, 0.8, len(u))), 1, 5)
            np.minimum.at(first_seen, it, ts)
            when = (START + ts.astype("timedelta64[s]")).astype("datetime64[us]")
            w.write_table(pa.table({"user_id": pa.array(u.astype(str)), "item_id": pa.array(it.astype(str)),
                                    "rating": rating, "ts": when}, schema=schema))
            written += len(u)
    # an item picked before its release (a topic with nothing released yet) is released at its first rating
    release = np.minimum(release, first_seen)
    pq.write_table(pa.table({"item_id": pa.array(np.arange(items_n).astype(str)), "title": pa.array(titles),
                             "topic": topic.astype(np.int32),
                             "released": (START + release.astype("timedelta64[s]")).astype("datetime64[us]")}),
                   out / "items.parquet")
    meta = {"users": users, "items": items_n, "interactions_asked": interactions, "interactions": written,
            "seed": seed, "days": days, "topics": topics, "zipf": zipf, "novelty": novelty,
            "start": str(START), "end": str(START + np.timedelta64(days * DAY, "s"))}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def conf_for(out: Path, root: Path) -> dict:
    """A collm conf (dict) reading the synthetic warehouse at `out` into tables under `root`."""
    return {"name": f"synth-{out.name}", "tables": {"root": str(root)},
            "interactions": {"source": {"path": str(out / "interactions.parquet"), "format": "parquet"},
                             "columns": {"user": "user_id", "item": "item_id", "timestamp": "ts", "rating": "rating"},
                             "rating_min": 1, "rating_max": 5},
            "items": {"source": {"path": str(out / "items.parquet"), "format": "parquet"},
                      "columns": {"item": "item_id", "text": ["title"]}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--interactions", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--days", type=int, default=730)
    a = ap.parse_args()
    print(json.dumps(generate(a.out, a.users, a.items, a.interactions, seed=a.seed, days=a.days)))


if __name__ == "__main__":
    main()
