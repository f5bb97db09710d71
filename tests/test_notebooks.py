"""notebooks/*.ipynb executed headless (nbclient) in a kernel of this interpreter, on the ML-100K slice with a
tiny random backbone and tiny training. The notebooks start their own Spark (the kernel has no `spark`), as a
local notebook does; the quickstart runs the pipeline, the evaluation notebook reads what it wrote."""
from __future__ import annotations

import base64
import json
import struct
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, slice_conf

pytestmark = pytest.mark.slow
NB_DS = "1998-04-08"  # daily mode: the slice's week after this day is the backtest
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_overrides(backbone: str) -> dict:
    """What COLLM_OVERRIDES carries: the CoLLM scorer on a tiny backbone with tiny training, small Spark."""
    return {
        "model": {"backbone": backbone, "max_tokens": 48, "candidate_max_tokens": 12,
                  "train": {"text_pairs": 128, "cf_pairs": 128, "holdout_pairs": 64, "text_epochs": 1,
                            "cf_epochs": 1}},
        "score": {"top_n": 10, "scorer": "collm", "partitions": 2, "arrow_batch_rows": 500},
        "gate": {"enabled": False},  # the newest model serves (the gate's backtest: tests/test_gate.py)
        "asof": {"mode": "daily"},
        "candidates": {"top_k": 20, "max_cold_items": 20, "min_item_interactions": 3, "active_within_days": 30,
                       "popular_k": 10},
        "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "2g"}},
    }


def kernel_manager(spec_dir: Path):
    """A kernel of this very interpreter (the venv): a `python3` kernelspec elsewhere on the machine (a user's
    ~/.local one, say) must not decide which Python runs the notebooks."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    d = spec_dir / "collm-test-python"
    d.mkdir(parents=True, exist_ok=True)
    (d / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "collm tests", "language": "python"}))
    return AsyncKernelManager(kernel_name="collm-test-python", kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(spec_dir)]))


def execute(name: str, env: dict, spec_dir: Path, out: Path):
    """Run notebooks/<name>.ipynb top to bottom (a cell error fails here); the executed copy goes to `out`."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, km=kernel_manager(spec_dir), timeout=600,
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    t = time.time()
    client.execute(env=env)
    nbformat.write(nb, out / f"{name}.ipynb")
    print(f"{name}.ipynb executed in {time.time() - t:.1f}s")
    return nb


@pytest.fixture(scope="module")
def executed(slice_dir, tiny_encoder, tmp_path_factory):
    import os

    tmp = tmp_path_factory.mktemp("notebooks")
    conf = tmp / "slice.yaml"
    # the conf's own root is replaced by COLLM_ROOT: nothing may land there
    conf.write_text(yaml.safe_dump(slice_conf(slice_dir, tmp / "not-used")))
    env = {**os.environ, "COLLM_CONF": str(conf), "COLLM_ROOT": str(tmp / "wh"), "COLLM_DS": NB_DS,
           "COLLM_OVERRIDES": json.dumps(tiny_overrides(tiny_encoder)), "PYSPARK_PYTHON": sys.executable}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    nbs = {name: execute(name, env, tmp / "kernels", tmp) for name in ("quickstart", "evaluation")}
    return nbs, tmp


def outputs(nb, kind: str | None = None) -> list:
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outs if o.get("output_type") == "error"]
    return outs if kind is None else [o["data"][kind] for o in outs if kind in o.get("data", {})]


def png_sizes(nb) -> list[tuple[int, int]]:
    sizes = []
    for data in outputs(nb, "image/png"):
        raw = base64.b64decode(data)
        assert raw[:8] == PNG_MAGIC
        sizes.append(struct.unpack(">II", raw[16:24]))
    return sizes


def stdout(nb) -> str:
    return "".join(o.get("text", "") for o in outputs(nb) if o.get("output_type") == "stream")


def test_quickstart_runs_the_pipeline_and_shows_tables_and_metrics(executed):
    nbs, tmp = executed
    nb = nbs["quickstart"]
    text = stdout(nb)
    for stage in ("ingest", "als", "train", "score", "evaluate"):
        assert f"[collm] {stage} done" in text, stage
    assert f"ds {NB_DS}" in text and str(tmp / "wh") in text
    assert not (tmp / "not-used").exists()
    html = "\n".join(outputs(nb, "text/html"))
    for table in ("interactions", "pairs", "recommendations", "metrics", "collm_models"):
        assert f"<td>{table}</td>" in html, table
    assert "lm_score" in html and "UAUC" in html and "CoLLM" in html and "ALS" in html
    assert "recent popularity" in html and "served" in html  # the baselines beside the table, same users
    assert "judged by the interactions of [1998-04-08 00:00, 1998-04-15 00:00) UTC" in text
    assert len(png_sizes(nb)) == 1 and png_sizes(nb)[0][0] > 300
    report = [o for o in outputs(nb, "text/plain") if "index.html" in o]
    assert report and Path(report[-1].strip("'\"")).is_file()


def test_evaluation_notebook_reads_the_run_and_plots(executed):
    nbs, tmp = executed
    nb = nbs["evaluation"]
    assert "[collm] ingest" not in stdout(nb)  # the day was evaluated already: nothing reran
    sizes = png_sizes(nb)
    assert len(sizes) == 3 and all(w > 300 and h > 200 for w, h in sizes)
    html = "\n".join(outputs(nb, "text/html"))
    assert "training interactions" in html and "recommendations" in html
    assert "history" in html and "lm_score" in html  # the example recommendations with history titles
    assert f"<td>{NB_DS}</td>" in html and "<td>mean</td>" in html  # the backtest across days
    written = [o for o in outputs(nb, "text/plain") if "index.html" in o]
    page = Path(written[-1].strip("'\""))
    assert page.is_file() and (page.parent / "scores.png").is_file()
