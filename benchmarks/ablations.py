"""make bench-ablations: what each part of CoLLM contributes, on the bench-quality setup.

Runs benchmarks/quality.py once per ablation (stage 1 is cached, so each stage-2 ablation costs only stage 2;
no_history retrains stage 1 on history-free prompts) and collects the AUC rows with the full model's into
benchmarks/results/quality-<dataset>-ablations.{json,md}. Results already on disk are reused unless --rerun.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # tag -> quality.py arguments
    "": [],
    "no-user": ["--ablate", "no_user"],
    "no-item": ["--ablate", "no_item"],
    "no-history": ["--ablate", "no_history"],
    "proj-x2": ["--projector-mult", "2"],
    "proj-x40": ["--projector-mult", "40"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--only", nargs="*", default=None, help="tags to run (default: all)")
    ap.add_argument("--rerun", action="store_true", help="run even where a result file exists")
    args = ap.parse_args()
    res = ROOT / "benchmarks" / "results"
    rows = []
    for tag, extra in RUNS.items():
        name = args.dataset + (f"-{tag}" if tag else "")
        out = res / f"quality-{name}.json"
        if (args.only is None or tag in args.only) and (args.rerun or not out.is_file()):
            cmd = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--dataset", args.dataset] + extra
            subprocess.run(cmd + (["--tag", tag] if tag else []), check=True)
        if out.is_file():
            r = json.loads(out.read_text())
            a = {s: v["auc"] for s, v in r["results"]["collm"].items()}
            rows.append({"ablation": tag or "full CoLLM", "auc": a, "uauc_all": r["results"]["collm"]["all"]["uauc"],
                         "text_only_auc": {s: v["auc"] for s, v in r["results"]["text_only"].items()},
                         "train_cf_s": r["times"].get("train_cf_s"), "total_s": r["times"]["total_s"]})
    (res / f"quality-{args.dataset}-ablations.json").write_text(json.dumps(rows, indent=2))
    f = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"# CoLLM ablations on {args.dataset} (test split; AUC of the CoLLM model)", "",
             "| ablation | AUC all | AUC warm | AUC cold | AUC cold_item | UAUC all | total s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r["auc"]
        lines.append(f"| {r['ablation']} | {f(a['all'])} | {f(a['warm'])} | {f(a['cold'])} | {f(a['cold_item'])} | "
                     f"{f(r['uauc_all'])} | {r['total_s']} |")
    (res / f"quality-{args.dataset}-ablations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
