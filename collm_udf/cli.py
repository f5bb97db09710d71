"""`collm`: run one pipeline stage, several, or all of them.

Examples:
  collm run --conf conf/local.yaml                     # every stage, today's ds
  collm run --conf conf/local.yaml --stage score --ds 2026-11-27
  collm run --conf conf/local.yaml --stage als --stage candidates --root /tmp/wh
  collm stages                                         # list the stages in order

The last line of stdout is the run summary as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys

from collm_udf.config import ConfigError, load_config

from collm_udf.stages import STAGES


def _add_run_args(p: argparse.ArgumentParser, stage_choice: bool) -> None:
    p.add_argument("--conf", required=True, help="YAML conf, e.g. conf/local.yaml")
    if stage_choice:
        p.add_argument("--stage", action="append", choices=STAGES,
                       help="stage to run (repeatable); default: all, in order")
    p.add_argument("--ds", help="run date YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--root", help="override tables.root (where path-based Delta tables go)")
    p.add_argument("--run-id", help="run id (default: generated)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="collm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_run_args(sub.add_parser("run", help="run stages of the pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter), True)
    sub.add_parser("stages", help="list the stages in order")
    return p


def execute(conf: str, stages, ds, root, run_id) -> int:
    overrides = {"tables": {"root": root}} if root else None
    try:
        cfg = load_config(conf, overrides)
    except ConfigError as e:
        print(f"collm: {e}", file=sys.stderr)
        return 2
    # pyspark is imported only now: `collm --help` and conf checks work without a JVM.
    from collm_udf.spark import pipeline
    from collm_udf.spark.session import get_spark

    spark = get_spark(cfg, app_name=f"collm-{cfg.name}")
    summary = pipeline.run(spark, cfg, stages=stages, ds=ds, run_id=run_id,
                           progress=lambda m: print(m, file=sys.stderr, flush=True))
    for name, t in summary.get("tables", {}).items():
        print(f"{name:16s} {t['rows']:>9d} rows  {t['location']}")
    print(json.dumps(summary, default=str, sort_keys=True), flush=True)
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "stages":
        print("\n".join(STAGES))
        return 0
    return execute(args.conf, args.stage, args.ds, args.root, args.run_id)


def stage_main(stage: str, argv=None) -> int:
    """Entry point of one jobs/<stage>.py file (spark-submit)."""
    p = argparse.ArgumentParser(prog=f"jobs/{stage}.py", description=f"collm stage '{stage}'. "
                                "Example: spark-submit jobs/%s.py --conf conf/local.yaml --ds 2026-11-27" % stage)
    _add_run_args(p, False)
    a = p.parse_args(argv)
    return execute(a.conf, [stage] if stage != "all" else None, a.ds, a.root, a.run_id)


if __name__ == "__main__":
    sys.exit(main())
