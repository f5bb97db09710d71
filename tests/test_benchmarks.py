"""The benchmark scripts that tests can afford: the GPU scripts' paths on tiny CPU models, the carried frames."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from helpers import ROOT


def bench_module(name: str):
    """benchmarks/<name>.py imported as a module (benchmarks/ is no package; its scripts import their neighbours)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_scoring_script_packed_equals_naive_on_cpu():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_scoring.py"), "--smoke"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tiny: packed == naive" in r.stdout


def test_gpu_core_script_runs_the_production_scorer_on_cpu():
    """benchmarks/gpu_core.py waits for a GPU machine; its smoke run keeps it working meanwhile."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_core.py"), "--smoke"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert '"packed_equals_per_pair_fp32": true' in r.stdout


def test_bench_quality_conf_loads_from_the_shipped_conf(tmp_path):
    """make bench-quality overrides conf/local.yaml into the fixed split: the result must be a valid conf (the
    shipped daily-mode candidate negatives once made it fail before any training)."""
    quality = bench_module("quality")
    cfg = quality.bench_conf(quality.parse_args([]), tmp_path)
    assert cfg.asof.mode == "split" and cfg.model.train.cf_negatives == cfg.model.train.text_negatives == 0
    assert cfg.model.train.cf_pairs == 8000 and cfg.model.signals
    assert quality.bench_conf(quality.parse_args(["--lm-scale"]), tmp_path).model.lm_scale


def test_ranking_parts_lm_copy_scores_the_lm_part_and_the_skip_part_is_the_rest(tiny_encoder, tmp_path):
    """benchmarks/ranking_parts.py ranks by the LM's part (a checkpoint copy with the skip zeroed) and by the
    skip's (total - LM part): the copy must score exactly scale x LM logit, and the rest must be the skip."""
    import torch

    from collm_udf.core import checkpoint
    from collm_udf.core.inference import load_predict_fn
    from collm_udf.core.pairs import PairSet
    from collm_udf.core.training import init_skip

    from helpers import D, make

    parts = bench_module("ranking_parts")
    model, tok, pb = make(tiny_encoder, signals=["als_dot", "item_like_rate"], lm_scale=True)
    rng = np.random.default_rng(0)
    n = 64
    rate = rng.random(n)
    ps = PairSet([["A (1990)", "B (1991)"]] * n, [f"Item {i % 7}" for i in range(n)],
                 rng.normal(size=(n, D)).astype(np.float32), rng.normal(size=(n, D)).astype(np.float32),
                 np.ones(n, bool), np.ones(n, bool), (rate > 0.5).astype(np.int64), stats={"item_like_rate": rate})
    ps.encode(pb)
    init_skip(model, ps, "logistic", tok.pad_token_id)
    checkpoint.save(model, tmp_path / "m")
    copy = parts.lm_only({"path": str(tmp_path / "m"), "model_version": "v"}, tmp_path)
    args = (ps.history, ps.candidate, ps.user_f, ps.item_f, ps.user_has, ps.item_has)
    total = load_predict_fn(str(tmp_path / "m"), "cpu", bf16="off")(*args, stats=ps.stats)
    lm_part = load_predict_fn(copy["path"], "cpu", bf16="off")(*args, stats=ps.stats)
    with torch.no_grad():
        skip = model.skip(model.skip_inputs(torch.as_tensor(ps.signals(model.spec.signals)))).squeeze(-1).numpy()
    assert np.abs(skip).max() > 0.1 and float(model.lm_scale) != 1.0
    np.testing.assert_allclose(total - lm_part, skip, rtol=1e-4, atol=1e-5)


def test_gpu_train_script_ddp_with_one_process_matches_plain_training(tmp_path):
    """benchmarks/gpu_train.py's DDP check (world size 1, gloo here, nccl on the GPU machine) on a tiny model."""
    out = tmp_path / "train.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_train.py"), "--smoke", "--parts", "ddp",
                        "--out", str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ddp = json.loads(out.read_text())["ddp"]
    assert ddp["ok"] and ddp["backend"] == "gloo" and ddp["ddp_vs_plain_grad_max_rel"] < 1e-4


def test_frames_carried_to_the_gpu_machine_round_trip(tmp_path):
    """quality_core.save_npz / load_npz: plain arrays, no pickle, no parquet; histories and signals intact."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quality_core import load_npz, save_npz

    frames = {"text": pd.DataFrame({"user_id": ["1", "2"], "item_id": ["10", "11"], "label": [1, 0],
                                    "history": [["10", "12"], []], "_sig_item_count": [1.5, 0.0]}),
              "test": pd.DataFrame({"user_id": ["3"], "item_id": ["12"], "label": [1], "history": [None],
                                    "warm": [True], "cold_item": [False], "prior": [0.25]})}
    U, V = {"1": np.ones(4, np.float32)}, {"10": np.arange(4, dtype=np.float32)}
    save_npz(tmp_path / "d.npz", frames, {"10": "Heat (1995)", "12": "Fargo (1996)"}, U, V,
             {"splits": ["text", "test"], "factor_dim": 4})
    got, text, U2, V2, meta = load_npz(tmp_path / "d.npz")
    assert got["text"]["history"].tolist() == [["10", "12"], []] and got["test"]["history"].tolist() == [[]]
    assert got["text"]["_sig_item_count"].tolist() == [1.5, 0.0] and got["test"]["warm"].tolist() == [True]
    assert got["text"]["user_id"].tolist() == ["1", "2"] and got["text"]["label"].tolist() == [1, 0]
    assert text == {"10": "Heat (1995)", "12": "Fargo (1996)"} and meta["factor_dim"] == 4
    np.testing.assert_array_equal(V2["10"], V["10"])
    assert set(U2) == {"1"} and set(V2) == {"10"}


def test_committed_results_name_no_absolute_path():
    """Results travel: confs and roots are recorded relative to the project, never as one machine's paths."""
    def strings(o):
        if isinstance(o, dict):
            yield from (s for v in o.values() for s in strings(v))
        elif isinstance(o, list):
            yield from (s for v in o for s in strings(v))
        elif isinstance(o, str):
            yield o

    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert files
    absolute = {f.name: s for f in files for s in strings(json.loads(f.read_text())) if os.path.isabs(s)}
    assert absolute == {}


def test_synthetic_warehouse_is_seeded_and_shaped_like_a_log(tmp_path):
    """benchmarks/synth.py: the same seed writes the same rows; Zipf items, releases, bursts, topic titles."""
    from collm_udf.config import config_from_dict

    synth = bench_module("synth")
    meta = synth.generate(tmp_path / "a", 1500, 600, 40_000, seed=3, chunk_users=400)
    synth.generate(tmp_path / "b", 1500, 600, 40_000, seed=3, chunk_users=400)
    other = synth.generate(tmp_path / "c", 1500, 600, 40_000, seed=4, chunk_users=400)
    read = lambda d, t: pd.read_parquet(tmp_path / d / f"{t}.parquet")  # noqa: E731
    inter, items = read("a", "interactions"), read("a", "items")
    pd.testing.assert_frame_equal(inter, read("b", "interactions"))
    pd.testing.assert_frame_equal(items, read("b", "items"))
    assert not inter.equals(read("c", "interactions")) and other["interactions"] > 0
    assert meta["interactions"] == len(inter) and 0.95 * 40_000 <= len(inter) <= 40_000
    assert inter.user_id.nunique() == 1500 and not inter.duplicated(["user_id", "item_id"]).any()
    assert set(inter.rating) <= {1.0, 2.0, 3.0, 4.0, 5.0} and inter.rating.nunique() == 5
    # never rated before its release; items keep arriving through the window
    joined = inter.merge(items, on="item_id")
    assert (joined.ts >= joined.released).all()
    assert (items.released > items.released.min() + pd.Timedelta(days=365)).mean() > 0.3
    # Zipf: the top tenth of the items holds far more than a tenth of the ratings
    counts = inter.item_id.value_counts()
    assert counts.head(len(items) // 10).sum() / len(inter) > 0.2
    # bursts: most consecutive ratings of a user minutes apart, the rest days apart
    gaps = inter.sort_values(["user_id", "ts"]).groupby("user_id").ts.diff().dropna().dt.total_seconds()
    assert gaps.median() < 3600 and gaps.quantile(0.95) > 7 * 86_400
    # titles: words of the list; an item's topic shows in its words (same-topic titles share words more)
    words = set(synth.WORDS) | set(synth.SHARED)
    assert all(w.lower() in words for t in items.title for w in t.split())
    own = items.assign(w=items.title.str.lower().str.split()).explode("w")
    own = own[~own.w.isin(synth.SHARED)]
    assert (own.groupby("w").topic.nunique() == 1).mean() > 0.9
    config_from_dict(synth.conf_for(tmp_path / "a", tmp_path / "wh"))  # a conf collm accepts


def test_bench_scale_fits_each_stages_exponent_and_its_day_conf_is_valid(tmp_path):
    import pytest

    from collm_udf.config import config_from_dict

    scale = bench_module("scale")
    rows = [{"interactions": n, "wall_s": 2 * n ** 0.5, "stages": {"ingest": 3e-6 * n, "als": 1e-9 * n ** 1.5}}
            for n in (1e6, 5e6, 2e7)]
    got = scale.fit(rows)
    assert got == pytest.approx({"ingest": 1.0, "als": 1.5, "wall_s": 0.5}, abs=1e-6)  # no train row: no fit
    assert scale.fit(rows[:1]) == {}

    bench_module("synth").generate(tmp_path / "synth", 300, 80, 6000, days=120)
    conf, ds = scale.day_conf(tmp_path / "synth", lm=False)
    cfg = config_from_dict(conf)
    assert cfg.score.scorer == "features" and cfg.gate.enabled and cfg.asof.mode == "daily"
    assert cfg.interactions.source.path == str(tmp_path / "synth" / "interactions.parquet")
    meta = json.loads((tmp_path / "synth" / "meta.json").read_text())
    assert meta["start"][:10] < ds < meta["end"][:10]
    lm = config_from_dict(scale.day_conf(tmp_path / "synth", lm=True)[0])
    assert lm.score.scorer == "collm" and not lm.gate.enabled and lm.tables.root != cfg.tables.root


def test_bench_scale_hot_jobs_sums_each_executions_jobs_into_the_stage_of_their_time(tmp_path):
    scale = bench_module("scale")
    sql = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart"
    events = [{"Event": sql, "executionId": 1, "rootExecutionId": 1, "description": "collect at a.py:3"},
              {"Event": sql, "executionId": 2, "rootExecutionId": 1, "description": "inner"},
              {"Event": sql, "executionId": 3, "rootExecutionId": 3, "description": "save at x.java:0"}]
    # (job, execution, start s, seconds): jobs 0-1 in stage a (0-10 s), 2-3 in stage b (10-30 s)
    for job, eid, t, secs in ((0, 1, 0, 4), (1, 2, 5, 3), (2, 3, 12, 6), (3, None, 20, 1)):
        props = {"callSite.short": "first at b.py:9"} | ({"spark.sql.execution.id": str(eid)} if eid else {})
        events += [{"Event": "SparkListenerJobStart", "Job ID": job, "Submission Time": 1000 * (100 + t),
                    "Properties": props},
                   {"Event": "SparkListenerJobEnd", "Job ID": job, "Completion Time": 1000 * (100 + t + secs)}]
    (tmp_path / "app").write_text("\n".join(json.dumps(e) for e in events))
    got = scale.hot_jobs(tmp_path, {"a": 10, "b": 20})
    assert got == [{"stage": "a", "action": "collect at a.py:3", "jobs": 2, "job_seconds": 7.0},
                   {"stage": "b", "action": "save at x.java:0", "jobs": 1, "job_seconds": 6.0},
                   {"stage": "b", "action": "first at b.py:9", "jobs": 1, "job_seconds": 1.0}]
