"""`make docs-images`: docs/report.png and docs/notebook.png from the demo's warehouse (conf/local.yaml,
./warehouse), so that the README's images show what `make demo` makes today.

    python docs/images.py [--conf conf/local.yaml] [--ds YYYY-MM-DD]

The day is the newest complete day of recommendations (`collm latest`) unless --ds names one. Its report is
written again from the tables (`collm report`) and its evaluation notebook executed headless (nbclient, a kernel
of this interpreter) against the same warehouse; docs/screenshot.py renders both in headless Chromium. Needs the
test extras and the demo's warehouse (the make target runs `make demo` first when there is none).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshot import notebook_html, screenshot  # noqa: E402  (docs/screenshot.py, beside this script)

REPORT_HEIGHT, NOTEBOOK_HEIGHT = 2200, 2600  # the README shows the top of each page


def collm(*args: str) -> str:
    """Run the `collm` of this interpreter's environment; its last stdout line."""
    out = subprocess.run([sys.executable, "-m", "collm_udf.cli", *args], cwd=ROOT, check=True, text=True,
                         stdout=subprocess.PIPE).stdout
    return out.strip().splitlines()[-1]


def execute_notebook(conf: str, ds: str, out: Path) -> Path:
    """notebooks/evaluation.ipynb run top to bottom on the day (a cell error fails here); the executed copy."""
    import nbformat
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "evaluation.ipynb", as_version=4)
    env = {**os.environ, "COLLM_CONF": conf, "COLLM_DS": ds, "PYSPARK_PYTHON": sys.executable}
    env.pop("COLLM_ROOT", None)
    env.pop("COLLM_OVERRIDES", None)
    spec = out / "kernels" / "collm-docs-python"  # this interpreter (the venv), whatever `python3` kernels exist
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "collm docs", "language": "python"}))
    km = KernelManager(kernel_name="collm-docs-python",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
    NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(env=env)
    path = out / "evaluation.ipynb"
    nbformat.write(nb, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", default="conf/local.yaml")
    ap.add_argument("--ds", help="the day to show (default: the newest complete day)")
    a = ap.parse_args()
    ds = a.ds or json.loads(collm("latest", "--conf", a.conf, "--json"))["ds"]
    report = Path(collm("report", "--conf", a.conf, "--ds", ds))
    screenshot(report.resolve().as_uri(), ROOT / "docs" / "report.png", 1320, REPORT_HEIGHT)
    with tempfile.TemporaryDirectory() as d:
        executed = execute_notebook(str(ROOT / a.conf), ds, Path(d))
        page = Path(d) / "notebook.html"
        page.write_text(notebook_html(executed), encoding="utf-8")
        screenshot(page.as_uri(), ROOT / "docs" / "notebook.png", 1100, NOTEBOOK_HEIGHT)
    print(f"docs/report.png and docs/notebook.png: ds {ds} of {a.conf}")


if __name__ == "__main__":
    main()
